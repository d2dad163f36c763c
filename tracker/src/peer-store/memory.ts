/**
 * The in-memory PeerStore: the default for one tracker process. Expired entries are
 * dropped when touched and by a periodic sweep, so memory follows the live swarms.
 */
import type { Digest } from '../../../protocol/src/index.js'
import { grantsOriginSlot } from '../hand-out.js'
import type { PeerRecord, PeerStore, PeerStoreStats, SwarmCounts } from './index.js'

interface Swarm {
  peers: Map<string, { record: PeerRecord; expiresAtMs: number }>
  origin: Map<string, number>
  reports: Map<string, Map<string, number>>
  banned: Map<string, number>
}

/** Options of createMemoryPeerStore. */
export interface MemoryPeerStoreInit {
  /** How often expired state is swept, in milliseconds. @default 30000 */
  sweepIntervalMs?: number
  /** Clock used by the sweep. @default Date.now */
  now?: () => number
}

function prune<K>(map: Map<K, number>, nowMs: number): void {
  for (const [k, until] of map) if (until <= nowMs) map.delete(k)
}

/** Creates an in-memory PeerStore. */
export function createMemoryPeerStore(init: MemoryPeerStoreInit = {}): PeerStore {
  const swarms = new Map<Digest, Swarm>()
  const now = init.now ?? Date.now
  let timer: NodeJS.Timeout | undefined

  function swarm(digest: Digest): Swarm {
    let s = swarms.get(digest)
    if (s === undefined) {
      s = { peers: new Map(), origin: new Map(), reports: new Map(), banned: new Map() }
      swarms.set(digest, s)
    }
    return s
  }

  /**
   * The swarms in which each peer took an origin slot. An entry may outlive its slot
   * (released with the peer, banned, expired): holdsSlotElsewhere checks the swarm and
   * drops such entries.
   */
  const slotsByPeer = new Map<string, Set<Digest>>()

  function forgetSlot(peerId: string, digest: Digest): void {
    const held = slotsByPeer.get(peerId)
    held?.delete(digest)
    if (held?.size === 0) slotsByPeer.delete(peerId)
  }

  /** Whether `peerId` holds an unexpired origin slot of a swarm other than `digest`. */
  function holdsSlotElsewhere(peerId: string, digest: Digest, nowMs: number): boolean {
    let found = false
    for (const other of slotsByPeer.get(peerId) ?? []) {
      if (other === digest) continue
      const until = swarms.get(other)?.origin.get(peerId)
      if (until !== undefined && until > nowMs) found = true
      else forgetSlot(peerId, other)
    }
    return found
  }

  function prunePeers(s: Swarm, nowMs: number): void {
    for (const [id, p] of s.peers) if (p.expiresAtMs <= nowMs) s.peers.delete(id)
  }

  function sweep(nowMs: number): void {
    for (const [digest, s] of swarms) {
      prunePeers(s, nowMs)
      prune(s.origin, nowMs)
      prune(s.banned, nowMs)
      for (const [peerId, reporters] of s.reports) {
        prune(reporters, nowMs)
        if (reporters.size === 0) s.reports.delete(peerId)
      }
      if (s.peers.size === 0 && s.origin.size === 0 && s.banned.size === 0 && s.reports.size === 0) {
        swarms.delete(digest)
      }
    }
    for (const [peerId, held] of slotsByPeer) {
      for (const digest of held)
        if (swarms.get(digest)?.origin.has(peerId) !== true) forgetSlot(peerId, digest)
    }
  }

  function counts(digest: Digest, s: Swarm, nowMs: number): SwarmCounts {
    prunePeers(s, nowMs)
    prune(s.origin, nowMs)
    let complete = 0
    let seeds = 0
    for (const { record } of s.peers.values()) {
      if (record.role === 'seed') seeds++
      else if (record.complete) complete++
    }
    return { digest, peers: s.peers.size, complete, seeds, originSlotsInUse: s.origin.size }
  }

  return {
    async upsertPeer(digest, peer, ttlMs) {
      swarm(digest).peers.set(peer.peerId, {
        record: structuredClone(peer),
        expiresAtMs: peer.lastSeenMs + ttlMs,
      })
    },
    async removePeer(digest, peerId) {
      const s = swarms.get(digest)
      s?.peers.delete(peerId)
      s?.origin.delete(peerId)
    },
    async listPeers(digest, nowMs) {
      const s = swarms.get(digest)
      if (s === undefined) return []
      prunePeers(s, nowMs)
      return [...s.peers.values()].map((p) => structuredClone(p.record))
    },
    async acquireOriginSlot(digest, peerId, limit, nowMs, ttlMs, options = {}) {
      const s = swarm(digest)
      prune(s.origin, nowMs)
      const elsewhere = options.exclusive === true && holdsSlotElsewhere(peerId, digest, nowMs)
      if (
        grantsOriginSlot(s.origin.has(peerId), s.origin.size, limit, elsewhere, options.exclusive === true)
      ) {
        s.origin.set(peerId, nowMs + ttlMs)
        if (options.recordHolder === true) {
          let held = slotsByPeer.get(peerId)
          if (held === undefined) {
            held = new Set()
            slotsByPeer.set(peerId, held)
          }
          held.add(digest)
        }
        return true
      }
      return false
    },
    async releaseOriginSlot(digest, peerId) {
      swarms.get(digest)?.origin.delete(peerId)
      forgetSlot(peerId, digest)
    },
    async listOriginSlots(digest, nowMs) {
      const s = swarms.get(digest)
      if (s === undefined) return []
      prune(s.origin, nowMs)
      return [...s.origin.keys()]
    },
    async addReport(digest, peerId, reporter, nowMs, ttlMs) {
      const s = swarm(digest)
      let reporters = s.reports.get(peerId)
      if (reporters === undefined) {
        reporters = new Map()
        s.reports.set(peerId, reporters)
      }
      prune(reporters, nowMs)
      reporters.set(reporter, nowMs + ttlMs)
      return reporters.size
    },
    async ban(digest, peerId, untilMs) {
      const s = swarm(digest)
      s.peers.delete(peerId)
      s.origin.delete(peerId)
      s.reports.delete(peerId)
      s.banned.set(peerId, Math.max(untilMs, s.banned.get(peerId) ?? 0))
    },
    async isBanned(digest, peerId, nowMs) {
      const until = swarms.get(digest)?.banned.get(peerId)
      return until !== undefined && until > nowMs
    },
    async listBanned(digest, nowMs) {
      const s = swarms.get(digest)
      if (s === undefined) return []
      prune(s.banned, nowMs)
      return [...s.banned.keys()].sort()
    },
    async listSwarms(nowMs) {
      const out: SwarmCounts[] = []
      for (const [digest, s] of swarms) {
        const c = counts(digest, s, nowMs)
        if (c.peers > 0) out.push(c)
      }
      return out.sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0))
    },
    async stats(nowMs) {
      const stats: PeerStoreStats = { swarms: 0, complete: 0, partial: 0, seeds: 0 }
      for (const [digest, s] of swarms) {
        const c = counts(digest, s, nowMs)
        if (c.peers === 0) continue
        stats.swarms++
        stats.complete += c.complete
        stats.seeds += c.seeds
        stats.partial += c.peers - c.complete - c.seeds
      }
      return stats
    },
    async start() {
      if (timer !== undefined) return
      timer = setInterval(() => sweep(now()), init.sweepIntervalMs ?? 30_000)
      timer.unref()
    },
    async stop() {
      if (timer !== undefined) clearInterval(timer)
      timer = undefined
    },
  }
}
