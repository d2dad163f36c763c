/**
 * The seed registry against a real client: skopeo pushes an image built with umoci
 * (a busybox layer and a 100 MB random layer) and pulls it back, in OCI and Docker
 * schema-2 form; a hand-written multi-arch index and a Helm-chart-shaped OCI artifact
 * make the round trip too. Every blob must come back byte-identical.
 */
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Digest, digestOf, MEDIA_TYPES } from '../../protocol/src/index.js'
import { createRegistryClient } from '../../protocol/src/registry-client/index.js'
import {
  type BlobDescriptor,
  buildTestImage,
  getBlob,
  getManifest,
  inspectRaw,
  layoutBlobPath,
  pushImage,
  putManifest,
  readLayoutBlob,
  skopeoCopy,
  type TestImage,
  uploadBlob,
} from '../helpers/images.js'
import { createCleanup, createTempDir, removeTempDir, requireBinaries } from '../helpers/processes.js'
import { type ShoalService, startShoalRegistry } from '../helpers/shoal.js'

const RANDOM_LAYER_BYTES = 100 * 1024 * 1024
const HELM_CONFIG = 'application/vnd.cncf.helm.config.v1+json'
const HELM_CHART = 'application/vnd.cncf.helm.chart.content.v1.tar+gzip'

/** Asserts that a copied blob file holds exactly the source layout's bytes. */
async function expectSameBlob(sourceLayout: string, digest: Digest, copiedFile: string): Promise<void> {
  const [expected, actual] = await Promise.all([readLayoutBlob(sourceLayout, digest), readFile(copiedFile)])
  expect(digestOf(actual)).toBe(digest)
  expect(actual.length).toBe(expected.length)
  expect(actual.equals(expected)).toBe(true)
}

