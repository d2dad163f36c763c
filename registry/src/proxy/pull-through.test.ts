import type { Readable } from 'node:stream'
import { Registry } from 'prom-client'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { digestOf, MEDIA_TYPES } from '../../../protocol/src/index.js'
import { createMemoryDriver, createStorageRegistry, type StorageRegistry } from '../storage/index.js'
import { createPullThroughRegistry } from './pull-through.js'
import { createFakeUpstream, type FakeUpstream } from './testing/fake-upstream.js'

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c))
  return Buffer.concat(chunks)
}

async function until(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

function deferred() {
  let resolve!: () => void
  const promise = new Promise<void>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

describe('pull-through registry', () => {
  let local: StorageRegistry
  let upstream: FakeUpstream
  let clock: number

  beforeEach(async () => {
    local = createStorageRegistry({ driver: createMemoryDriver() })
    await local.start()
    upstream = createFakeUpstream()
    clock = 1_000_000
  })
  afterEach(async () => {
    await local.stop()
  })

  const proxy = () =>
    createPullThroughRegistry(
      { local, fetch: upstream.fetch },
      { upstreams: [{ url: 'http://upstream.test', prefix: 'up' }], tagTtlMs: 60_000, now: () => clock },
    )

  it('streams a missing blob before the upstream has sent it all, caches it, and serves it when the upstream is gone', async () => {
    const img = upstream.addImage('library/app', 'v1', 'a')
    const registry = proxy()
    const gate = deferred()
    upstream.hold = gate.promise
    const reader = await registry.getBlob('up/library/app', digestOf(img.layer))
    expect(reader.info).toEqual({ digest: digestOf(img.layer), size: img.layer.byteLength })
    // The first half arrives while the upstream still holds the second.
    const first = await new Promise<Buffer>((resolve) =>
      reader.stream.once('data', (c: Buffer) => resolve(c)),
    )
    expect(first.byteLength).toBeGreaterThan(0)
    reader.stream.pause()
    gate.resolve()
    reader.stream.resume()
    const rest = await readAll(reader.stream)
    expect(Buffer.concat([first, rest]).equals(img.layer)).toBe(true)
    await until(
      async () =>
        (await local.statBlob('up/library/app', digestOf(img.layer)).catch(() => undefined)) !== undefined,
      'blob cached',
    )

    upstream.mode = 'down'
    const again = await registry.getBlob('up/library/app', digestOf(img.layer))
    expect((await readAll(again.stream)).equals(img.layer)).toBe(true)
    const part = await registry.getBlob('up/library/app', digestOf(img.layer), { start: 5, end: 9 })
    expect((await readAll(part.stream)).equals(img.layer.subarray(5, 10))).toBe(true)
    expect(upstream.count('GET /v2/library/app/blobs/')).toBe(1)
  })

  it('fetches a blob once for concurrent readers', async () => {
    const img = upstream.addImage('library/app', 'v1', 'b')
    const registry = proxy()
    const gate = deferred()
    upstream.hold = gate.promise
    const digest = digestOf(img.layer)
    const first = registry.getBlob('up/library/app', digest)
    const others = [registry.getBlob('up/library/app', digest), registry.getBlob('up/library/app', digest)]
    const firstReader = await first
    const firstBytes = readAll(firstReader.stream)
    gate.resolve()
    expect((await firstBytes).equals(img.layer)).toBe(true)
    for (const other of others) expect((await readAll((await other).stream)).equals(img.layer)).toBe(true)
    expect(upstream.count('GET /v2/library/app/blobs/')).toBe(1)
  })

  it('never caches a blob that fails verification and fails the client stream', async () => {
    const img = upstream.addImage('library/app', 'v1', 'c')
    const registry = proxy()
    upstream.corrupt = true
    const reader = await registry.getBlob('up/library/app', digestOf(img.layer))
    await expect(readAll(reader.stream)).rejects.toMatchObject({ name: 'DigestMismatchError' })
    await expect(local.statBlob('up/library/app', digestOf(img.layer))).rejects.toMatchObject({
      name: 'BlobUnknownError',
    })
    upstream.corrupt = false
    const retry = await registry.getBlob('up/library/app', digestOf(img.layer))
    expect((await readAll(retry.stream)).equals(img.layer)).toBe(true)
  })

  it('passes a range through on a miss and fills the cache in the background', async () => {
    const img = upstream.addImage('library/app', 'v1', 'd')
    const registry = proxy()
    const part = await registry.getBlob('up/library/app', digestOf(img.layer), { start: 100, end: 199 })
    expect(part.range).toEqual({ start: 100, end: 199 })
    expect(part.info.size).toBe(img.layer.byteLength)
    expect((await readAll(part.stream)).equals(img.layer.subarray(100, 200))).toBe(true)
    await until(
      async () =>
        (await local.statBlob('up/library/app', digestOf(img.layer)).catch(() => undefined)) !== undefined,
      'background fill',
    )
  })

  it('caches manifests by digest for good and tags for the TTL, then revalidates', async () => {
    const v1 = upstream.addImage('library/app', 'latest', 'e')
    const registry = proxy()
    const byTag = await registry.getManifest('up/library/app', 'latest')
    expect(Buffer.from(byTag.body).equals(v1.manifest)).toBe(true)
    expect(byTag).toMatchObject({ digest: v1.manifestDigest, mediaType: MEDIA_TYPES.ociManifest })
    expect((await registry.statManifest('up/library/app', 'latest')).digest).toBe(v1.manifestDigest)
    expect(upstream.count('HEAD /v2/library/app/manifests/')).toBe(1)
    expect((await registry.getManifest('up/library/app', v1.manifestDigest)).digest).toBe(v1.manifestDigest)
    expect(upstream.count('GET /v2/library/app/manifests/')).toBe(1)

    // Re-push the tag upstream: within the TTL the cached one is served.
    const v2 = upstream.addImage('library/app', 'latest', 'f')
    clock += 30_000
    expect((await registry.getManifest('up/library/app', 'latest')).digest).toBe(v1.manifestDigest)
    clock += 31_000
    expect((await registry.getManifest('up/library/app', 'latest')).digest).toBe(v2.manifestDigest)
    expect(upstream.count('HEAD /v2/library/app/manifests/')).toBe(2)

    // A digest stays cached even with the upstream down.
    upstream.mode = 'down'
    expect((await registry.getManifest('up/library/app', v1.manifestDigest)).digest).toBe(v1.manifestDigest)
  })

  it('serves a stale tag when the upstream is down, rate limiting or failing, and fails with nothing cached', async () => {
    const v1 = upstream.addImage('library/app', 'latest', 'g')
    const registry = proxy()
    await registry.getManifest('up/library/app', 'latest')
    for (const mode of ['down', 429, 503] as const) {
      upstream.mode = mode
      clock += 120_000
      expect((await registry.getManifest('up/library/app', 'latest')).digest).toBe(v1.manifestDigest)
    }
    upstream.mode = 'down'
    await expect(registry.getManifest('up/library/app', 'other')).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 502,
    })
    await expect(registry.getBlob('up/library/app', digestOf('nothing'))).rejects.toMatchObject({
      name: 'UpstreamError',
    })
    upstream.mode = 429
    await expect(registry.getManifest('up/library/app', 'other')).rejects.toMatchObject({
      name: 'TooManyRequestsError',
    })
    upstream.mode = 503
    await expect(registry.getManifest('up/library/app', 'other')).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 503,
    })
    upstream.mode = 'ok'
    await expect(registry.getManifest('up/library/app', 'other')).rejects.toMatchObject({
      name: 'ManifestUnknownError',
    })
    await expect(registry.getBlob('up/library/app', digestOf('nothing'))).rejects.toMatchObject({
      name: 'BlobUnknownError',
    })
    // A tag deleted upstream is gone here too once revalidated.
    clock += 120_000
    await expect(registry.getManifest('up/library/nope', 'latest')).rejects.toMatchObject({
      name: 'ManifestUnknownError',
    })
  })

  it('stores the manifest in the local store once its blobs are cached', async () => {
    const img = upstream.addImage('library/app', 'v1', 'h')
    const registry = proxy()
    await registry.getManifest('up/library/app', 'v1')
    await expect(local.getManifest('up/library/app', 'v1')).rejects.toMatchObject({
      name: 'ManifestUnknownError',
    })
    for (const blob of [img.config, img.layer]) {
      await readAll((await registry.getBlob('up/library/app', digestOf(blob))).stream)
    }
    await until(
      async () => (await local.getManifest('up/library/app', 'v1').catch(() => undefined)) !== undefined,
      'manifest stored',
    )
    expect((await local.getManifest('up/library/app', img.manifestDigest)).digest).toBe(img.manifestDigest)
  })

  it('lists tags upstream, falling back to cached tags when it is unavailable', async () => {
    upstream.addImage('library/app', 'v1', 'i')
    upstream.addImage('library/app', 'v2', 'j')
    const registry = proxy()
    expect((await registry.listTags('up/library/app', {})).items).toEqual(['v1', 'v2'])
    await expect(registry.listTags('up/library/none', {})).rejects.toMatchObject({ name: 'NameUnknownError' })
  })

  it('refuses writes to proxied repositories and allows them elsewhere', async () => {
    const registry = proxy()
    await expect(registry.startUpload('up/library/app')).rejects.toMatchObject({ name: 'UnsupportedError' })
    await expect(
      registry.putManifest('up/library/app', 'v1', MEDIA_TYPES.ociManifest, new Uint8Array()),
    ).rejects.toMatchObject({ name: 'UnsupportedError' })
    await expect(registry.deleteManifest('up/library/app', 'v1')).rejects.toMatchObject({
      name: 'UnsupportedError',
    })
    await expect(registry.mountBlob('up/library/app', digestOf('x'))).rejects.toMatchObject({
      name: 'UnsupportedError',
    })
    const data = Buffer.from('local content')
    const upload = await registry.startUpload('team/app')
    const info = await registry.completeUpload(
      'team/app',
      upload.id,
      digestOf(data),
      (async function* () {
        yield data
      })(),
    )
    expect(info).toEqual({ digest: digestOf(data), size: data.byteLength })
    expect((await readAll((await registry.getBlob('team/app', digestOf(data))).stream)).equals(data)).toBe(
      true,
    )
    await expect(registry.getBlob('team/app', digestOf('absent'))).rejects.toMatchObject({
      name: 'BlobUnknownError',
    })
    expect(upstream.calls).toEqual([])
  })

  it('counts hits, misses and upstream bytes in its metrics', async () => {
    const img = upstream.addImage('library/app', 'v1', 'k')
    const metrics = new Registry()
    const registry = createPullThroughRegistry(
      { local, fetch: upstream.fetch, metrics },
      { upstreams: [{ url: 'http://upstream.test', prefix: 'up' }] },
    )
    // A second instance on the same metrics registry must not collide.
    createPullThroughRegistry({ local, metrics }, { upstreams: [{ url: 'http://upstream.test' }] })
    await readAll((await registry.getBlob('up/library/app', digestOf(img.layer))).stream)
    await until(
      async () =>
        (await local.statBlob('up/library/app', digestOf(img.layer)).catch(() => undefined)) !== undefined,
      'blob cached',
    )
    await readAll((await registry.getBlob('up/library/app', digestOf(img.layer))).stream)
    const text = await metrics.metrics()
    expect(text).toContain('shoal_registry_proxy_requests_total{kind="blob",result="miss"} 1')
    expect(text).toContain('shoal_registry_proxy_requests_total{kind="blob",result="hit"} 1')
    expect(text).toContain(`shoal_registry_proxy_upstream_bytes_total ${img.layer.byteLength}`)
  })
})
