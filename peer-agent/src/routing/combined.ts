/**
 * The agent's router: the tracker first, the DHT when the tracker cannot be reached
 * (TrackerUnavailableError), and announces to both (the DHT gets a provide as soon as
 * one piece is held). While the tracker is out of reach there is nobody to ration the
 * origin, so any seed found in the DHT may be used.
 */
import type { Logger } from 'pino'
import { TrackerUnavailableError } from '../../../protocol/src/errors.js'
import type { Digest } from '../../../protocol/src/index.js'
import type { DhtRouter } from './dht.js'
import type { TrackerRouter } from './tracker.js'
import type { ContentRouter, FindPeersOptions, ProviderRecord } from './types.js'

/** Collaborators of the combined router; at least one of them. */
export interface CombinedRouterComponents {
  tracker?: TrackerRouter
  dht?: DhtRouter
  logger?: Logger
  /** Called each time findPeers falls back to the DHT (for metrics). */
  onFallback?(digest: Digest): void
}

/** The combined router. */
export interface CombinedRouter extends ContentRouter {
  /** Whether this agent may fetch pieces of `digest` from the seed now. */
  originAllowed(digest: Digest): boolean
  /** True when the last tracker call failed as unavailable. */
  trackerDown(): boolean
}

/** Creates the combined router (see the file comment). */
export function createCombinedRouter(components: CombinedRouterComponents): CombinedRouter {
  const { tracker, dht, logger } = components
  let down = tracker === undefined

  return {
    async findPeers(digest: Digest, options: FindPeersOptions = {}): Promise<ProviderRecord[]> {
      if (tracker !== undefined) {
        try {
          const peers = await tracker.findPeers(digest, options)
          down = false
          return peers
        } catch (err) {
          if (!(err instanceof TrackerUnavailableError) || dht === undefined) throw err
          if (!down) logger?.warn({ err, digest }, 'tracker unavailable, finding peers in the DHT')
          down = true
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
              if (err instanceof TrackerUnavailableError) down = true
              logger?.debug({ err, digest: state.digest }, 'tracker announce failed')
            },
          ),
        )
      }
      if (dht !== undefined) {
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
      if (tracker === undefined || down) return true
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
