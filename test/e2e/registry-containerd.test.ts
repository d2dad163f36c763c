/**
 * The seed registry against containerd: `ctr images pull` over plain HTTP and through a
 * hosts.toml mirror entry (containerd then adds `?ns=<upstream>` to every request), then
 * `ctr run --rm` must print the image's message and the content store must hold the
 * exact layer bytes.
 */
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { digestOf } from '../../protocol/src/index.js'
import { type Containerd, startContainerd, writeHostsToml } from '../helpers/containerd.js'
import {
  buildTestImage,
  type PushedImage,
  pushImage,
  readLayoutBlob,
  type TestImage,
} from '../helpers/images.js'
import { createCleanup, createTempDir, removeTempDir, requireBinaries } from '../helpers/processes.js'
import { type ShoalService, startShoalRegistry } from '../helpers/shoal.js'

const RANDOM_LAYER_BYTES = 16 * 1024 * 1024

describe('shoal registry with containerd', () => {
  const fileCleanup = createCleanup()
  const testCleanup = createCleanup()
  let work: string
  let registry: ShoalService
  let image: TestImage
  let pushed: PushedImage
  let containerd: Containerd

  beforeAll(async () => {
    requireBinaries(['skopeo', 'umoci', 'busybox', 'containerd', 'ctr', 'runc', 'containerd-shim-runc-v2'])
    work = await createTempDir('shoal-e2e-containerd-')
    fileCleanup.add(() => removeTempDir(work), 'remove temp dir')
    image = await buildTestImage({
      dir: join(work, 'image'),
      randomLayerBytes: RANDOM_LAYER_BYTES,
      message: 'hello from shoal via containerd',
    })
    registry = await startShoalRegistry({ dataDir: join(work, 'registry-data'), logDir: work })
    fileCleanup.add(() => registry.stop(), 'stop registry')
    pushed = await pushImage(image, { host: registry.host, repository: 'e2e/busybox' })
  })

  afterAll(async () => {
    await fileCleanup.run()
  })

  // A fresh containerd per test: the content store is shared by every containerd
  // namespace, so a second pull in the same daemon would not fetch anything.
  beforeEach(async (context) => {
    const dir = join(work, `containerd-${context.task.id}`)
    containerd = await startContainerd({ dir })
    testCleanup.add(() => containerd.stop(), 'stop containerd')
  })

  afterEach(async () => {
    await testCleanup.run()
  })

  /** Asserts that containerd's content store holds exactly the layout's layer bytes. */
  async function expectLayersInContentStore(): Promise<void> {
    for (const layer of image.layers) {
      const stored = (await containerd.ctr(['content', 'get', layer.digest], { timeoutMs: 60_000 }))
        .stdoutBytes
      expect(digestOf(stored)).toBe(layer.digest)
      expect(stored.equals(await readLayoutBlob(image.layout, layer.digest))).toBe(true)
    }
  }

  it('pulls with --plain-http and runs the image', async () => {
    await containerd.pull(pushed.reference, { plainHttp: true })

    const listed = await containerd.ctr(['images', 'ls'])
    const row = listed.stdout.split('\n').find((line) => line.startsWith(`${pushed.reference} `))
    expect(row, listed.stdout).toBeDefined()
    expect(row).toContain(image.manifestDigest)
    await expectLayersInContentStore()

    const output = await containerd.run(pushed.reference)
    expect(output.trim()).toBe(image.message)
  })

  it('pulls a name of another upstream through a hosts.toml mirror entry and runs the image', async () => {
    // The upstream named in the image reference does not exist: the pull succeeds only
    // if shoal answers as the mirror.
    const upstreamHost = 'upstream.invalid'
    const hostsDir = join(containerd.dir, 'certs.d')
    await writeHostsToml({
      hostsDir,
      host: upstreamHost,
      server: 'http://127.0.0.1:9',
      mirrors: [{ url: registry.url }],
    })
    const reference = `${upstreamHost}/e2e/busybox:${image.tag}`
    await containerd.pull(reference, { hostsDir })

    const listed = await containerd.ctr(['images', 'ls'])
    expect(listed.stdout).toContain(image.manifestDigest)
    await expectLayersInContentStore()
    expect((await containerd.run(reference)).trim()).toBe(image.message)

    await containerd.removeImages([reference])
    expect(await containerd.listImages()).not.toContain(reference)
  })
})
