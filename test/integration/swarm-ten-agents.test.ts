/**
 * The heart of shoal in one process: a seed registry, a tracker and ten agents pull the
 * same 64 MB blob at once through their mirror endpoints. Every agent must hand its
 * client the right bytes, and the seed may send at most 1.25x the blob in total: the
 * rest travels between agents.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { choosePieceSize } from '../../protocol/src/piece-map.js'
import { blobFixture } from '../../protocol/src/testing/fixtures.js'
import { type Cluster, debugAgents, metricValue, startCluster } from './swarm-cluster.js'

const SIZE = 64 * 1024 * 1024
const AGENTS = 10

describe('swarm: ten agents, one blob', () => {
  let cluster: Cluster | undefined

  afterEach(async () => {
    await cluster?.stop()
    cluster = undefined
  })

  it('delivers the right bytes to every agent while the seed sends the blob about once', async () => {
    // One origin slot: one agent fetches from the seed at a time, the others from agents.
    cluster = await startCluster({ tracker: { originSlotsPerSwarm: 1 } })
    const blob = blobFixture(SIZE, 7)
    await cluster.push('team/big', blob.bytes, blob.digest)
    const sentBefore = await metricValue(cluster.registry.metrics, 'shoal_registry_blob_bytes_sent_total')

    const agents = await Promise.all(
      Array.from({ length: AGENTS }, () => cluster!.addAgent({ swarmStallTimeoutMs: 60_000 })),
    )
    const c = cluster
    const results = await Promise.all(agents.map((agent) => c.pull(agent, 'team/big', blob.digest)))

    await debugAgents(agents)
    for (const result of results) expect(result).toEqual({ digest: blob.digest, size: SIZE })
    const seedSent =
      (await metricValue(cluster.registry.metrics, 'shoal_registry_blob_bytes_sent_total')) - sentBefore
    expect(seedSent).toBeGreaterThan(0)
    expect(seedSent).toBeLessThanOrEqual(1.25 * SIZE)

    // Every byte a client received is counted by source: mostly from other agents.
    let fromPeers = 0
    let fromSeed = 0
    for (const agent of agents) {
      fromPeers += await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: 'peer' })
      fromSeed += await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: 'seed' })
      // Every piece came through the swarm: nothing fell back to a plain HTTP fetch.
      expect(await metricValue(agent.metrics, 'shoal_agent_swarm_pieces_total')).toBe(
        SIZE / choosePieceSize(SIZE),
      )
      expect(
        await metricValue(agent.metrics, 'shoal_agent_swarm_downloads_total', { result: 'failed' }),
      ).toBe(0)
      // Connections are counted both ways, and none closed while the cluster runs.
      const opened =
        (await metricValue(agent.metrics, 'shoal_agent_p2p_connections_opened_total', {
          direction: 'inbound',
        })) +
        (await metricValue(agent.metrics, 'shoal_agent_p2p_connections_opened_total', {
          direction: 'outbound',
        }))
      expect(opened).toBeGreaterThan(0)
      expect(await metricValue(agent.metrics, 'shoal_agent_p2p_connections_closed_total')).toBe(0)
      // Pieces and bitfields went over the piece lane (the default), none over libp2p streams.
      expect(
        await metricValue(agent.metrics, 'shoal_agent_p2p_streams_opened_total', { transport: 'lane' }),
      ).toBeGreaterThan(0)
      expect(
        await metricValue(agent.metrics, 'shoal_agent_p2p_streams_opened_total', { transport: 'libp2p' }),
      ).toBe(0)
      // What the other agents gained was pushed to it over have watches.
      expect(
        await metricValue(agent.metrics, 'shoal_agent_swarm_have_watches_total', { outcome: 'followed' }),
      ).toBeGreaterThan(0)
      expect(
        await metricValue(agent.metrics, 'shoal_agent_swarm_have_watches_total', { outcome: 'fell-back' }),
      ).toBe(0)
    }
    expect(fromPeers + fromSeed).toBe(AGENTS * SIZE)
    expect(fromPeers).toBeGreaterThan(fromSeed)
  }, 420_000)
})
