/**
 * Composes the agent's swarm from its configuration: the libp2p node (listen addresses,
 * pre-shared key, allow-list, bootstrap peers, and the seed's addresses once the
 * registry names them), the piece server over the cache (upload cap and rate), the
 * tracker and DHT routers, the piece map store and the swarm blob source. It announces
 * what the cache holds: at start, as soon as a blob's first piece lands, on completion,
 * and leaves a swarm when a blob is evicted or discarded.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Connection } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { Digest } from '../../../protocol/src/index.js'
import {
  createP2PNode,
  createPieceClient,
  createPieceHasher,
  createPieceServer,
  laneHostOf,
  type P2PNode,
  type PieceSource,
} from '../../../protocol/src/p2p/index.js'
import type { SignedPieceMap } from '../../../protocol/src/piece-map.js'
import { createTrackerClient } from '../../../protocol/src/tracker-client/index.js'
import type { SwarmComponent, SwarmDeps } from '../main.js'
import { cachePieceSource } from '../p2p-adapter.js'
import {
  type CombinedRouter,
  createCombinedRouter,
  createDhtRouter,
  createTrackerRouter,
  type HoldingState,
} from '../routing/index.js'
import { createSwarmMetrics } from './metrics.js'
import { createPieceMapStore, type PieceMapStore } from './piece-maps.js'
import { createSwarmBlobSource, type SwarmBlobSource } from './swarm-source.js'

/** Below this many connections, peers handed out by the tracker are dialled for the DHT. */
const DHT_MIN_CONNECTIONS = 3

/** Substitutes for parts of the swarm (tests: a peer whose cache serves flipped bytes). */
export interface AgentSwarmOverrides {
  /** What the piece server serves from instead of the cache. */
  pieceSource?(
    deps: SwarmDeps,
    pieceMaps: { get(digest: Digest): Promise<SignedPieceMap | undefined> },
  ): PieceSource
}

/** The running swarm of an agent. */
export interface AgentSwarm extends SwarmComponent {
  readonly node: P2PNode
  readonly peerId: string
  readonly router: CombinedRouter
  readonly maps: PieceMapStore
  readonly source: SwarmBlobSource
}

