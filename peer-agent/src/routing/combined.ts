/**
 * The agent's router: the tracker first, the DHT when the tracker cannot be reached
 * (TrackerUnavailableError), and announces to both (the DHT gets a provide as soon as
 * one piece is held). While the tracker is out of reach there is nobody to ration the
 * origin: once the outage has lasted `originAfterOutageMs`, any seed found in the DHT
 * may be used (before that, only a slot the tracker granted recently).
 *
 * While the tracker answers, the DHT is only the fallback, so its provides wait: a
 * complete blob is provided after a random delay (up to `dhtProvideDelayMs`), one provide
 * at a time, and not at all when the tracker already names `dhtProvidersPerBlob` other
 * complete agents: the DHT then knows enough holders (and the seed) to start from, and a
 * download in DHT mode provides itself at its first piece. A whole cluster completes a
 * pull within seconds, and every agent providing at that moment costs each of them DHT
 * lookups, a score of streams and peer-store updates (at 25 agents about a core for half
 * a minute) just when the last nodes still need the CPU. When the tracker goes away,
 * everything still waiting is provided at once, and what was skipped within the delay.
 */
import type { Logger } from 'pino'
import { TrackerUnavailableError } from '../../../protocol/src/errors.js'
import type { Digest } from '../../../protocol/src/index.js'
import type { DhtRouter } from './dht.js'
import type { TrackerRouter } from './tracker.js'
import type { ContentRouter, FindPeersOptions, HoldingState, ProviderRecord } from './types.js'

/** Options of the combined router. */
export interface CombinedRouterInit {
  /**
   * How long the tracker must have been unreachable before the origin may be used
   * without its permission (a slow answer under load is not an outage).
   * @default 10000
   */
  originAfterOutageMs?: number
  /**
   * Longest random wait before a complete blob is provided in the DHT while the tracker
   * answers (0: at once).
   * @default 30000
   */
  dhtProvideDelayMs?: number
  /**
   * While the tracker answers, a complete blob is not provided when the tracker's
   * answer to its completed announce names at least this many other complete agents.
   * @default 8
   */
  dhtProvidersPerBlob?: number
}

/** Collaborators of the combined router; at least one of them. */
export interface CombinedRouterComponents {
  tracker?: TrackerRouter
  dht?: DhtRouter
  logger?: Logger
  /** Called each time findPeers falls back to the DHT (for metrics). */
  onFallback?(digest: Digest): void
  /** Called with the peers the tracker handed out (the agent dials some to fill its DHT routing table). */
  onTrackerPeers?(peers: ProviderRecord[]): void
}

/** The combined router. */
export interface CombinedRouter extends ContentRouter {
  /** Whether this agent may fetch pieces of `digest` from the seed now. */
  originAllowed(digest: Digest): boolean
  /** True when the last tracker call failed as unavailable. */
  trackerDown(): boolean
}

