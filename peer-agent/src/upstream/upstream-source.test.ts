import { describe, expect, it } from 'vitest'
import { digestOf } from '../../../protocol/src/index.js'
import { blobFixture } from '../../../protocol/src/testing/fixtures.js'
import { createUpstreamResolver } from './resolver.js'
import { createUpstreamBlobSource, createUpstreamManifestSource } from './upstream-source.js'

const blob = blobFixture(1000, 3)

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const chunk of stream) parts.push(Buffer.from(chunk))
  return Buffer.concat(parts)
}

function sourcesWith(fetchFn: typeof fetch, timeoutMs?: number) {
  const resolver = createUpstreamResolver({
    seedUrl: 'http://seed.example',
    upstreams: [{ host: 'docker.io', url: 'http://hub.example' }],
    fetch: fetchFn,
  })
  const init = timeoutMs === undefined ? {} : { timeoutMs }
  return {
    blobs: createUpstreamBlobSource({ resolver }, init),
    manifests: createUpstreamManifestSource({ resolver }, init),
  }
}

describe('upstream sources', () => {
  it('cuts a range out of a whole answer from an upstream that ignores Range', async () => {
    const { blobs } = sourcesWith(
      async () => new Response(blob.bytes, { status: 200, headers: { 'content-length': String(blob.size) } }),
    )
    const ref = { host: 'docker.io', repository: 'library/x', digest: blob.digest }
    const opened = await blobs.open(ref, { start: 10, end: 19 })
    expect(opened).toMatchObject({ size: blob.size, range: { start: 10, end: 19 }, source: 'upstream' })
    expect((await readAll(opened.stream)).equals(Buffer.from(blob.bytes.subarray(10, 20)))).toBe(true)
    const seeded = await blobs.open({ ...ref, host: 'ghcr.io' }, undefined)
    expect(seeded.source).toBe('seed')
    expect(digestOf(await readAll(seeded.stream))).toBe(blob.digest)
  })

  it('gives up on an upstream that does not answer in time with a 504', async () => {
    const hang: typeof fetch = (_input, init) =>
      new Promise((_resolve, reject) => {
        init?.signal?.addEventListener('abort', () => reject(init.signal?.reason))
      })
    const { blobs, manifests } = sourcesWith(hang, 50)
    const ref = { host: 'docker.io', repository: 'library/x', digest: blob.digest }
    await expect(blobs.stat(ref)).rejects.toMatchObject({ name: 'UpstreamError', status: 504 })
    await expect(blobs.open(ref, undefined)).rejects.toMatchObject({ status: 504 })
    await expect(
      manifests.head({ host: 'docker.io', repository: 'library/x', reference: 'latest' }),
    ).rejects.toMatchObject({ status: 504 })
  })
})
