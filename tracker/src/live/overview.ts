/**
 * The live view's data (`GET /v1/overview`): the agents as their heartbeats describe
 * them, the swarms with their peers and completion, preheat jobs, and cluster totals of
 * blob bytes by source (from the agents' heartbeats). Everything the page at `GET /`
 * and `shoal status` show.
 */
import type { PreheatJob } from '../../../protocol/src/preheat-api.js'
import type { PreheatService } from '../preheat/service.js'
import type { AgentRecord } from '../preheat/store.js'
import type { Tracker } from '../tracker.js'

/** One swarm in the overview. */
export interface OverviewSwarm {
  digest: string
  /** Non-seed peers. */
  peers: number
  complete: number
  seeds: number
  originSlotsInUse: number
  /** Mean fraction of the blob held by the non-seed peers (0..1). */
  completion: number
  /** Pieces of the blob, when a peer said. */
  pieceCount?: number
  /** Bytes of this blob the agents got from other peers, the seed and the upstream (their heartbeats). */
  bytesFromPeers: number
  bytesFromSeed: number
  bytesFromUpstream: number
}

/** The overview. */
export interface Overview {
  at: string
  agents: AgentRecord[]
  swarms: OverviewSwarm[]
  jobs: PreheatJob[]
  /** Sums of the agents' bytes by source: peer, seed, upstream, cache, uploaded. */
  totals: Record<string, number>
}

/** Builds the overview (at most `maxSwarms` swarms and `maxJobs` jobs). */
export async function buildOverview(
  components: { tracker: Tracker; preheat: PreheatService },
  init: { maxSwarms?: number; maxJobs?: number } = {},
  options: { signal?: AbortSignal } = {},
): Promise<Overview> {
  const { tracker, preheat } = components
  const [agents, list, jobs] = await Promise.all([preheat.agents(), tracker.swarms(options), preheat.list()])
  const swarms: OverviewSwarm[] = []
  for (const s of list.swarms.slice(0, init.maxSwarms ?? 50)) {
    const detail = await tracker.swarm(s.digest, options)
    const peers = detail.peers.filter((p) => p.role !== 'seed')
    let pieceCount: number | undefined
    let sum = 0
    for (const p of peers) {
      if (p.complete) sum += 1
      else if (p.pieceCount !== undefined && p.pieceCount > 0) sum += (p.piecesHeld ?? 0) / p.pieceCount
      pieceCount ??= p.pieceCount
    }
    let bytesFromPeers = 0
    let bytesFromSeed = 0
    let bytesFromUpstream = 0
    for (const a of agents) {
      const b = a.blobs?.find((x) => x.digest === s.digest)
      if (b === undefined) continue
      bytesFromPeers += b.peer
      bytesFromSeed += b.seed
      bytesFromUpstream += b.upstream
    }
    swarms.push({
      bytesFromPeers,
      bytesFromSeed,
      bytesFromUpstream,
      digest: s.digest,
      peers: peers.length,
      complete: peers.filter((p) => p.complete).length,
      seeds: detail.peers.length - peers.length,
      originSlotsInUse: s.originSlotsInUse,
      completion: peers.length === 0 ? 0 : sum / peers.length,
      ...(pieceCount === undefined ? {} : { pieceCount }),
    })
  }
  const totals: Record<string, number> = { peer: 0, seed: 0, upstream: 0, cache: 0, uploaded: 0 }
  for (const a of agents) {
    for (const [k, v] of Object.entries(a.bytesBySource ?? {})) totals[k] = (totals[k] ?? 0) + (v ?? 0)
  }
  return { at: new Date().toISOString(), agents, swarms, jobs: jobs.slice(0, init.maxJobs ?? 20), totals }
}
