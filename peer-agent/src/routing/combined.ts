/**
 * The agent's router: the tracker first, the DHT when the tracker cannot be reached
 * (TrackerUnavailableError), and announces to both (the DHT gets a provide as soon as
 * one piece is held). While the tracker is out of reach there is nobody to ration the
 * origin: once the outage has lasted `originAfterOutageMs`, any seed found in the DHT
 * may be used (before that, only a slot the tracker granted recently).
 */
import type { Logger } from 'pino'
import { TrackerUnavailableError } from '../../../protocol/src/errors.js'
import type { Digest } from '../../../protocol/src/index.js'
import type { DhtRouter } from './dht.js'
import type { TrackerRouter } from './tracker.js'
import type { ContentRouter, FindPeersOptions, ProviderRecord } from './types.js'

/** Options of the combined router. */
export interface CombinedRouterInit {
  /**
   * How long the tracker must have been unreachable before the origin may be used
   * without its permission (a slow answer under load is not an outage).
   * @default 10000
   */
  originAfterOutageMs?: number
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
  let down = tracker === undefined
  /** When the current outage began. */
  let downSince = 0
  const markDown = (): void => {
    if (!down) downSince = Date.now()
    down = true
  }

  return {
    async findPeers(digest: Digest, options: FindPeersOptions = {}): Promise<ProviderRecord[]> {
      if (tracker !== undefined) {
        try {
          const peers = await tracker.findPeers(digest, options)
          down = false
          components.onTrackerPeers?.(peers)
          return peers
        } catch (err) {
          if (!(err instanceof TrackerUnavailableError) || dht === undefined) throw err
          if (!down) logger?.warn({ err, digest }, 'tracker unavailable, finding peers in the DHT')
          markDown()
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
          tracker.announce(state, options).then(
            () => {
              down = false
            },
            (err: unknown) => {
              if (err instanceof TrackerUnavailableError) markDown()
              logger?.debug({ err, digest: state.digest }, 'tracker announce failed')
            },
          ),
        )
      }
      // While the tracker answers, the DHT gets only complete blobs: when a whole cluster
      // starts pulling, every agent providing at its first piece means thousands of DHT
      // queries and connections at the moment the swarm needs the CPU (at 50 agents on
      // two cores their handshakes timed out). With the tracker down, partial holders
      // are provided too, so agents find one another without it.
      const complete = state.pieceCount > 0 && state.piecesHeld >= state.pieceCount
      if (dht !== undefined && (tracker === undefined || down || complete)) {
        jobs.push(
          dht.announce(state, options).catch((err: unknown) => {
            logger?.debug({ err, digest: state.digest }, 'DHT announce failed')
          }),
        )
      }
      await Promise.all(jobs)
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
      await Promise.allSettled([tracker?.stop?.(), dht?.stop?.()])
    },
  }
}
