/**
 * Content routing through the tracker: each blob this agent downloads or holds is
 * announced (started, partial updates with a bitfield summary, completed, stopped) with
 * the agent's upload load and topology labels, every `intervalMs` the tracker asks for.
 * The answers are the peer sets findPeers returns. The tracker rations the origin: the
 * seeds it hands out, and `originAllowed`, say whether this agent may fetch pieces from
 * the seed now.
 */
import type { Logger } from 'pino'
import { Bitfield } from '../../../protocol/src/bitfield.js'
import { TrackerUnavailableError } from '../../../protocol/src/errors.js'
import type { Digest } from '../../../protocol/src/index.js'
import type { AnnouncePeer, AnnounceResponse } from '../../../protocol/src/tracker-api.js'
import type { TrackerClient } from '../../../protocol/src/tracker-client/index.js'
import type { ContentRouter, FindPeersOptions, HoldingState, ProviderRecord } from './types.js'

/** Who this agent is, as announced. */
export interface SelfInfo {
  peerId: string
  /** Current dialable multiaddrs (with /p2p/<id>). */
  multiaddrs(): string[]
}

/** Collaborators of the tracker router. */
export interface TrackerRouterComponents {
  client: Pick<TrackerClient, 'announce' | 'reportBadPeer'>
  self: SelfInfo
  /** What this agent holds of a blob now (periodic announces read it); undefined when nothing. */
  holding(digest: Digest): HoldingState | undefined
  /** Upload load announced to the tracker (active uploads). */
  uploadLoad?(): number
  logger?: Logger
}

/** Options of the tracker router. */
export interface TrackerRouterInit {
  zone?: string
  rack?: string
  /** Peers asked for per announce. @default 30 */
  numWant?: number
  /**
   * Shortest time between two announces for one blob when findPeers asks for more
   * peers before the tracker's interval is up (a starving download may ask again).
   * @default 1000
   */
  minQueryIntervalMs?: number
  /** Announce interval used until the tracker gives one. @default 10000 */
  defaultIntervalMs?: number
}

/** The tracker router. */
export interface TrackerRouter extends ContentRouter {
  /** Other complete agents (seeds not counted) in the tracker's latest answer for `digest`; undefined before one. */
  completePeers(digest: Digest): number | undefined
  /** True while the tracker's latest answer for `digest`, renewed within three intervals, grants an origin slot. */
  originAllowed(digest: Digest): boolean
  /** Digests announced periodically now. */
  tracked(): Digest[]
  /**
   * Calls `listener` after every announce, the periodic ones included: with true when
   * the tracker answered, false when it could not be reached (TrackerUnavailableError).
   * An agent that only serves announces periodically, so this is how it learns of an
   * outage.
   */
  onReachability(listener: (reachable: boolean) => void): void
}

interface Tracked {
  lastAt: number
  intervalMs: number
  answer: AnnounceResponse | undefined
  timer: ReturnType<typeof setTimeout> | undefined
  inFlight: Promise<AnnounceResponse> | undefined
  started: boolean
}

