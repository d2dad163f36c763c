import type { Readable } from 'node:stream'
import { Registry } from 'prom-client'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { digestOf, MEDIA_TYPES } from '../../../protocol/src/index.js'
import {
  createMemoryDriver,
  createStorageRegistry,
  type StorageDriver,
  type StorageRegistry,
} from '../storage/index.js'
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
  let driver: StorageDriver
  let local: StorageRegistry
  let upstream: FakeUpstream
  let clock: number

  beforeEach(async () => {
    driver = createMemoryDriver()
    local = createStorageRegistry({ driver })
    await local.start()
    upstream = createFakeUpstream()
    clock = 1_000_000
  })
  afterEach(async () => {
    await local.stop()
  })

  const proxy = (store: StorageRegistry = local) =>
    createPullThroughRegistry(
      { local: store, fetch: upstream.fetch },
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

  it('stores a fetched manifest in the local store at once, before any of its blobs', async () => {
    const img = upstream.addImage('library/app', 'v1', 'h')
    const registry = proxy()
    await registry.getManifest('up/library/app', 'v1')
    expect((await local.getManifest('up/library/app', 'v1')).digest).toBe(img.manifestDigest)
    expect((await local.getManifest('up/library/app', img.manifestDigest)).digest).toBe(img.manifestDigest)
    expect(await local.cachedTag('up/library/app', 'v1')).toEqual({
      digest: img.manifestDigest,
      checkedAt: clock,
    })
    await expect(local.statBlob('up/library/app', digestOf(img.layer))).rejects.toMatchObject({
      name: 'BlobUnknownError',
    })
  })

  it('serves a multi-arch index by tag and its pulled platform after a restart with the upstream down', async () => {
    const repo = 'library/multi'
    const amd64 = upstream.addImage(repo, 'amd64-only', 'm')
    const arm64 = upstream.addImage(repo, 'arm64-only', 'n')
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociIndex,
        manifests: [
          {
            mediaType: MEDIA_TYPES.ociManifest,
            digest: amd64.manifestDigest,
            size: amd64.manifest.byteLength,
            platform: { architecture: 'amd64', os: 'linux' },
          },
          {
            mediaType: MEDIA_TYPES.ociManifest,
            digest: arm64.manifestDigest,
            size: arm64.manifest.byteLength,
            platform: { architecture: 'arm64', os: 'linux' },
          },
        ],
      }),
    )
    const indexDigest = upstream.addManifest(repo, index, MEDIA_TYPES.ociIndex, 'latest')
    const other = upstream.addImage(repo, 'other', 'o')

    // Pull as a client on amd64 does: the index by tag, its platform, that platform's blobs.
    const before = proxy()
    expect((await before.getManifest(`up/${repo}`, 'latest')).digest).toBe(indexDigest)
    expect((await before.getManifest(`up/${repo}`, amd64.manifestDigest)).digest).toBe(amd64.manifestDigest)
    for (const blob of [amd64.config, amd64.layer]) {
      expect((await readAll((await before.getBlob(`up/${repo}`, digestOf(blob))).stream)).equals(blob)).toBe(
        true,
      )
    }
    // A manifest pulled by digest alone: no tag keeps it.
    await before.getManifest(`up/${repo}`, other.manifestDigest)
    await local.stop()

    upstream.mode = 'down'
    const restarted = createStorageRegistry({ driver })
    await restarted.start()
    try {
      const after = proxy(restarted)
      const calls = upstream.calls.length
      // Within the TTL the tag is fresh from the persisted record: no upstream request.
      clock += 30_000
      const byTag = await after.getManifest(`up/${repo}`, 'latest')
      expect(Buffer.from(byTag.body).equals(index)).toBe(true)
      expect(upstream.calls.length).toBe(calls)
      // Past the TTL the upstream is asked, is down, and the cached tag is served stale.
      clock += 60_000
      expect((await after.getManifest(`up/${repo}`, 'latest')).digest).toBe(indexDigest)
      expect(upstream.calls.length).toBeGreaterThan(calls)
      expect((await after.statManifest(`up/${repo}`, 'latest')).mediaType).toBe(MEDIA_TYPES.ociIndex)
      expect((await after.getManifest(`up/${repo}`, amd64.manifestDigest)).digest).toBe(amd64.manifestDigest)
      for (const blob of [amd64.config, amd64.layer]) {
        expect((await readAll((await after.getBlob(`up/${repo}`, digestOf(blob))).stream)).equals(blob)).toBe(
          true,
        )
      }
      expect((await after.listTags(`up/${repo}`, {})).items).toEqual(['latest'])

      // The platform nobody pulled fails with the upstream's status.
      await expect(after.getManifest(`up/${repo}`, arm64.manifestDigest)).rejects.toMatchObject({
        name: 'UpstreamError',
        status: 502,
      })
      const missing = after.getBlob(`up/${repo}`, digestOf(arm64.layer))
      await expect(missing).rejects.toMatchObject({ name: 'UpstreamError', status: 502 })
      await expect(missing).rejects.toThrow(/is not cached and http:\/\/upstream\.test failed/)
      upstream.mode = 503
      await expect(after.statBlob(`up/${repo}`, digestOf(arm64.config))).rejects.toMatchObject({
        name: 'UpstreamError',
        status: 503,
      })

      // GC keeps what the tagged index reaches and drops the manifest nothing tags.
      const report = await restarted.collectGarbage({ graceMs: 0 })
      expect(report).toMatchObject({ manifestsDeleted: 1, blobsDeleted: 1 })
      await expect(restarted.getManifest(`up/${repo}`, other.manifestDigest)).rejects.toMatchObject({
        name: 'ManifestUnknownError',
      })
      expect((await after.getManifest(`up/${repo}`, 'latest')).digest).toBe(indexDigest)
      expect((await after.getManifest(`up/${repo}`, amd64.manifestDigest)).digest).toBe(amd64.manifestDigest)
      for (const blob of [amd64.config, amd64.layer]) {
        expect((await readAll((await after.getBlob(`up/${repo}`, digestOf(blob))).stream)).equals(blob)).toBe(
          true,
        )
      }
    } finally {
      await restarted.stop()
    }
  })

  it('revalidates a tag whose persisted confirmation is older than the TTL after a restart', async () => {
    const v1 = upstream.addImage('library/app', 'latest', 'p')
    await proxy().getManifest('up/library/app', 'latest')
    const v2 = upstream.addImage('library/app', 'latest', 'q')
    const restarted = createStorageRegistry({ driver })
    const after = proxy(restarted)
    expect((await after.getManifest('up/library/app', 'latest')).digest).toBe(v1.manifestDigest)
    clock += 61_000
    expect((await after.getManifest('up/library/app', 'latest')).digest).toBe(v2.manifestDigest)
    expect(await restarted.cachedTag('up/library/app', 'latest')).toEqual({
      digest: v2.manifestDigest,
      checkedAt: clock,
    })
    await restarted.stop()
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
