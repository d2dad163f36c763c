/**
 * The registry as the swarm's seed. It composes:
 *
 * - the signed piece maps of every held blob (piece-maps.ts: computed at commit and on
 *   first need, stored beside the blob);
 * - a libp2p node (protocol/src/p2p createP2PNode) with the shared piece server over
 *   the blob store (store-piece-source.ts), rate-limited and capped;
 * - announces to the tracker and DHT provider records (announcer.ts);
 * - the HTTP endpoints /shoal/v1/seed and /shoal/v1/piece-maps/<digest> (routes.ts),
 *   mounted on the registry's Koa app.
 */
import { readFile } from 'node:fs/promises'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Middleware } from 'koa'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { ConfigError, type Digest } from '../../../protocol/src/index.js'
import {
  createP2PNode,
  createPieceServer,
  laneHostOf,
  type P2PNode,
  type PieceServer,
} from '../../../protocol/src/p2p/index.js'
import { createTrackerClient } from '../../../protocol/src/tracker-client/index.js'
import type { SeedConfig } from '../config.js'
import type { BlobInfo } from '../service.js'
import type { StorageDriver } from '../storage/index.js'
import { type Announcer, createAnnouncer } from './announcer.js'
import { type BlobContent, createBlobContent } from './blob-content.js'
import { loadOrCreateSeedKey } from './key.js'
import { createSeedMetrics } from './metrics.js'
import { createPieceMapStore, type PieceMapStore } from './piece-maps.js'
import { createSeedRoutes } from './routes.js'
import { peerIdFromString } from '@libp2p/peer-id'
import { createFirstCopyRule, DEFAULT_REPEAT_AFTER_MS } from './first-copy.js'
import { createStorePieceSource } from './store-piece-source.js'

/** The collaborators of the seed. */
export interface SeederComponents {
  /** The registry's storage driver (blobs are read from it by digest). */
  driver: StorageDriver
  logger?: Logger
  /** Where the seed's metrics go (the registry's shared prom-client Registry). */
  metrics: Registry
  /** fetch for the tracker client (tests). */
  fetch?: typeof globalThis.fetch
}

/** Options of the seed: its config section plus where its identity comes from. */
export type SeederInit = Partial<Omit<SeedConfig, 'enabled'>> & {
  /** File of the seed's libp2p key, created when missing (mode 0600). */
  keyPath?: string
  /** The key itself (tests); an ephemeral key when neither is given. */
  privateKey?: PrivateKey
  /** Piece size of new piece maps; by default chosen from the blob size. */
  pieceSize?: number
  /** Retry delay after a failed tracker announce. @default 10000 */
  announceRetryMs?: number
}

/** A seed, started or stopped. */
export interface Seeder {
  readonly peerId: PeerId
  readonly node: P2PNode
  readonly pieceServer: PieceServer
  readonly pieceMaps: PieceMapStore
  readonly content: BlobContent
  /** /shoal/v1/... routes, for the registry's Koa app. */
  readonly routes: Middleware
  /** The seed's dialable addresses, each ending in /p2p/<peer id>. */
  multiaddrs(): string[]
  /** Blobs the seed announces to the tracker. */
  announced(): Digest[]
  /** Starts libp2p, the piece server and the announces. */
  start(options?: { signal?: AbortSignal }): Promise<void>
  /** Stops them; safe to call twice. */
  stop(): Promise<void>
  /**
   * The storage's onBlobCommitted hook: computes and stores the blob's piece map,
   * then announces and provides it. Never throws (failures are logged).
   */
  blobCommitted(info: BlobInfo): void
}

/** The piece server's lane option: on the host of the first TCP listen address. */
function laneOption(
  enabled: boolean,
  listen: readonly string[],
  port: number,
): { lane?: { host: string; port: number } } {
  const host = enabled ? laneHostOf(listen) : undefined
  return host === undefined ? {} : { lane: { host, port } }
}