/** Creates a tracker router (see the file comment). */
export function createTrackerRouter(
  components: TrackerRouterComponents,
  init: TrackerRouterInit = {},
): TrackerRouter {
  const { client, self, logger } = components
  const numWant = init.numWant ?? 30
  const minQueryIntervalMs = init.minQueryIntervalMs ?? 1_000
  const defaultIntervalMs = init.defaultIntervalMs ?? 10_000
  const swarms = new Map<Digest, Tracked>()
  const listeners: Array<(reachable: boolean) => void> = []
  let stopped = false

  function tell(reachable: boolean): void {
    for (const listener of listeners) listener(reachable)
  }

  function entry(digest: Digest): Tracked {
    let t = swarms.get(digest)
    if (t === undefined) {
      t = {
        lastAt: 0,
        intervalMs: defaultIntervalMs,
        answer: undefined,
        timer: undefined,
        inFlight: undefined,
        started: false,
      }
      swarms.set(digest, t)
    }
    return t
  }

  function schedule(digest: Digest, t: Tracked): void {
    clearTimeout(t.timer)
    if (stopped) return
    t.timer = setTimeout(() => {
      t.timer = undefined
      // A blob the cache no longer holds (evicted) leaves its swarm.
      const state = components.holding(digest) ?? { digest, pieceCount: 1, piecesHeld: 0, event: 'stopped' }
      void send(digest, state).catch((err: unknown) => {
        logger?.debug({ err, digest }, 'periodic announce failed')
        schedule(digest, t)
      })
    }, t.intervalMs)
    t.timer.unref?.()
  }

  async function send(
    digest: Digest,
    state: HoldingState,
    options: { signal?: AbortSignal } = {},
  ): Promise<AnnounceResponse> {
    const t = entry(digest)
    const event = state.event ?? (t.started ? undefined : 'started')
    const complete = state.piecesHeld >= state.pieceCount && state.pieceCount > 0
    let bitfield: string | undefined
    if (!complete && state.bitfield !== undefined && state.piecesHeld > 0) {
      try {
        bitfield = Bitfield.decode(state.bitfield, state.pieceCount).toBase64()
      } catch {
        bitfield = undefined
      }
    }
    const run = client.announce(
      {
        peerId: self.peerId,
        multiaddrs: self.multiaddrs().slice(0, 16),
        digest,
        state: complete ? 'complete' : 'partial',
        piecesHeld: Math.min(state.piecesHeld, state.pieceCount),
        pieceCount: state.pieceCount,
        ...(bitfield === undefined ? {} : { bitfield }),
        uploadLoad: components.uploadLoad?.() ?? 0,
        ...(init.zone === undefined ? {} : { zone: init.zone }),
        ...(init.rack === undefined ? {} : { rack: init.rack }),
        ...(event === undefined ? {} : { event }),
        numWant,
      },
      options,
    )
    t.inFlight = run
    try {
      let answer: AnnounceResponse
      try {
        answer = await run
      } catch (err) {
        if (err instanceof TrackerUnavailableError) tell(false)
        throw err
      }
      tell(true)
      t.started = true
      t.lastAt = Date.now()
      t.answer = answer
      t.intervalMs = Math.max(answer.intervalMs, 100)
      if (event === 'stopped') {
        clearTimeout(t.timer)
        swarms.delete(digest)
      } else {
        schedule(digest, t)
      }
      return answer
    } finally {
      if (t.inFlight === run) t.inFlight = undefined
    }
  }

  function toRecords(answer: AnnounceResponse, pieceCount: number | undefined): ProviderRecord[] {
    const record = (p: AnnouncePeer, seed: boolean): ProviderRecord => {
      let bitfield: Bitfield | undefined
      if (pieceCount !== undefined) {
        if (p.complete) bitfield = Bitfield.full(pieceCount)
        else if (p.bitfield !== undefined && p.pieceCount === pieceCount) {
          try {
            bitfield = Bitfield.fromBase64(p.bitfield, pieceCount)
          } catch {
            bitfield = undefined
          }
        }
      }
      return {
        peerId: p.peerId,
        multiaddrs: p.multiaddrs,
        complete: p.complete,
        ...(bitfield === undefined ? {} : { bitfield }),
        ...(seed ? { seed: true } : {}),
      }
    }
    const seeds = answer.allowOrigin ? answer.seeds.map((s) => record(s, true)) : []
    return [...answer.peers.map((p) => record(p, false)), ...seeds].filter((r) => r.peerId !== self.peerId)
  }

  return {
    async findPeers(digest: Digest, options: FindPeersOptions = {}) {
      const t = entry(digest)
      const age = Date.now() - t.lastAt
      const barren = t.answer === undefined || (t.answer.peers.length === 0 && !t.answer.allowOrigin)
      let answer = t.answer
      if (t.inFlight !== undefined) answer = await t.inFlight
      else if (answer === undefined || age >= t.intervalMs || (barren && age >= minQueryIntervalMs)) {
        const state = components.holding(digest) ?? {
          digest,
          pieceCount: options.pieceCount ?? 1,
          piecesHeld: 0,
        }
        answer = await send(digest, state, options.signal ? { signal: options.signal } : {})
      }
      return toRecords(answer, options.pieceCount)
    },

    async announce(state, options = {}) {
      if (stopped && state.event !== 'stopped') return
      if (state.event === 'stopped' && !swarms.has(state.digest)) return
      await send(state.digest, state, options)
    },

    async reportBadPeer(report, options = {}) {
      await client.reportBadPeer(
        {
          reporter: self.peerId,
          peerId: report.peerId,
          digest: report.digest,
          ...(report.pieceIndex === undefined ? {} : { pieceIndex: report.pieceIndex }),
          ...(report.reason === undefined ? {} : { reason: report.reason.slice(0, 256) }),
        },
        options,
      )
    },

    originAllowed(digest) {
      const t = swarms.get(digest)
      // The tracker's slot is a lease renewed by each announce: one not renewed for three
      // intervals may have been handed to another peer, so it is no longer used.
      return t?.answer?.allowOrigin === true && Date.now() - t.lastAt < 3 * t.intervalMs
    },

    completePeers(digest) {
      const answer = swarms.get(digest)?.answer
      if (answer === undefined) return undefined
      let n = 0
      for (const p of answer.peers) if (p.complete && p.peerId !== self.peerId) n++
      return n
    },

    tracked() {
      return [...swarms.keys()]
    },

    onReachability(listener) {
      listeners.push(listener)
    },

    async stop() {
      if (stopped) return
      stopped = true
      const digests = [...swarms.keys()]
      for (const t of swarms.values()) clearTimeout(t.timer)
      // Leaving the swarms frees origin slots at once instead of at expiry.
      await Promise.allSettled(
        digests.map((digest) => {
          const held = components.holding(digest) ?? { digest, pieceCount: 1, piecesHeld: 0 }
          return send(digest, { ...held, event: 'stopped' }, { signal: AbortSignal.timeout(2_000) })
        }),
      )
      for (const t of swarms.values()) clearTimeout(t.timer)
      swarms.clear()
    },
  }
}