/** Creates the combined router (see the file comment). */
export function createCombinedRouter(
  components: CombinedRouterComponents,
  init: CombinedRouterInit = {},
): CombinedRouter {
  const { tracker, dht, logger } = components
  const originAfterOutageMs = init.originAfterOutageMs ?? 10_000
  const dhtProvideDelayMs = init.dhtProvideDelayMs ?? 30_000
  const dhtProvidersPerBlob = init.dhtProvidersPerBlob ?? 8
  /** Complete blobs not provided because enough others hold them (provided if the tracker goes away). */
  const skipped = new Map<Digest, HoldingState>()
  let down = tracker === undefined
  /** When the current outage began. */
  let downSince = 0
  /** Complete blobs waiting for their DHT provide, by digest. */
  const deferred = new Map<Digest, { state: HoldingState; timer: ReturnType<typeof setTimeout> }>()
  /** Deferred provides run one after another on this chain. */
  let provideChain: Promise<void> = Promise.resolve()
  let stopped = false

  function provideNow(state: HoldingState, options: { signal?: AbortSignal } = {}): Promise<void> {
    if (dht === undefined) return Promise.resolve()
    return dht.announce(state, options).catch((err: unknown) => {
      logger?.debug({ err, digest: state.digest }, 'DHT announce failed')
    })
  }

  function defer(state: HoldingState): void {
    if (deferred.has(state.digest) || stopped) return
    const timer = setTimeout(
      () => {
        deferred.delete(state.digest)
        provideChain = provideChain.then(() => (stopped ? undefined : provideNow(state)))
      },
      Math.floor(Math.random() * dhtProvideDelayMs),
    )
    timer.unref?.()
    deferred.set(state.digest, { state, timer })
  }

  /** Drops what waits or was skipped for `digest` (the blob left this agent). */
  function forget(digest: Digest): void {
    skipped.delete(digest)
    const waiting = deferred.get(digest)
    if (waiting) clearTimeout(waiting.timer)
    deferred.delete(digest)
  }

  /** The tracker is gone: what was waiting is provided now, what was skipped soon. */
  function flushDeferred(): void {
    for (const [digest, { state, timer }] of deferred) {
      clearTimeout(timer)
      deferred.delete(digest)
      void provideNow(state)
    }
    for (const [digest, state] of skipped) {
      skipped.delete(digest)
      defer(state)
    }
  }

  const markDown = (): void => {
    if (!down) {
      downSince = Date.now()
      logger?.warn('tracker unavailable, using the DHT')
    }
    down = true
    flushDeferred()
  }
  // Every tracker call reports here, the periodic announces too (the only tracker calls
  // of an agent that just serves).
  tracker?.onReachability((reachable) => {
    if (!reachable) markDown()
    else if (down) {
      down = false
      logger?.info('tracker reachable again')
    }
  })

  return {
    async findPeers(digest: Digest, options: FindPeersOptions = {}): Promise<ProviderRecord[]> {
      if (tracker !== undefined) {
        try {
          const peers = await tracker.findPeers(digest, options)
          components.onTrackerPeers?.(peers)
          return peers
        } catch (err) {
          if (!(err instanceof TrackerUnavailableError) || dht === undefined) throw err
          logger?.debug({ err, digest }, 'finding peers in the DHT')
        }
      }
      if (dht === undefined) return []
      components.onFallback?.(digest)
      return dht.findPeers(digest, options)
    },

    async announce(state, options = {}) {
      const jobs: Array<Promise<void>> = []
      if (tracker !== undefined) {
        jobs.push(
          tracker.announce(state, options).catch((err: unknown) => {
            logger?.debug({ err, digest: state.digest }, 'tracker announce failed')
          }),
        )
      }
      // While the tracker answers, the DHT gets only complete blobs: when a whole cluster
      // starts pulling, every agent providing at its first piece means thousands of DHT
      // queries and connections at the moment the swarm needs the CPU (at 50 agents on
      // two cores their handshakes timed out). With the tracker down, partial holders
      // are provided too, so agents find one another without it.
      const complete = state.pieceCount > 0 && state.piecesHeld >= state.pieceCount
      const providing = dht !== undefined && (tracker === undefined || down)
      if (providing) jobs.push(provideNow(state, options))
      await Promise.all(jobs)
      // The tracker went away during this announce: the DHT gets it now, partial or not.
      if (!providing && down && state.event !== 'stopped') await provideNow(state, options)
      if (state.event === 'stopped') {
        forget(state.digest)
        return
      }
      // With the tracker answering (its answer to this announce is in), the DHT gets
      // complete blobs only, later, and only from the first few holders.
      if (dht === undefined || tracker === undefined || down || !complete) return
      if (deferred.has(state.digest) || skipped.has(state.digest) || dht.provided().includes(state.digest))
        return
      if ((tracker.completePeers(state.digest) ?? 0) >= dhtProvidersPerBlob) {
        skipped.set(state.digest, state)
        return
      }
      if (dhtProvideDelayMs <= 0) await provideNow(state, options)
      else defer(state)
    },

    async reportBadPeer(report, options = {}) {
      if (tracker?.reportBadPeer === undefined) return
      try {
        await tracker.reportBadPeer(report, options)
      } catch (err) {
        logger?.warn({ err, peer: report.peerId, digest: report.digest }, 'could not report a bad peer')
      }
    },

    originAllowed(digest) {
      if (tracker === undefined) return true
      if (down && Date.now() - downSince >= originAfterOutageMs) return true
      return tracker.originAllowed(digest)
    },

    trackerDown() {
      return down
    },

    async stop() {
      stopped = true
      for (const digest of [...deferred.keys(), ...skipped.keys()]) forget(digest)
      await Promise.allSettled([tracker?.stop?.(), dht?.stop?.()])
    },
  }
}
