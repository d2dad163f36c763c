import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { Registry } from 'prom-client'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { BlobUnknownError, type Digest, digestOf, UpstreamError } from '../../../protocol/src/index.js'
import { blobFixture } from '../../../protocol/src/testing/fixtures.js'
import { type BlobCache, createBlobCache } from '../cache/index.js'
import { createCachingBlobSource } from './caching-blob-source.js'
import type { BlobOrigin, BlobSource, ByteRange } from './sources.js'

/** Larger than the cache fill's buffer, so a fill can lag behind the client. */
const SIZE = 3 * 1024 * 1024 + 5

interface FakeSource extends BlobSource {
  opens: Array<ByteRange | undefined>
  streams: Readable[]
}

/**
 * A source serving `bytes` in 16 KiB chunks; after `failAfter` bytes of a stream it
 * errors, and `corrupt` flips one byte near the end.
 */
function fakeSource(
  bytes: Uint8Array,
  origin: BlobOrigin,
  behaviour: { failAfter?: number; failOpen?: boolean; corrupt?: boolean; failOnce?: boolean } = {},
): FakeSource {
  const opens: Array<ByteRange | undefined> = []
  const streams: Readable[] = []
  return {
    opens,
    streams,
    async stat(ref) {
      if (behaviour.failOpen) throw new BlobUnknownError()
      return { digest: ref.digest, size: bytes.byteLength }
    },
    async open(_ref, range) {
      opens.push(range)
      if (behaviour.failOpen) throw new BlobUnknownError('not in the swarm')
      const failAfter = behaviour.failOnce && opens.length > 1 ? undefined : behaviour.failAfter
      const start = range?.start ?? 0
      const end = range?.end ?? bytes.byteLength - 1
      const data = Buffer.from(bytes.subarray(start, end + 1))
      if (behaviour.corrupt) data[data.byteLength - 2] = (data[data.byteLength - 2] ?? 0) ^ 1
      async function* chunks(): AsyncGenerator<Buffer> {
        for (let o = 0; o < data.byteLength; o += 16 * 1024) {
          if (failAfter !== undefined && o >= failAfter) {
            throw new UpstreamError(`${origin} connection reset`, 502)
          }
          yield data.subarray(o, o + 16 * 1024)
        }
      }
      const stream = Readable.from(chunks())
      streams.push(stream)
      return { size: bytes.byteLength, stream, range: { start, end }, source: origin }
    },
  }
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const chunk of stream) parts.push(chunk as Buffer)
  return Buffer.concat(parts)
}

async function bytesBySource(metrics: Registry): Promise<Record<string, number>> {
  const metric = await metrics.getSingleMetric('shoal_agent_blob_bytes_total')?.get()
  return Object.fromEntries((metric?.values ?? []).map((v) => [String(v.labels.source), v.value]))
}

