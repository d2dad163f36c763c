/**
 * The swarm under faults, each in its own small cluster (seed registry, tracker,
 * agents; 8 to 16 MB blobs of 256 KiB pieces): an agent stopped mid-transfer, a peer
 * serving corrupted pieces, the tracker stopped, the seed stopped, an agent restarted
 * mid-pull, a cache quota too small for everything; and byte ranges served mid-download.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { Digest } from '../../protocol/src/index.js'
import type { PieceSource } from '../../protocol/src/p2p/index.js'
import { MIN_PIECE_SIZE } from '../../protocol/src/piece-map.js'
import { chunked, blobFixture } from '../../protocol/src/testing/fixtures.js'
import { createTrackerClient } from '../../protocol/src/tracker-client/index.js'
import { cachePieceSource } from '../../peer-agent/src/p2p-adapter.js'
import { createAgentSwarm } from '../../peer-agent/src/swarm/index.js'
import {
  type AgentPart,
  type Cluster,
  debugAgents,
  metricValue,
  startCluster,
  waitUntil,
} from './swarm-cluster.js'

const MIB = 1024 * 1024
/** Pieces of a blob of `bytes` (every blob here is a whole number of default-size pieces). */
const pieces = (bytes: number): number => bytes / MIN_PIECE_SIZE

/** Pieces the agent's cache holds of `digest`. */
function held(agent: AgentPart, digest: Digest): number {
  const stat = agent.node.cache.stat(digest)
  return stat === undefined ? 0 : stat.complete ? stat.pieceCount : stat.piecesHeld
}

/** Pieces an agent fetched from the swarm (peers and seed). */
async function fetchedPieces(agent: AgentPart): Promise<number> {
  return metricValue(agent.metrics, 'shoal_agent_swarm_pieces_total')
}

/** A piece source whose every chunk has its first byte flipped. */
function corrupting(source: PieceSource): PieceSource {
  return {
    ...source,
    readRange(digest, start, end, options) {
      const inner = source.readRange(digest, start, end, options)
      return (async function* () {
        for await (const chunk of inner) {
          const copy = Uint8Array.from(chunk)
          copy[0] = (copy[0] ?? 0) ^ 0xff
          yield copy
        }
      })()
    },
  }
}

