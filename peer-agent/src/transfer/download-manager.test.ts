import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { type BlobCache, createBlobCache } from '../cache/index.js'
import { createDownloadManager, type DownloadManager } from './download-manager.js'
import { blob, fakeSwarm, PIECE } from './testing/fake-swarm.js'

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c))
  return Buffer.concat(chunks)
}

describe('download manager', () => {
  let root: string
  let cache: BlobCache
  let manager: DownloadManager | undefined

  afterEach(async () => {
    await manager?.stop()
    await cache.stop()
    await rm(root, { recursive: true, force: true })
  })

  async function setUp(swarmClient: ReturnType<typeof fakeSwarm>['client']): Promise<DownloadManager> {
    root = await mkdtemp(join(tmpdir(), 'shoal-dm-'))
    cache = createBlobCache({}, { root, quotaBytes: 1 << 30, durable: false })
    await cache.start()
    manager = createDownloadManager({ cache, client: swarmClient })
    return manager
  }

  it('runs one download for concurrent readers and streams each its range', async () => {
    const { bytes, map } = blob(12)
    const swarm = fakeSwarm(bytes, map)
    const peer = swarm.peer('p', map.pieces.keys())
    peer.delayMs = 5
    const m = await setUp(swarm.client)
    const options = { findPeers: async () => [peer], seed: 1 }
    const [whole, tail] = await Promise.all([
      m.read(map, 0, map.size, options),
      m.read(map, 5 * PIECE + 3, map.size, options),
    ])
    expect(m.active()).toEqual([map.digest])
    const fetched = m.fetch(map, options)
    expect(await readAll(whole)).toEqual(bytes)
    expect(await readAll(tail)).toEqual(bytes.subarray(5 * PIECE + 3))
    await fetched
    expect(cache.has(map.digest)).toBe(true)
    expect(peer.requests.sort((a, b) => a - b)).toEqual([...map.pieces.keys()])
    expect(m.active()).toEqual([])
    // Once complete, reads come straight from the cache.
    expect(await readAll(await m.read(map, 1, 10, options))).toEqual(bytes.subarray(1, 10))
  })

  it('fails the waiting readers with the download error', async () => {
    const { bytes, map } = blob(4)
    const swarm = fakeSwarm(bytes, map)
    const partial = swarm.peer('partial', [0, 1])
    const m = await setUp(swarm.client)
    const reader = await m.read(map, 0, map.size, {
      findPeers: async () => [partial],
      stallTimeoutMs: 300,
      haveRefreshMs: 50,
    })
    await expect(readAll(reader)).rejects.toMatchObject({ name: 'SwarmUnavailableError' })
    expect(cache.hasPiece(map.digest, 1)).toBe(true)
  })
})
