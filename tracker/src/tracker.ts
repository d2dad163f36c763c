/**
 * The tracker service: announces in, peer sets out, over a PeerStore. Stateless itself,
 * so several replicas over one Redis store behave as one tracker.
 */
import type { Logger } from 'pino'
import {
  Bitfield,
  type AnnouncePeer,
  type AnnounceRequest,
  type AnnounceResponse,
  DeniedError,
  type Digest,
  ParameterInvalidError,
  type ReportBadPeerRequest,
  type ReportBadPeerResponse,
  type SwarmDetail,
  SPREAD_HOLDERS,
  type SwarmList,
} from '../../protocol/src/index.js'
import { handOut, originSlotExclusive, spreadBitfield, wantsOrigin } from './hand-out.js'
import type { PeerRecord, PeerStore } from './peer-store/index.js'

/** Events the tracker reports (for metrics); never needed for correctness. */
export interface TrackerEvents {
  onAnnounce?(event: string, allowOrigin: boolean): void
  onReport?(dropped: boolean): void
}

/** Collaborators of the tracker. */
export interface TrackerComponents {
  store: PeerStore
  logger?: Logger
  events?: TrackerEvents
  /** @default Date.now */
  now?: () => number
  /** @default Math.random */
  random?: () => number
}

/** Tracker policy settings (see config.ts for their meaning and defaults). */
export interface TrackerInit {
  announceIntervalMs: number
  peerTtlMs: number
  maxPeersPerAnswer: number
  originSlotsPerSwarm: number
  /**
   * One origin slot per node across swarms while others of a swarm want one
   * (originSlotExclusive in hand-out.ts). @default false
   */
  exclusiveOriginSlots?: boolean
  badPeerReporters: number
  badPeerBanMs: number
  /** Peer ids allowed to announce as seeds; empty lets any peer. @default [] */
  seedPeerIds?: string[]
}

/** The tracker's operations; inputs are already validated against the tracker-api schemas. */
export interface Tracker {
  /** Records the announce and answers with a peer set. Throws DeniedError for a banned peer. */
  announce(request: AnnounceRequest, options?: { signal?: AbortSignal }): Promise<AnnounceResponse>
  /**
   * Records a bad-peer report; drops and bans the peer once enough distinct members
   * reported it, or a seed did. Throws ParameterInvalidError for a self-report and
   * DeniedError when the reporter is not a member of the swarm.
   */
  report(request: ReportBadPeerRequest, options?: { signal?: AbortSignal }): Promise<ReportBadPeerResponse>
  /** Every live swarm with counts. */
  swarms(options?: { signal?: AbortSignal }): Promise<SwarmList>
  /** One swarm in detail (an unknown swarm is empty, not an error). */
  swarm(digest: Digest, options?: { signal?: AbortSignal }): Promise<SwarmDetail>
}

function toAnnouncePeer(r: PeerRecord): AnnouncePeer {
  const p: AnnouncePeer = {
    peerId: r.peerId,
    multiaddrs: r.multiaddrs,
    complete: r.complete,
    uploadLoad: r.uploadLoad,
  }
  if (r.zone !== undefined) p.zone = r.zone
  if (r.rack !== undefined) p.rack = r.rack
  if (r.piecesHeld !== undefined) p.piecesHeld = r.piecesHeld
  if (r.pieceCount !== undefined) p.pieceCount = r.pieceCount
  if (r.bitfield !== undefined) p.bitfield = r.bitfield
  return p
}

/**
 * The pieces of a blob of `pieceCount` pieces that at least SPREAD_HOLDERS of `agents`
 * hold (a complete agent every piece, a partial one what its last bitfield said), as a
 * base64 bitfield; undefined when there is nothing to say (no piece is that widely held).
 * Agents that announced another piece count, or a bitfield that does not decode, are
 * left out.
 */
export function spreadPieces(agents: readonly PeerRecord[], pieceCount: number): string | undefined {
  const holders = new Uint16Array(pieceCount)
  let complete = 0
  for (const a of agents) {
    if (a.complete) {
      complete++
      continue
    }
    if (a.bitfield === undefined || a.pieceCount !== pieceCount) continue
    let bits: Bitfield
    try {
      bits = Bitfield.fromBase64(a.bitfield, pieceCount)
    } catch {
      continue
    }
    for (const i of bits.indexes()) if (holders[i]! < SPREAD_HOLDERS) holders[i]!++
  }
  return spreadBitfield(holders, complete)?.toBase64()
}