describe('swarm faults', () => {
  let cluster: Cluster | undefined

  afterEach(async () => {
    await cluster?.stop()
    cluster = undefined
  })

  it('lets the other agents finish when one is stopped mid-transfer', async () => {
    cluster = await startCluster({
      tracker: { originSlotsPerSwarm: 1 },
      seed: { uploadBytesPerSecond: 8 * MIB },
    })
    const blob = blobFixture(16 * MIB, 11)
    await cluster.push('team/app', blob.bytes, blob.digest)
    const agents = await Promise.all([1, 2, 3, 4].map(() => cluster!.addAgent()))
    const c = cluster
    const pulls = agents.map((agent) => c.pull(agent, 'team/app', blob.digest))
    for (const pull of pulls) pull.catch(() => {})
    // The agent furthest ahead holds the origin slot: stop it while it is mid-way.
    await waitUntil(() => agents.some((a) => held(a, blob.digest) >= 3), 'an agent holding three pieces')
    const victim = agents.reduce((a, b) => (held(a, blob.digest) >= held(b, blob.digest) ? a : b))
    expect(held(victim, blob.digest)).toBeLessThan(pieces(16 * MIB))
    await victim.stop()
    const others = agents.filter((a) => a !== victim)
    const results = await Promise.all(others.map((a) => pulls[agents.indexOf(a)]!))
    for (const result of results) expect(result).toEqual({ digest: blob.digest, size: blob.size })
    for (const agent of others) expect(await fetchedPieces(agent)).toBe(pieces(16 * MIB))
  }, 90_000)

  it('bans and reports a peer that serves corrupted pieces, and still delivers the right bytes', async () => {
    cluster = await startCluster({ tracker: { badPeerReporters: 1 } })
    const blob = blobFixture(8 * MIB, 12)
    await cluster.push('team/app', blob.bytes, blob.digest)
    const map = (await (
      await fetch(`${cluster.registry.url}/shoal/v1/piece-maps/${blob.digest}?format=json`)
    ).json()) as { map: { pieceSize: number } }
    const bad = await cluster.addAgent({}, (deps) =>
      createAgentSwarm(deps, { pieceSource: (d, maps) => corrupting(cachePieceSource(d.cache, maps)) }),
    )
    await bad.node.cache.putBlob(blob.digest, blob.size, chunked(blob.bytes), {
      layout: { size: blob.size, pieceSize: map.map.pieceSize },
    })
    const tracker = createTrackerClient({ url: cluster.tracker!.url })
    await waitUntil(async () => {
      const swarm = await tracker.swarm(blob.digest).catch(() => undefined)
      return swarm?.peers.some((p) => p.peerId === bad.swarm.peerId && p.complete) === true
    }, 'the bad peer announced as complete')

    const victim = await cluster.addAgent()
    const result = await cluster.pull(victim, 'team/app', blob.digest)
    await debugAgents([victim])
    expect(result).toEqual({ digest: blob.digest, size: blob.size })
    expect(await metricValue(victim.metrics, 'shoal_agent_swarm_bad_pieces_total')).toBeGreaterThanOrEqual(1)
    expect(victim.swarm.source.banned(blob.digest)).toEqual([bad.swarm.peerId])
    await waitUntil(async () => {
      const swarm = await tracker.swarm(blob.digest)
      return swarm.banned.includes(bad.swarm.peerId)
    }, 'the tracker to ban the bad peer')
    expect(await fetchedPieces(victim)).toBe(pieces(8 * MIB))
  }, 60_000)

  it('finishes pulls through the DHT when the tracker stops', async () => {
    cluster = await startCluster({ seed: { uploadBytesPerSecond: 4 * MIB } })
    const blob = blobFixture(8 * MIB, 13)
    await cluster.push('team/app', blob.bytes, blob.digest)
    const first = await cluster.addAgent({ uploadRateBytesPerSec: 4 * MIB })
    expect(await cluster.pull(first, 'team/app', blob.digest)).toEqual({
      digest: blob.digest,
      size: blob.size,
    })
    await waitUntil(
      () => first.swarm.router !== undefined && held(first, blob.digest) === pieces(8 * MIB),
      'first complete',
    )

    // A pull running when the tracker goes away finishes...
    const second = await cluster.addAgent()
    const running = cluster.pull(second, 'team/app', blob.digest)
    running.catch(() => {})
    await waitUntil(() => held(second, blob.digest) >= 1, 'the second agent holding a piece')
    await cluster.tracker!.stop()
    expect(await running).toEqual({ digest: blob.digest, size: blob.size })

    // ...and a pull started afterwards finds its peers in the DHT.
    const third = await cluster.addAgent()
    expect(await cluster.pull(third, 'team/app', blob.digest)).toEqual({
      digest: blob.digest,
      size: blob.size,
    })
    expect(await metricValue(third.metrics, 'shoal_agent_swarm_dht_fallbacks_total')).toBeGreaterThan(0)
    expect(await fetchedPieces(third)).toBe(pieces(8 * MIB))
  }, 90_000)

  it('serves a new agent from its peers after the seed stops', async () => {
    cluster = await startCluster()
    const blob = blobFixture(8 * MIB, 14)
    await cluster.push('team/app', blob.bytes, blob.digest)
    const a = await cluster.addAgent()
    const b = await cluster.addAgent()
    const c0 = cluster
    for (const r of await Promise.all([a, b].map((x) => c0.pull(x, 'team/app', blob.digest)))) {
      expect(r).toEqual({ digest: blob.digest, size: blob.size })
    }
    const seedPeerId = a.swarm.maps.seedPeerId()
    expect(seedPeerId).toBeDefined()
    await cluster.registry.stop()

    const late = await cluster.addAgent({ registryPeerId: seedPeerId })
    expect(await cluster.pull(late, 'team/app', blob.digest)).toEqual({
      digest: blob.digest,
      size: blob.size,
    })
    expect(await metricValue(late.metrics, 'shoal_agent_swarm_pieces_total', { source: 'peer' })).toBe(
      pieces(8 * MIB),
    )
    expect(await metricValue(late.metrics, 'shoal_agent_swarm_pieces_total', { source: 'seed' })).toBe(0)
    expect(await metricValue(late.metrics, 'shoal_agent_blob_bytes_total', { source: 'peer' })).toBe(
      blob.size,
    )
  }, 60_000)

  it('resumes a pull after an agent restart without fetching held pieces again', async () => {
    cluster = await startCluster({ seed: { uploadBytesPerSecond: 2 * MIB } })
    const blob = blobFixture(8 * MIB, 15)
    await cluster.push('team/app', blob.bytes, blob.digest)
    const agent = await cluster.addAgent()
    const pull = cluster.pull(agent, 'team/app', blob.digest)
    pull.catch(() => {})
    await waitUntil(() => held(agent, blob.digest) >= 3, 'three pieces held')
    await agent.stop()
    await expect(pull).rejects.toThrow()

    const again = await cluster.addAgent({ dataDir: agent.dataDir })
    const kept = held(again, blob.digest)
    expect(kept).toBeGreaterThanOrEqual(3)
    expect(kept).toBeLessThan(pieces(8 * MIB))
    expect(await cluster.pull(again, 'team/app', blob.digest)).toEqual({
      digest: blob.digest,
      size: blob.size,
    })
    expect(await metricValue(again.metrics, 'shoal_agent_swarm_resumed_pieces_total')).toBe(kept)
    expect(await fetchedPieces(again)).toBe(pieces(8 * MIB) - kept)
    expect(await metricValue(again.metrics, 'shoal_agent_blob_bytes_total', { source: 'cache' })).toBe(
      kept * MIN_PIECE_SIZE,
    )
  }, 60_000)

  it('serves byte ranges from the swarm before the blob is complete (containerd resumes with bytes=N-)', async () => {
    cluster = await startCluster({ seed: { uploadBytesPerSecond: 4 * MIB } })
    const blob = blobFixture(8 * MIB, 19)
    await cluster.push('team/app', blob.bytes, blob.digest)
    const agent = await cluster.addAgent()
    const start = 3 * MIB + 12_345
    const res = await fetch(`${agent.url}/v2/team/app/blobs/${blob.digest}?ns=${cluster.registry.host}`, {
      headers: { range: `bytes=${start}-` },
    })
    expect(res.status).toBe(206)
    expect(res.headers.get('content-range')).toBe(`bytes ${start}-${blob.size - 1}/${blob.size}`)
    const body = new Uint8Array(await res.arrayBuffer())
    expect(Buffer.from(body).equals(Buffer.from(blob.bytes.subarray(start)))).toBe(true)
    expect(await fetchedPieces(agent)).toBeGreaterThan(0)
  }, 60_000)

  it('evicts least recently used blobs under the disk quota without corrupting any', async () => {
    cluster = await startCluster()
    const x = blobFixture(8 * MIB, 16)
    const y = blobFixture(8 * MIB, 17)
    const z = blobFixture(16 * MIB, 18)
    await cluster.push('team/app', x.bytes, x.digest)
    await cluster.push('team/app', y.bytes, y.digest)
    await cluster.push('team/app', z.bytes, z.digest)
    const agent = await cluster.addAgent({ cacheQuotaBytes: 12 * MIB })

    const complete = (digest: Digest) =>
      waitUntil(() => agent.node.cache.has(digest), `${digest} complete in the cache`)
    expect(await cluster.pull(agent, 'team/app', x.digest)).toEqual({ digest: x.digest, size: x.size })
    await complete(x.digest)
    expect(await cluster.pull(agent, 'team/app', y.digest)).toEqual({ digest: y.digest, size: y.size })
    await complete(y.digest)
    // Both do not fit: the least recently used went.
    expect(agent.node.cache.stat(x.digest)).toBeUndefined()
    expect(await cluster.pull(agent, 'team/app', x.digest)).toEqual({ digest: x.digest, size: x.size })
    await complete(x.digest)
    expect(agent.node.cache.stat(y.digest)).toBeUndefined()
    // A blob larger than the whole quota still reaches the client (from the seed over HTTP).
    expect(await cluster.pull(agent, 'team/app', z.digest)).toEqual({ digest: z.digest, size: z.size })
    expect(agent.node.cache.usage().usedBytes).toBeLessThanOrEqual(12 * MIB)
    expect(agent.node.cache.has(x.digest)).toBe(true)
    // What stayed in the cache is intact: served again from it, byte for byte.
    expect(await cluster.pull(agent, 'team/app', x.digest)).toEqual({ digest: x.digest, size: x.size })
    expect(await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: 'cache' })).toBe(x.size)
  }, 60_000)
})