/** Creates (without starting) the seed. Throws ConfigError for an unreadable key or PSK file. */
export async function createSeeder(components: SeederComponents, init: SeederInit = {}): Promise<Seeder> {
  const { driver, logger } = components
  const metrics = createSeedMetrics(components.metrics)
  const privateKey =
    init.privateKey ??
    (init.keyPath !== undefined ? await loadOrCreateSeedKey(init.keyPath) : await generateKeyPair('Ed25519'))
  let psk: Uint8Array | undefined
  if (init.pskFile !== undefined) {
    try {
      psk = await readFile(init.pskFile)
    } catch (err) {
      throw new ConfigError([`seed.pskFile: cannot read ${init.pskFile} (${(err as Error).message})`])
    }
  }
  const node = await createP2PNode(
    { ...(logger ? { logger } : {}) },
    {
      privateKey,
      listen: init.listen ?? ['/ip4/127.0.0.1/tcp/0'],
      ...(init.announce && init.announce.length > 0 ? { announce: init.announce } : {}),
      ...(psk ? { psk } : {}),
      ...(init.allowPeers && init.allowPeers.length > 0 ? { allowPeers: init.allowPeers } : {}),
      bootstrap: init.bootstrap ?? [],
    },
  )
  const content = createBlobContent({ driver })
  const pieceMaps = createPieceMapStore(
    { driver, content, privateKey, ...(logger ? { logger } : {}) },
    {
      ...(init.pieceSize !== undefined ? { pieceSize: init.pieceSize } : {}),
      onComputed: () => metrics.pieceMapsComputed.inc(),
    },
  )
  const firstCopy = createFirstCopyRule({
    repeatAfterMs: init.repeatPieceAfterMs ?? DEFAULT_REPEAT_AFTER_MS,
    onRefused: () => metrics.piecesDeferred.inc(),
    onRepeated: (reason) => metrics.piecesRepeated.inc({ reason }),
    isConnected: (peer) => {
      try {
        return node.libp2p.getConnections(peerIdFromString(peer)).length > 0
      } catch {
        return false
      }
    },
  })
  const pieceServer = createPieceServer(
    {
      libp2p: node.libp2p,
      source: createStorePieceSource({ content, pieceMaps, firstCopy }),
      ...(logger ? { logger } : {}),
    },
    {
      maxConcurrentUploads: init.maxConcurrentUploads ?? 16,
      uploadBytesPerSecond: init.uploadBytesPerSecond ?? 0,
      ...laneOption(init.lane ?? true, init.listen ?? ['/ip4/127.0.0.1/tcp/0'], init.lanePort ?? 0),
      onPieceSent: (event) => {
        metrics.blobBytesSent.inc(event.bytes)
        metrics.piecesSent.inc()
      },
    },
  )
  const multiaddrs = (): string[] => node.getMultiaddrs().map((a) => a.toString())
  const announcer: Announcer = createAnnouncer(
    {
      ...(init.trackerUrl !== undefined
        ? {
            tracker: createTrackerClient({
              url: init.trackerUrl,
              ...(components.fetch ? { fetch: components.fetch } : {}),
            }),
          }
        : {}),
      node,
      list: (options) => content.list(options),
      pieceCount: async (digest, options) => (await pieceMaps.get(digest, options))?.map.pieces.length,
      uploadLoad: () => pieceServer.activeUploads(),
      onAnnounce: (result) => metrics.announces.inc({ result }),
      onSpread: (digest, pieces) => firstCopy.spread(digest, pieces),
      ...(logger ? { logger } : {}),
    },
    {
      ...(init.reprovideIntervalMs !== undefined ? { reprovideIntervalMs: init.reprovideIntervalMs } : {}),
      ...(init.announceRetryMs !== undefined ? { retryMs: init.announceRetryMs } : {}),
    },
  )
  const routes = createSeedRoutes({
    pieceMaps,
    info: () => ({ peerId: node.peerId.toString(), multiaddrs: multiaddrs() }),
  })
  let started = false
  let stopped: Promise<void> | undefined

  return {
    peerId: node.peerId,
    node,
    pieceServer,
    pieceMaps,
    content,
    routes,
    multiaddrs,
    announced: () => announcer.announced(),

    async start(options = {}) {
      if (started) return
      started = true
      stopped = undefined
      await node.start(options)
      await pieceServer.start()
      await announcer.start()
      logger?.info({ peerId: node.peerId.toString(), multiaddrs: multiaddrs() }, 'seed started')
    },

    stop() {
      stopped ??= (async () => {
        if (!started) return
        started = false
        await announcer.stop()
        await pieceServer.stop()
        await node.stop()
      })()
      return stopped
    },

    blobCommitted(info) {
      void (async () => {
        // The map first, so that the announce and any peer that follows it find it ready.
        await pieceMaps.get(info.digest)
        if (started) announcer.blobAdded(info.digest)
      })().catch((err: unknown) =>
        logger?.warn({ err, digest: info.digest }, 'seed could not take a new blob'),
      )
    },
  }
}