async function waitUntil(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe('createCachingBlobSource', () => {
  let dir: string
  let cache: BlobCache
  let metrics: Registry
  const blob = blobFixture(SIZE, 7)
  const ref = { host: 'docker.io', repository: 'library/x', digest: blob.digest as Digest }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-caching-source-'))
    cache = createBlobCache({}, { root: dir, quotaBytes: 10 * SIZE, durable: false })
    await cache.start()
    metrics = new Registry()
  })

  afterEach(async () => {
    await cache.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('streams from the upstream while caching, then serves the cache', async () => {
    const upstream = fakeSource(blob.bytes, 'upstream')
    const source = createCachingBlobSource({ cache, upstream, metrics })
    const first = await source.open(ref, undefined)
    expect(first.source).toBe('upstream')
    expect(first.size).toBe(SIZE)
    expect(digestOf(await readAll(first.stream))).toBe(blob.digest)
    await waitUntil(() => cache.has(blob.digest))

    const second = await source.open(ref, { start: 100, end: 199 })
    expect(second.source).toBe('cache')
    expect((await readAll(second.stream)).equals(Buffer.from(blob.bytes.subarray(100, 200)))).toBe(true)
    expect(upstream.opens).toHaveLength(1)
    expect(await source.stat(ref)).toEqual({ digest: blob.digest, size: SIZE })
    expect(await bytesBySource(metrics)).toEqual({ upstream: SIZE, cache: 100 })
  })

  it('finishes caching after the client has read everything, at the pace of the disk', async () => {
    const upstream = fakeSource(blob.bytes, 'upstream')
    // A cache slower than the client: it still holds buffered bytes when the client is done.
    async function* slowly(source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
      for await (const chunk of source) {
        await new Promise((r) => setTimeout(r, 2))
        yield chunk
      }
    }
    const slowCache: BlobCache = {
      ...cache,
      putBlob: (digest, size, source, options) => cache.putBlob(digest, size, slowly(source), options),
    }
    const source = createCachingBlobSource({ cache: slowCache, upstream, metrics })
    const opened = await source.open(ref, undefined)
    expect(digestOf(await readAll(opened.stream))).toBe(blob.digest)
    expect(cache.has(blob.digest)).toBe(false)
    await waitUntil(() => cache.has(blob.digest))
  })

  it('lets go of the upstream and of the cache fill when the client goes away', async () => {
    const upstream = fakeSource(blob.bytes, 'upstream')
    const source = createCachingBlobSource({ cache, upstream, metrics })
    const opened = await source.open(ref, undefined)
    await new Promise<void>((resolve) => opened.stream.once('data', () => resolve()))
    opened.stream.destroy()
    await waitUntil(() => upstream.streams[0]?.destroyed === true)
    await waitUntil(() => cache.usage().usedBytes === 0)
    expect(cache.has(blob.digest)).toBe(false)
  })

  it('continues from the upstream where the swarm failed, without a seam', async () => {
    const swarm = fakeSource(blob.bytes, 'peer', { failAfter: 128 * 1024 })
    const upstream = fakeSource(blob.bytes, 'upstream')
    const source = createCachingBlobSource({ cache, upstream, swarm, metrics })
    const opened = await source.open(ref, undefined)
    expect(opened.source).toBe('peer')
    const bytes = await readAll(opened.stream)
    expect(bytes.byteLength).toBe(SIZE)
    expect(digestOf(bytes)).toBe(blob.digest)
    expect(upstream.opens).toEqual([{ start: 128 * 1024, end: SIZE - 1 }])
    expect(await bytesBySource(metrics)).toEqual({ peer: 128 * 1024, upstream: SIZE - 128 * 1024 })
    // A blob stitched together from a ranged upstream read is not put in the cache by this source.
    expect(cache.has(blob.digest)).toBe(false)
  })

  it('skips a swarm that cannot open the blob and serves ranges from the upstream', async () => {
    const swarm = fakeSource(blob.bytes, 'peer', { failOpen: true })
    const upstream = fakeSource(blob.bytes, 'seed')
    const source = createCachingBlobSource({ cache, upstream, swarm, metrics })
    expect(await source.stat(ref)).toEqual({ digest: blob.digest, size: SIZE })
    const opened = await source.open(ref, { start: 1000 })
    expect(opened.range).toEqual({ start: 1000, end: SIZE - 1 })
    expect((await readAll(opened.stream)).equals(Buffer.from(blob.bytes.subarray(1000)))).toBe(true)
    expect(cache.has(blob.digest)).toBe(false)
    expect(await bytesBySource(metrics)).toEqual({ seed: SIZE - 1000 })
  })

  it('fails the stream, and caches nothing, when the upstream fails mid-stream', async () => {
    const upstream = fakeSource(blob.bytes, 'upstream', { failAfter: 64 * 1024 })
    const source = createCachingBlobSource({ cache, upstream, metrics })
    const opened = await source.open(ref, undefined)
    await expect(readAll(opened.stream)).rejects.toThrow(/connection reset/)
    expect(cache.has(blob.digest)).toBe(false)
    expect(cache.stat(blob.digest)).toBeUndefined()
  })

  it('resumes an upstream stream that dropped once, and still caches the whole blob', async () => {
    const upstream = fakeSource(blob.bytes, 'upstream', { failAfter: 96 * 1024, failOnce: true })
    const source = createCachingBlobSource({ cache, upstream, metrics })
    const bytes = await readAll((await source.open(ref, undefined)).stream)
    expect(digestOf(bytes)).toBe(blob.digest)
    expect(upstream.opens).toEqual([{ start: 0 }, { start: 96 * 1024, end: SIZE - 1 }])
    await waitUntil(() => cache.has(blob.digest))
    expect(await bytesBySource(metrics)).toEqual({ upstream: SIZE })
  })

  it('holds the last chunk of a wrong upstream blob back and fails instead', async () => {
    const upstream = fakeSource(blob.bytes, 'upstream', { corrupt: true })
    const source = createCachingBlobSource({ cache, upstream, metrics })
    const opened = await source.open(ref, undefined)
    let delivered = 0
    opened.stream.on('data', (chunk: Buffer) => {
      delivered += chunk.byteLength
    })
    await expect(
      new Promise((resolve, reject) => opened.stream.on('end', resolve).on('error', reject)),
    ).rejects.toMatchObject({
      name: 'DigestMismatchError',
    })
    expect(delivered).toBeLessThan(SIZE)
    expect(cache.has(blob.digest)).toBe(false)
  })

  it('throws the upstream error when nothing can open the blob', async () => {
    const swarm = fakeSource(blob.bytes, 'peer', { failOpen: true })
    const upstream: BlobSource = {
      stat: async () => {
        throw new UpstreamError('down', 503)
      },
      open: async () => {
        throw new UpstreamError('down', 503)
      },
    }
    const source = createCachingBlobSource({ cache, upstream, swarm })
    await expect(source.open(ref, undefined)).rejects.toMatchObject({ name: 'UpstreamError', status: 503 })
    await expect(source.stat(ref)).rejects.toMatchObject({ status: 503 })
  })
})
