import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { Bitfield } from '../../../protocol/src/bitfield.js'
import { pieceRange } from '../../../protocol/src/piece-map.js'
import { type BlobCache, createBlobCache } from '../cache/index.js'
import type { ContentRouter } from '../routing/index.js'
import { blob, fakeSwarm } from '../transfer/testing/fake-swarm.js'
import { SwarmUnavailableError } from '../transfer/index.js'
import { createSwarmMetrics } from './metrics.js'
import { createSwarmBlobSource } from './swarm-source.js'

describe('swarm blob source', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  async function setup(minBlobBytes: number, holderIsSeed = false) {
    const root = await mkdtemp(join(tmpdir(), 'shoal-swarm-src-'))
    const cache: BlobCache = createBlobCache({}, { root, quotaBytes: 1 << 30, durable: false })
    await cache.start()
    const { bytes, map } = blob(3)
    const swarm = fakeSwarm(bytes, map)
    const holder = swarm.peer('holder', map.pieces.keys())
    let lookups = 0
    const router: ContentRouter = {
      async findPeers() {
        lookups++
        return [{ peerId: holder.id, multiaddrs: [] }]
      },
    } as unknown as ContentRouter
    const registry = new Registry()
    const source = createSwarmBlobSource(
      {
        cache,
        client: swarm.client,
        maps: { get: async () => map, seedPeerId: () => (holderIsSeed ? holder.id : undefined) },
        router,
        selfPeerId: 'self',
        metrics: createSwarmMetrics(registry, () => 0),
      },
      { minBlobBytes },
    )
    cleanups.push(async () => {
      await source.stop()
      await cache.stop()
      await rm(root, { recursive: true, force: true })
    })
    return { source, map, registry, lookups: () => lookups }
  }

  it('sends a blob below minBlobBytes to the seed or upstream without asking the swarm', async () => {
    const { source, map, registry, lookups } = await setup(1 << 20)
    const ref = { host: 'seed', repository: 'r', digest: map.digest }
    await expect(source.open(ref, undefined)).rejects.toBeInstanceOf(SwarmUnavailableError)
    expect(lookups()).toBe(0)
    const metric = await registry.getSingleMetric('shoal_agent_swarm_small_blobs_total')!.get()
    expect(metric.values[0]?.value).toBe(1)
    // Its size is still answered from the piece map.
    expect(await source.stat(ref)).toEqual({ digest: map.digest, size: map.size })
  })

  /** A source whose only peer (the seed, or another agent) holds the whole blob. */
  async function fromOnePeer(peerIsSeed: boolean) {
    const root = await mkdtemp(join(tmpdir(), 'shoal-swarm-src-'))
    const cache: BlobCache = createBlobCache({}, { root, quotaBytes: 1 << 30, durable: false })
    await cache.start()
    const { bytes, map } = blob(3)
    const peerId = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
    const all = new Bitfield(map.pieces.length)
    for (let i = 0; i < map.pieces.length; i++) all.set(i)
    const source = createSwarmBlobSource(
      {
        cache,
        client: {
          fetchHave: async () => all,
          fetchPiece: async (_target, _digest, index) => {
            const { offset, length } = pieceRange(map, index)
            return bytes.subarray(offset, offset + length)
          },
        },
        maps: { get: async () => map, seedPeerId: () => (peerIsSeed ? peerId : undefined) },
        router: {
          findPeers: async () => [{ peerId, multiaddrs: [], ...(peerIsSeed ? { seed: true } : {}) }],
        } as unknown as ContentRouter,
        selfPeerId: 'self',
        metrics: createSwarmMetrics(new Registry(), () => 0),
      },
      {},
    )
    cleanups.push(async () => {
      await source.stop()
      await cache.stop()
      await rm(root, { recursive: true, force: true })
    })
    const opened = await source.open({ host: 'seed', repository: 'r', digest: map.digest }, undefined)
    for await (const _ of opened.stream) {
      // Read to the end: every piece fetched and stored.
    }
    return { source, map, from: opened.source }
  }

  it('names the pieces it took from the seed as first copies until it has sent each twice', async () => {
    const { source, map, from } = await fromOnePeer(true)
    expect(from).toBe('seed')
    for (let i = 0; i < map.pieces.length; i++) expect(source.isFirstCopy(map.digest, i)).toBe(true)
    source.uploaded(map.digest, 1)
    expect(source.isFirstCopy(map.digest, 1)).toBe(true)
    source.uploaded(map.digest, 1)
    expect(source.isFirstCopy(map.digest, 1)).toBe(false)
    expect(source.isFirstCopy(map.digest, 0)).toBe(true)
  })

  it('does not name pieces taken from other agents as first copies', async () => {
    const { source, map, from } = await fromOnePeer(false)
    expect(from).toBe('peer')
    for (let i = 0; i < map.pieces.length; i++) expect(source.isFirstCopy(map.digest, i)).toBe(false)
  })
})