/** Creates the tracker service. */
export function createTracker(components: TrackerComponents, init: TrackerInit): Tracker {
  const { store } = components
  const now = components.now ?? Date.now
  const random = components.random ?? Math.random
  const log = components.logger
  const seedPeerIds = new Set(init.seedPeerIds ?? [])

  return {
    async announce(req) {
      const t = now()
      const digest = req.digest
      if (req.role === 'seed' && seedPeerIds.size > 0 && !seedPeerIds.has(req.peerId)) {
        throw new DeniedError('peer is not a trusted seed', { peerId: req.peerId })
      }
      if (await store.isBanned(digest, req.peerId, t)) {
        throw new DeniedError('peer is banned from this swarm', { peerId: req.peerId, digest })
      }
      if (req.event === 'stopped') {
        await store.removePeer(digest, req.peerId)
        components.events?.onAnnounce?.('stopped', false)
        return { peers: [], seeds: [], intervalMs: init.announceIntervalMs, allowOrigin: false }
      }
      const complete = req.state === 'complete' || req.event === 'completed'
      const record: PeerRecord = {
        peerId: req.peerId,
        multiaddrs: req.multiaddrs,
        role: req.role,
        complete,
        uploadLoad: req.uploadLoad,
        lastSeenMs: t,
      }
      if (complete && req.pieceCount !== undefined) record.piecesHeld = req.pieceCount
      else if (req.piecesHeld !== undefined) record.piecesHeld = req.piecesHeld
      if (req.pieceCount !== undefined) record.pieceCount = req.pieceCount
      if (req.bitfield !== undefined && !complete) record.bitfield = req.bitfield
      if (req.zone !== undefined) record.zone = req.zone
      if (req.rack !== undefined) record.rack = req.rack
      await store.upsertPeer(digest, record, init.peerTtlMs)

      const members = await store.listPeers(digest, t)
      let allowOrigin = false
      if (wantsOrigin({ ...req, state: complete ? 'complete' : 'partial' })) {
        // Only with exclusiveOriginSlots on are slots recorded under their peers (and read).
        const exclusive =
          init.exclusiveOriginSlots === true
            ? {
                recordHolder: true,
                exclusive: originSlotExclusive({
                  ...(req.event !== undefined ? { event: req.event } : {}),
                  otherPartialAgents: members.some(
                    (m) => m.role !== 'seed' && !m.complete && m.peerId !== req.peerId,
                  ),
                }),
              }
            : {}
        allowOrigin = await store.acquireOriginSlot(
          digest,
          req.peerId,
          init.originSlotsPerSwarm,
          t,
          init.peerTtlMs,
          exclusive,
        )
      } else if (req.role !== 'seed') {
        await store.releaseOriginSlot(digest, req.peerId)
      }

      const seeds = members.filter((m) => m.role === 'seed' && m.peerId !== req.peerId)
      const others = members.filter((m) => m.role !== 'seed')
      const max = Math.min(req.numWant ?? init.maxPeersPerAnswer, init.maxPeersPerAnswer)
      const peers =
        req.role === 'seed' ? [] : handOut(others, { peerId: req.peerId, zone: req.zone }, { max, random })
      components.events?.onAnnounce?.(req.event ?? 'update', allowOrigin)
      const spread =
        req.role === 'seed' && req.pieceCount !== undefined ? spreadPieces(others, req.pieceCount) : undefined
      return {
        peers: peers.map(toAnnouncePeer),
        seeds: allowOrigin ? seeds.slice(0, init.maxPeersPerAnswer).map(toAnnouncePeer) : [],
        intervalMs: init.announceIntervalMs,
        allowOrigin,
        ...(spread === undefined ? {} : { spread }),
      }
    },

    async report(req) {
      const t = now()
      if (req.reporter === req.peerId) throw new ParameterInvalidError('a peer cannot report itself')
      const members = await store.listPeers(req.digest, t)
      const reporter = members.find((m) => m.peerId === req.reporter)
      if (reporter === undefined) {
        throw new DeniedError('only a member of the swarm may report a peer', { reporter: req.reporter })
      }
      const reported = members.find((m) => m.peerId === req.peerId)
      if (reported?.role === 'seed') {
        // Seeds are the root of trust; a report against one says more about the reporter.
        log?.warn(
          { digest: req.digest, reporter: req.reporter, peerId: req.peerId },
          'report against a seed ignored',
        )
        components.events?.onReport?.(false)
        return { dropped: false, reporters: 0 }
      }
      const reporters = await store.addReport(req.digest, req.peerId, req.reporter, t, init.badPeerBanMs)
      const dropped = reporter.role === 'seed' || reporters >= init.badPeerReporters
      if (dropped) {
        await store.ban(req.digest, req.peerId, t + init.badPeerBanMs)
        log?.info(
          { digest: req.digest, peerId: req.peerId, reporters, reason: req.reason },
          'bad peer dropped from swarm',
        )
      }
      components.events?.onReport?.(dropped)
      return { dropped, reporters }
    },

    async swarms() {
      return { swarms: await store.listSwarms(now()) }
    },

    async swarm(digest) {
      const t = now()
      const [members, slots, banned] = await Promise.all([
        store.listPeers(digest, t),
        store.listOriginSlots(digest, t),
        store.listBanned(digest, t),
      ])
      const slotSet = new Set(slots)
      return {
        digest,
        peers: members
          .sort((a, b) => (a.peerId < b.peerId ? -1 : 1))
          .map((m) => ({
            ...toAnnouncePeer(m),
            role: m.role,
            lastSeenMs: m.lastSeenMs,
            originSlot: slotSet.has(m.peerId),
          })),
        banned,
      }
    },
  }
}