describe('shoal registry with skopeo', () => {
  const cleanup = createCleanup()
  let work: string
  let registry: ShoalService
  let image: TestImage

  beforeAll(async () => {
    requireBinaries(['skopeo', 'umoci', 'busybox'], { root: false })
    work = await createTempDir('shoal-e2e-skopeo-')
    cleanup.add(() => removeTempDir(work), 'remove temp dir')
    image = await buildTestImage({ dir: join(work, 'image'), randomLayerBytes: RANDOM_LAYER_BYTES })
    registry = await startShoalRegistry({ dataDir: join(work, 'registry-data'), logDir: work })
    cleanup.add(() => registry.stop(), 'stop registry')
  })

  afterAll(async () => {
    await cleanup.run()
  })

  it('round-trips an OCI image byte for byte through oci: and dir: transports', async () => {
    expect(image.layers).toHaveLength(2)
    expect(image.layers[1]!.size).toBeGreaterThan(RANDOM_LAYER_BYTES)

    const pushed = await pushImage(image, { host: registry.host, repository: 'e2e/busybox' })
    expect(pushed.digest).toBe(image.manifestDigest)
    expect(pushed.manifest.equals(image.manifest)).toBe(true)

    const served = await getManifest(registry.url, 'e2e/busybox', image.tag)
    expect(served.mediaType).toBe(MEDIA_TYPES.ociManifest)
    expect(served.digestHeader).toBe(image.manifestDigest)

    const outLayout = join(work, 'out-oci')
    await skopeoCopy(`docker://${pushed.reference}`, `oci:${outLayout}:copy`)
    const outIndex = JSON.parse(await readFile(join(outLayout, 'index.json'), 'utf8')) as {
      manifests: BlobDescriptor[]
    }
    expect(outIndex.manifests.map((m) => m.digest)).toEqual([image.manifestDigest])
    for (const blob of [image.config, ...image.layers]) {
      await expectSameBlob(image.layout, blob.digest, layoutBlobPath(outLayout, blob.digest))
    }

    const outDir = join(work, 'out-dir')
    await skopeoCopy(`docker://${pushed.reference}`, `dir:${outDir}`)
    expect((await readFile(join(outDir, 'manifest.json'))).equals(image.manifest)).toBe(true)
    for (const blob of [image.config, ...image.layers]) {
      await expectSameBlob(image.layout, blob.digest, join(outDir, blob.digest.split(':')[1]!))
    }
  })

  it('round-trips the image converted to Docker schema 2 media types', async () => {
    const pushed = await pushImage(image, { host: registry.host, repository: 'e2e/docker', format: 'v2s2' })
    const manifest = JSON.parse(pushed.manifest.toString('utf8')) as {
      mediaType: string
      config: BlobDescriptor
      layers: BlobDescriptor[]
    }
    expect(manifest.mediaType).toBe(MEDIA_TYPES.dockerManifest)
    expect(manifest.config.mediaType).toBe(MEDIA_TYPES.dockerConfig)
    expect(manifest.layers.map((l) => l.mediaType)).toEqual([
      MEDIA_TYPES.dockerLayerGzip,
      MEDIA_TYPES.dockerLayerGzip,
    ])
    expect(manifest.layers.map((l) => l.digest)).toEqual(image.layers.map((l) => l.digest))

    const served = await getManifest(registry.url, 'e2e/docker', image.tag)
    expect(served.mediaType).toBe(MEDIA_TYPES.dockerManifest)
    expect(served.digestHeader).toBe(pushed.digest)

    const outDir = join(work, 'out-v2s2')
    await skopeoCopy(`docker://${pushed.reference}`, `dir:${outDir}`)
    expect((await readFile(join(outDir, 'manifest.json'))).equals(pushed.manifest)).toBe(true)
    for (const blob of [manifest.config, ...manifest.layers]) {
      await expectSameBlob(image.layout, blob.digest, join(outDir, blob.digest.split(':')[1]!))
    }
  })

  it('serves a hand-written multi-arch index and skopeo copies every platform back', async () => {
    const repository = 'e2e/multi'
    // The amd64 image as built; an arm64 twin differing only in its config.
    const amd64 = await pushImage(image, { host: registry.host, repository })
    const config = JSON.parse(
      (await readLayoutBlob(image.layout, image.config.digest)).toString('utf8'),
    ) as Record<string, unknown>
    const armConfig = await uploadBlob(
      registry.url,
      repository,
      Buffer.from(JSON.stringify({ ...config, architecture: 'arm64', variant: 'v8' })),
      MEDIA_TYPES.ociConfig,
    )
    const armManifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociManifest,
        config: armConfig,
        layers: image.layers,
      }),
    )
    const armDigest = await putManifest(
      registry.url,
      repository,
      digestOf(armManifest),
      armManifest,
      MEDIA_TYPES.ociManifest,
    )
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociIndex,
        manifests: [
          {
            mediaType: MEDIA_TYPES.ociManifest,
            digest: amd64.digest,
            size: amd64.manifest.length,
            platform: { architecture: 'amd64', os: 'linux' },
          },
          {
            mediaType: MEDIA_TYPES.ociManifest,
            digest: armDigest,
            size: armManifest.length,
            platform: { architecture: 'arm64', os: 'linux', variant: 'v8' },
          },
        ],
      }),
    )
    const indexDigest = await putManifest(registry.url, repository, 'multi', index, MEDIA_TYPES.ociIndex)

    const served = await getManifest(registry.url, repository, 'multi')
    expect(served.mediaType).toBe(MEDIA_TYPES.ociIndex)
    expect(served.digestHeader).toBe(indexDigest)
    expect(served.bytes.equals(index)).toBe(true)
    const raw = await inspectRaw(`docker://${registry.host}/${repository}:multi`)
    expect(raw.digest).toBe(indexDigest)

    const outLayout = join(work, 'out-multi')
    await skopeoCopy(`docker://${registry.host}/${repository}:multi`, `oci:${outLayout}:multi`, { all: true })
    const outIndex = JSON.parse(await readFile(join(outLayout, 'index.json'), 'utf8')) as {
      manifests: BlobDescriptor[]
    }
    expect(outIndex.manifests.map((m) => m.digest)).toEqual([indexDigest])
    expect((await readLayoutBlob(outLayout, indexDigest)).equals(index)).toBe(true)
    expect((await readLayoutBlob(outLayout, armDigest)).equals(armManifest)).toBe(true)
    expect((await readLayoutBlob(outLayout, amd64.digest)).equals(amd64.manifest)).toBe(true)
    await expectSameBlob(image.layout, image.config.digest, layoutBlobPath(outLayout, image.config.digest))
    expect(digestOf(await readLayoutBlob(outLayout, armConfig.digest))).toBe(armConfig.digest)
    for (const layer of image.layers) {
      await expectSameBlob(image.layout, layer.digest, layoutBlobPath(outLayout, layer.digest))
    }
    // Both platform configs and the shared layers, plus three manifests, and nothing else.
    const blobs = await readdir(join(outLayout, 'blobs', 'sha256'))
    expect(blobs).toHaveLength(3 + 2 + image.layers.length)
  })

  it('round-trips a Helm-chart-shaped OCI artifact pushed with the shared registry client', async () => {
    const repository = 'e2e/charts/shoal-demo'
    const client = createRegistryClient({ url: registry.url })
    const chartConfig = Buffer.from(
      JSON.stringify({
        apiVersion: 'v2',
        name: 'shoal-demo',
        version: '0.1.0',
        description: 'e2e test chart',
      }),
    )
    // Not a real tarball: a registry must treat artifact layers as opaque bytes.
    const chartContent = Buffer.alloc(256 * 1024)
    for (let i = 0; i < chartContent.length; i++) chartContent[i] = (i * 131 + 7) % 251
    const config = { mediaType: HELM_CONFIG, ...(await client.uploadBlob(repository, chartConfig)) }
    // The layer goes up in PATCH chunks, the config in one PUT.
    const layer = {
      mediaType: HELM_CHART,
      ...(await client.uploadBlob(repository, chartContent, { chunkSize: 64 * 1024 })),
    }
    expect(config.digest).toBe(digestOf(chartConfig))
    expect(layer).toEqual({
      mediaType: HELM_CHART,
      digest: digestOf(chartContent),
      size: chartContent.length,
    })
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociManifest,
        config,
        layers: [layer],
        annotations: { 'org.opencontainers.image.title': 'shoal-demo' },
      }),
    )
    const { digest } = await client.putManifest(repository, '0.1.0', manifest, MEDIA_TYPES.ociManifest)
    expect(digest).toBe(digestOf(manifest))

    const served = await client.getManifest(repository, '0.1.0')
    expect(Buffer.from(served.body).equals(manifest)).toBe(true)
    expect(served.digest).toBe(digest)
    expect(served.mediaType).toBe(MEDIA_TYPES.ociManifest)
    const byDigest = await getManifest(registry.url, repository, digest)
    expect(byDigest.bytes.equals(manifest)).toBe(true)
    expect((await getBlob(registry.url, repository, config.digest)).equals(chartConfig)).toBe(true)
    const download = await client.getBlob(repository, layer.digest)
    const chunks: Buffer[] = []
    for await (const chunk of download.stream) chunks.push(chunk as Buffer)
    expect(Buffer.concat(chunks).equals(chartContent)).toBe(true)

    // skopeo carries artifacts between registries and dir: without looking inside.
    const outDir = join(work, 'out-chart')
    await skopeoCopy(`docker://${registry.host}/${repository}:0.1.0`, `dir:${outDir}`)
    expect((await readFile(join(outDir, 'manifest.json'))).equals(manifest)).toBe(true)
    expect((await readFile(join(outDir, layer.digest.split(':')[1]!))).equals(chartContent)).toBe(true)
    expect((await readFile(join(outDir, config.digest.split(':')[1]!))).equals(chartConfig)).toBe(true)
  })
})