/** Builds the swarm the agent plugs into its mirror (a SwarmFactory). */
export async function createAgentSwarm(
  deps: SwarmDeps,
  overrides: AgentSwarmOverrides = {},
): Promise<AgentSwarm> {
  const { config, cache, logger } = deps
  const psk = config.pskFile === undefined ? undefined : new Uint8Array(await readFile(config.pskFile))
  const node = await createP2PNode(
    { logger },
    {
      listen: config.p2pListen,
      ...(psk ? { psk } : {}),
      ...(config.allowPeers.length > 0 ? { allowPeers: config.allowPeers } : {}),
      bootstrap: config.bootstrap,
    },
  )
  const peerId = node.peerId.toString()
  const laneHost = config.p2pLane ? laneHostOf(config.p2pListen) : undefined
  // Pieces the downloads read into shared buffers (download-manager.ts) are hashed on
  // its worker thread as they arrive; its worker starts with the first such piece.
  const hasher = createPieceHasher()
  const client = createPieceClient(
    { libp2p: node.libp2p },
    {
      lane: config.p2pLane,
      hasher,
      onStreamOpened: (transport) => metrics.streamsOpened.inc({ transport }),
      logger,
    },
  )
  let router: CombinedRouter | undefined

  async function* mapsFromPeers(digest: Digest, options: { signal: AbortSignal }) {
    const peers = (await router?.findPeers(digest, { signal: options.signal })) ?? []
    for (const peer of peers) {
      if (peer.peerId === peerId) continue
      try {
        const target =
          peer.multiaddrs.length > 0
            ? peer.multiaddrs.map((m) => multiaddr(m.includes('/p2p/') ? m : `${m}/p2p/${peer.peerId}`))
            : undefined
        if (target === undefined) continue
        const signed = await client.fetchPieceMap(target, digest, { signal: options.signal })
        if (signed !== undefined) yield signed
      } catch (err) {
        if (options.signal.aborted) return
        logger.debug({ err, peer: peer.peerId, digest }, 'peer gave no piece map')
      }
    }
  }

  const maps = createPieceMapStore(
    { fromPeers: mapsFromPeers, logger },
    {
      registryUrl: config.registryUrl,
      ...(config.registryPeerId === undefined ? {} : { registryPeerId: config.registryPeerId }),
      root: join(config.dataDir, 'piece-maps'),
      timeoutMs: config.upstreamTimeoutMs,
    },
  )
  const signedMaps = { get: (digest: Digest) => maps.signed(digest) }
  const pieceServer = createPieceServer(
    {
      libp2p: node.libp2p,
      source: overrides.pieceSource?.(deps, signedMaps) ?? cachePieceSource(cache, signedMaps),
      logger,
    },
    {
      maxConcurrentUploads: config.maxConcurrentUploads,
      minConcurrentUploads: config.minConcurrentUploads,
      maxUploadsPerPiece: config.maxUploadsPerPiece,
      uploadPieceTargetMs: config.uploadPieceTargetMs,
      uploadTurnHoldMs: config.uploadTurnHoldMs,
      uploadBytesPerSecond: config.uploadRateBytesPerSec,
      ...(laneHost === undefined ? {} : { lane: { host: laneHost, port: config.p2pLanePort } }),
      onPieceSent: (event) => metrics.uploadedBytes.inc(event.bytes),
      // Counted when a send starts, so a first copy's sends already running count
      // against FIRST_COPY_UPLOADS (as in the simulator).
      onPieceStarting: (event) => source.uploaded(event.digest, event.index),
      // First copies from the seed go out beyond the upload cap (swarm-source.ts).
      priority: { isPriority: (digest, index) => source.isFirstCopy(digest, index) },
    },
  )
  const metrics = createSwarmMetrics(deps.metrics, () => pieceServer.activeUploads())

  function holding(digest: Digest): HoldingState | undefined {
    const stat = cache.stat(digest)
    if (stat === undefined || stat.pieceCount === 0) return undefined
    const bitfield = stat.complete ? undefined : cache.bitfield(digest)
    return {
      digest,
      pieceCount: stat.pieceCount,
      piecesHeld: stat.complete ? stat.pieceCount : stat.piecesHeld,
      ...(bitfield === undefined ? {} : { bitfield }),
    }
  }

  const tracker =
    config.trackerUrl === undefined
      ? undefined
      : createTrackerRouter(
          {
            client: createTrackerClient({ url: config.trackerUrl, timeoutMs: config.trackerTimeoutMs }),
            self: { peerId, multiaddrs: () => node.getMultiaddrs().map((m) => m.toString()) },
            holding,
            uploadLoad: () => pieceServer.activeUploads(),
            logger,
          },
          {
            ...(config.zone === undefined ? {} : { zone: config.zone }),
            ...(config.rack === undefined ? {} : { rack: config.rack }),
          },
        )
  const dht = createDhtRouter(
    { node, seedPeerId: () => maps.seedPeerId(), logger },
    { timeoutMs: config.dhtTimeoutMs },
  )
  router = createCombinedRouter(
    {
      ...(tracker ? { tracker } : {}),
      dht,
      logger,
      onFallback: () => metrics.dhtFallbacks.inc(),
      onTrackerPeers: (peers) => {
        // A node with few connections dials a few peers the tracker named, so its DHT
        // routing table is ready should the tracker go away.
        if (node.libp2p.getConnections().length >= DHT_MIN_CONNECTIONS) return
        for (const peer of peers.slice(0, DHT_MIN_CONNECTIONS)) {
          const addrs = peer.multiaddrs.filter((m) => m.includes('/p2p/'))
          if (addrs.length === 0) continue
          void node.libp2p
            .dial(
              addrs.map((m) => multiaddr(m)),
              { signal: AbortSignal.timeout(5_000) },
            )
            .catch(() => {})
        }
      },
    },
    { dhtProvideDelayMs: config.dhtProvideDelayMs, dhtProvidersPerBlob: config.dhtProvidersPerBlob },
  )
  const combined = router
  const source = createSwarmBlobSource(
    { cache, client, maps, router: combined, selfPeerId: peerId, metrics, logger },
    {
      stallTimeoutMs: config.swarmStallTimeoutMs,
      minBlobBytes: config.swarmMinBlobBytes,
      haveRefreshMs: config.swarmHaveRefreshMs,
      maxPeers: config.swarmMaxPeers,
      startingPeers: config.swarmStartingPeers,
      maxInFlight: config.swarmMaxInFlight,
    },
  )

  /** Blobs announced with at least one piece in this process. */
  const announced = new Set<Digest>()
  const announce = (state: HoldingState | undefined): void => {
    if (state === undefined) return
    void combined.announce(state, { signal: AbortSignal.timeout(10_000) })
  }
  const onPiece = ({ digest }: { digest: Digest }): void => {
    // Peers announce as soon as they hold one piece: in-flight seeding.
    if (announced.has(digest)) return
    announced.add(digest)
    announce(holding(digest))
  }
  const onComplete = ({ digest }: { digest: Digest }): void => {
    announced.add(digest)
    const state = holding(digest)
    if (state) announce({ ...state, event: 'completed' })
  }
  const onGone = ({ digest }: { digest: Digest }): void => {
    announced.delete(digest)
    announce({ digest, pieceCount: 1, piecesHeld: 0, event: 'stopped' })
  }

  const onConnectionOpen = (evt: CustomEvent<Connection>): void => {
    metrics.connectionsOpened.inc({ direction: evt.detail.direction })
  }
  const onConnectionClose = (evt: CustomEvent<Connection>): void => {
    const c = evt.detail
    metrics.connectionsClosed.inc({ direction: c.direction })
    logger.debug(
      {
        peer: c.remotePeer.toString(),
        direction: c.direction,
        status: c.status,
        ageMs: Date.now() - c.timeline.open,
      },
      'p2p connection closed',
    )
  }

  async function bootstrapFromSeed(): Promise<void> {
    const info = await maps.seedInfo({ signal: AbortSignal.timeout(10_000) })
    for (const addr of info?.multiaddrs ?? []) {
      try {
        const target = multiaddr(addr.includes('/p2p/') ? addr : `${addr}/p2p/${info!.peerId}`)
        await node.libp2p.dial(target, { signal: AbortSignal.timeout(10_000) })
        return
      } catch (err) {
        logger.debug({ err, addr }, 'could not dial the seed')
      }
    }
  }

  let started = false
  let stopping: Promise<void> | undefined
  return {
    node,
    peerId,
    router: combined,
    maps,
    source,
    stat: (ref, options) => source.stat(ref, options),
    open: (ref, range, options) => source.open(ref, range, options),

    async start() {
      if (started) return
      started = true
      await maps.start()
      node.libp2p.addEventListener('connection:open', onConnectionOpen)
      node.libp2p.addEventListener('connection:close', onConnectionClose)
      await node.start()
      await pieceServer.start()
      cache.events.on('piece', onPiece)
      cache.events.on('complete', onComplete)
      cache.events.on('evicted', onGone)
      cache.events.on('discarded', onGone)
      // The DHT starts from the seed's addresses; what the cache already holds is announced.
      void bootstrapFromSeed().catch(() => {})
      for (const blob of cache.list()) {
        if (blob.piecesHeld === 0 && !blob.complete) continue
        announced.add(blob.digest)
        announce(holding(blob.digest))
      }
      logger.info({ peerId, multiaddrs: node.getMultiaddrs().map((m) => m.toString()) }, 'swarm started')
    },

    stop() {
      stopping ??= (async () => {
        if (!started) return
        cache.events.off('piece', onPiece)
        cache.events.off('complete', onComplete)
        cache.events.off('evicted', onGone)
        cache.events.off('discarded', onGone)
        await source.stop()
        await combined.stop?.()
        client.close()
        await hasher.close()
        await pieceServer.stop()
        await node.stop()
        node.libp2p.removeEventListener('connection:open', onConnectionOpen)
        node.libp2p.removeEventListener('connection:close', onConnectionClose)
      })()
      return stopping
    },
  }
}
