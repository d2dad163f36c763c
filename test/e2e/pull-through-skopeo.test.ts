/**
 * skopeo pulls a real image through shoal's registry (HTTP app over the pull-through
 * cache) from the real Distribution registry, then again from the cache alone.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createRegistryApp } from '../../registry/src/http/app.js'
import { createPullThroughRegistry } from '../../registry/src/proxy/index.js'
import { createFilesystemDriver, createStorageRegistry } from '../../registry/src/storage/index.js'
import { startDistribution } from '../helpers/distribution.js'
import {
  clearTestImageCache,
  getTestImage,
  inspectRaw,
  pushImage,
  readLayoutImage,
  skopeoCopy,
} from '../helpers/images.js'

describe('skopeo through the pull-through cache', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })
  // Vitest ends its workers without the 'exit' event getTestImage's own clean-up waits for.
  afterAll(() => clearTestImageCache())

  it('pulls an image from Distribution through shoal, then from the cache with Distribution stopped', async () => {
    const dist = await startDistribution()
    cleanups.push(() => dist.stop())
    const image = await getTestImage()
    const pushed = await pushImage(image, { host: `127.0.0.1:${dist.port}`, repository: 'library/hello' })

    const dir = await mkdtemp(join(tmpdir(), 'shoal-proxy-skopeo-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const local = createStorageRegistry({ driver: createFilesystemDriver({ root: join(dir, 'data') }) })
    await local.start()
    cleanups.push(() => local.stop())
    const registry = createPullThroughRegistry(
      { local },
      { upstreams: [{ url: dist.url, prefix: 'mirror' }] },
    )
    const server = http.createServer(createRegistryApp({ registry }).callback())
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections()
          server.close(() => resolve())
        }),
    )
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`

    const raw = await inspectRaw(`docker://${host}/mirror/library/hello:v1`)
    expect(raw.digest).toBe(pushed.digest)
    await skopeoCopy(`docker://${host}/mirror/library/hello:v1`, `oci:${join(dir, 'first')}:v1`)
    const first = await readLayoutImage(join(dir, 'first'), 'v1')
    expect(first.manifestDigest).toBe(pushed.digest)
    expect(first.layers.map((l) => l.digest)).toEqual(image.layers.map((l) => l.digest))

    // Once the layers are cached the manifest is stored durably, tag included.
    const deadline = Date.now() + 10_000
    while ((await local.getManifest('mirror/library/hello', 'v1').catch(() => undefined)) === undefined) {
      if (Date.now() > deadline) throw new Error('manifest was never stored locally')
      await new Promise((r) => setTimeout(r, 20))
    }

    await dist.halt()
    await skopeoCopy(`docker://${host}/mirror/library/hello:v1`, `oci:${join(dir, 'second')}:v1`)
    const second = await readLayoutImage(join(dir, 'second'), 'v1')
    expect(second.manifestDigest).toBe(pushed.digest)

    // Pushing into the mirrored namespace is refused; other repositories take pushes.
    await expect(skopeoCopy(image.ociRef, `docker://${host}/mirror/library/hello:v2`)).rejects.toThrow()
    await skopeoCopy(image.ociRef, `docker://${host}/own/hello:v1`)
    expect((await local.getManifest('own/hello', 'v1')).digest).toBe(image.manifestDigest)
  })
})
