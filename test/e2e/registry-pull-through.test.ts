/**
 * The seed registry as a pull-through cache (`--upstream <url>`) in front of a real CNCF
 * Distribution that alone holds the images: skopeo and containerd pull through shoal and
 * get the upstream's exact bytes, an image the upstream lacks is MANIFEST_UNKNOWN, and
 * content fetched once is served by digest while the upstream is down.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { digestOf } from '../../protocol/src/index.js'
import { startContainerd } from '../helpers/containerd.js'
import { type DistributionInstance, startDistribution } from '../helpers/distribution.js'
import {
  buildTestImage,
  type PushedImage,
  pushImage,
  readLayoutBlob,
  skopeoCopy,
  type TestImage,
} from '../helpers/images.js'
import {
  createCleanup,
  createTempDir,
  removeTempDir,
  requireBinaries,
  waitFor,
} from '../helpers/processes.js'
import { type ShoalService, startShoalRegistry } from '../helpers/shoal.js'

const RANDOM_LAYER_BYTES = 16 * 1024 * 1024

describe('shoal registry as a pull-through cache of Distribution', () => {
  const cleanup = createCleanup()
  let work: string
  let upstream: DistributionInstance
  let upstreamHost: string
  let registry: ShoalService
  let image: TestImage
  let ociUpstream: PushedImage
  let dockerUpstream: PushedImage

  beforeAll(async () => {
    requireBinaries(['skopeo', 'umoci', 'busybox', 'docker-registry', 'containerd', 'ctr', 'runc'])
    work = await createTempDir('shoal-e2e-pull-through-')
    cleanup.add(() => removeTempDir(work), 'remove temp dir')
    image = await buildTestImage({
      dir: join(work, 'image'),
      randomLayerBytes: RANDOM_LAYER_BYTES,
      message: 'hello from upstream through shoal',
    })
    upstream = await startDistribution()
    cleanup.add(() => upstream.stop(), 'stop upstream Distribution')
    upstreamHost = new URL(upstream.url).host
    ociUpstream = await pushImage(image, { host: upstreamHost, repository: 'e2e/busybox' })
    dockerUpstream = await pushImage(image, { host: upstreamHost, repository: 'e2e/docker', format: 'v2s2' })
    registry = await startShoalRegistry({
      dataDir: join(work, 'registry-data'),
      logDir: work,
      extraArgs: ['--upstream', upstream.url],
    })
    cleanup.add(() => registry.stop(), 'stop registry')
  })

  afterAll(async () => {
    await cleanup.run()
  })

  it('gives skopeo the image only the upstream has, byte for byte', async () => {
    const outDir = join(work, 'out-skopeo')
    await skopeoCopy(`docker://${registry.host}/e2e/busybox:${image.tag}`, `dir:${outDir}`)
    const manifest = await readFile(join(outDir, 'manifest.json'))
    expect(digestOf(manifest)).toBe(ociUpstream.digest)
    expect(manifest.equals(ociUpstream.manifest)).toBe(true)
    for (const blob of [image.config, ...image.layers]) {
      const copied = await readFile(join(outDir, blob.digest.split(':')[1]!))
      expect(digestOf(copied)).toBe(blob.digest)
      expect(copied.equals(await readLayoutBlob(image.layout, blob.digest))).toBe(true)
    }
  })

  it('gives containerd a Docker schema 2 image only the upstream has, and it runs', async () => {
    const containerd = await startContainerd({ dir: join(work, 'containerd') })
    try {
      const reference = `${registry.host}/e2e/docker:${image.tag}`
      await containerd.pull(reference, { plainHttp: true })
      const listed = await containerd.ctr(['images', 'ls'])
      expect(listed.stdout).toContain(dockerUpstream.digest)
      for (const layer of image.layers) {
        const stored = (await containerd.ctr(['content', 'get', layer.digest], { timeoutMs: 60_000 }))
          .stdoutBytes
        expect(digestOf(stored)).toBe(layer.digest)
      }
      expect((await containerd.run(reference)).trim()).toBe(image.message)
    } finally {
      await containerd.stop()
    }
  })

  it('answers MANIFEST_UNKNOWN for a name the upstream does not have', async () => {
    const response = await fetch(`${registry.url}/v2/e2e/absent/manifests/v1`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
    })
    expect(response.status).toBe(404)
    const body = (await response.json()) as { errors?: Array<{ code: string }> }
    expect(body.errors?.map((e) => e.code)).toContain('MANIFEST_UNKNOWN')
  })

  it('serves content it fetched once by digest while the upstream is down', async () => {
    // Fetch through shoal first (this test must not depend on the others having run).
    await skopeoCopy(`docker://${registry.host}/e2e/busybox:${image.tag}`, `dir:${join(work, 'warm')}`)
    await upstream.halt()
    try {
      const outDir = join(work, 'out-offline')
      // The cache may finish committing a blob just after the client has read it.
      await waitFor(
        async () => {
          await skopeoCopy(`docker://${registry.host}/e2e/busybox@${ociUpstream.digest}`, `dir:${outDir}`, {
            timeoutMs: 60_000,
          })
          return true
        },
        { timeoutMs: 30_000, intervalMs: 500, description: 'a pull by digest with the upstream down' },
      )
      for (const blob of [image.config, ...image.layers]) {
        const copied = await readFile(join(outDir, blob.digest.split(':')[1]!))
        expect(digestOf(copied)).toBe(blob.digest)
      }
    } finally {
      await upstream.restart()
    }
  })
})
