/**
 * Content routing through shoal's Kademlia DHT (the fallback when the tracker cannot be
 * reached): a blob is provided under the CID of its digest as soon as this agent holds
 * one piece of it, and findPeers stops at the first usable providers. Every DHT call
 * has a deadline (LIBP2P.md pitfalls 5 and 7).
 */
import type { PeerInfo } from '@libp2p/interface'
import type { Logger } from 'pino'
import type { Digest } from '../../../protocol/src/index.js'
import type { ContentRouter, FindPeersOptions, ProviderRecord } from './types.js'

/** Collaborators of the DHT router. */
export interface DhtRouterComponents {
  node: {
    provide(digest: Digest, options?: { signal?: AbortSignal }): Promise<void>
    findProviders(
      digest: Digest,
      options?: { signal?: AbortSignal; limit?: number; filter?: (peer: PeerInfo) => boolean },
    ): Promise<PeerInfo[]>
  }
  /** The seed registry's peer id when known: its records are marked `seed`. */
  seedPeerId?(): string | undefined
  logger?: Logger
}

/** Options of the DHT router. */
export interface DhtRouterInit {
  /** Deadline of one lookup or provide. @default 5000 */
  timeoutMs?: number
  /** Providers a lookup stops at. @default 4 */
  limit?: number
}

/** The DHT router. */
export interface DhtRouter extends ContentRouter {
  /** Digests this agent has provided. */
  provided(): Digest[]
}

/** Creates a DHT router (see the file comment). */
export function createDhtRouter(components: DhtRouterComponents, init: DhtRouterInit = {}): DhtRouter {
  const { node, logger } = components
  const timeoutMs = init.timeoutMs ?? 5_000
  const limit = init.limit ?? 4
  const provided = new Set<Digest>()
  const providing = new Map<Digest, Promise<void>>()
  let stopped = false

  function deadline(signal: AbortSignal | undefined): AbortSignal {
    const timeout = AbortSignal.timeout(timeoutMs)
    return signal ? AbortSignal.any([signal, timeout]) : timeout
  }

  return {
    async findPeers(digest: Digest, options: FindPeersOptions = {}) {
      const found = await node.findProviders(digest, { limit, signal: deadline(options.signal) })
      const seed = components.seedPeerId?.()
      return found.map((peer): ProviderRecord => {
        const peerId = peer.id.toString()
        return {
          peerId,
          multiaddrs: peer.multiaddrs.map((m) => m.toString()),
          ...(seed !== undefined && peerId === seed ? { seed: true, complete: true } : {}),
        }
      })
    },

    async announce(state, options = {}) {
      if (stopped || state.event === 'stopped' || state.piecesHeld < 1) return
      if (provided.has(state.digest)) return
      const running = providing.get(state.digest)
      if (running) return running
      const run = (async () => {
        try {
          await node.provide(state.digest, { signal: deadline(options.signal) })
          provided.add(state.digest)
        } catch (err) {
          logger?.debug({ err, digest: state.digest }, 'DHT provide failed')
          throw err
        } finally {
          providing.delete(state.digest)
        }
      })()
      providing.set(state.digest, run)
      return run
    },

    provided() {
      return [...provided]
    },

    async stop() {
      stopped = true
    },
  }
}
