/**
 * The peer agent's composition root, the only place that knows the concrete classes:
 * the blob cache and the manifest cache under dataDir, the upstream resolver (seed
 * registry or configured upstreams), the private-repository gate, the layered blob
 * source (cache, then the swarm when one is plugged in, then the upstream) and the
 * mirror app on top.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type Koa from 'koa'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { type BlobCache, createBlobCache } from './cache/index.js'
import type { AgentConfig } from './config.js'
import { createBlobStats, createPreheatWorker, type PreheatWorker } from './preheat/index.js'
import {
  type BlobSource,
  createCachingBlobSource,
  createCachingManifestSource,
  createManifestCache,
  createMirrorApp,
} from './mirror/index.js'
import {
  createAccessChecker,
  createUpstreamBlobSource,
  createUpstreamManifestSource,
  createUpstreamResolver,
  type UpstreamResolver,
} from './upstream/index.js'

/** A swarm blob source with the lifecycle the agent drives. */
export interface SwarmComponent extends BlobSource {
  start?(): Promise<void>
  stop?(): Promise<void>
}

/** What a swarm factory is handed by the agent. */
export interface SwarmDeps {
  config: AgentConfig
  cache: BlobCache
  resolver: UpstreamResolver
  logger: Logger
  metrics: Registry
}

/**
 * Builds the P2P swarm source (the piece scheduler over libp2p, tracker and DHT). The
 * agent asks it for blobs the cache does not hold before going to the upstream.
 */
export type SwarmFactory = (deps: SwarmDeps) => SwarmComponent | Promise<SwarmComponent>

/** The collaborators the agent needs from its host process. */
export interface AgentNodeComponents {
  logger: Logger
  /** Where the agent's metrics are registered; the host serves it at /metrics. */
  metrics: Registry
  /**
   * The swarm slot. Absent, the agent is a caching mirror that fetches every blob it
   * does not hold from the seed or the upstream itself.
   */
  swarm?: SwarmFactory
}

/** The default swarm: libp2p, tracker and DHT routing, pieces into the cache (peer-agent/src/swarm). */
const defaultSwarm: SwarmFactory = async (deps) => {
  const { createAgentSwarm } = await import('./swarm/index.js')
  return createAgentSwarm(deps)
}

/** A composed agent: its mirror app and its lifecycle. */
export interface AgentNode {
  app: Koa
  /** The blob cache (for announces, tests and admin). */
  cache: BlobCache
  /** The swarm, when the agent runs one. */
  swarm: SwarmComponent | undefined
  /** Creates the data folders, loads the caches and starts the swarm. */
  start(): Promise<void>
  /** Stops the swarm and the cache. Safe to call twice. */
  stop(): Promise<void>
  /** Tells the agent where its mirror endpoint is bound (host:port), for heartbeats. */
  setMirrorAddress(address: string): void
}

/**
 * Composes an agent from its configuration. Nothing runs until start(); serving `app`
 * is the caller's business (the CLI puts it on an http.Server with /metrics and /healthz).
 */
export async function createAgentNode(
  config: AgentConfig,
  components: AgentNodeComponents,
): Promise<AgentNode> {
  const { logger, metrics } = components
  const cache = createBlobCache(
    { logger },
    { root: join(config.dataDir, 'blobs'), quotaBytes: config.cacheQuotaBytes },
  )
  const manifestCache = createManifestCache({ root: join(config.dataDir, 'manifests') })
  const resolver = createUpstreamResolver({
    seedUrl: config.registryUrl,
    upstreams: config.upstreams,
    seedNamePrefix: config.seedNamePrefix,
  })
  const upstreamInit = { timeoutMs: config.upstreamTimeoutMs }
  // The swarm runs when asked for, or by default when there is a tracker to coordinate it.
  const swarmFactory: SwarmFactory | undefined =
    components.swarm ?? ((config.swarm ?? config.trackerUrl !== undefined) ? defaultSwarm : undefined)
  const swarm = swarmFactory ? await swarmFactory({ config, cache, resolver, logger, metrics }) : undefined
  // Bytes per blob by source, for the tracker's live view (reported in heartbeats).
  const blobStats = createBlobStats()
  const blobs = createCachingBlobSource({
    cache,
    upstream: blobStats.wrap(createUpstreamBlobSource({ resolver }, upstreamInit)),
    ...(swarm === undefined ? {} : { swarm: blobStats.wrap(swarm) }),
    logger,
    metrics,
  })
  const manifests = createCachingManifestSource({
    cache: manifestCache,
    upstream: createUpstreamManifestSource({ resolver }, upstreamInit),
    logger,
  })
  const access = createAccessChecker(
    { resolver },
    { ttlMs: config.authCacheTtlMs, timeoutMs: config.upstreamTimeoutMs },
  )
  const app = createMirrorApp({ manifests, blobs, access, logger, metrics })
  // Heartbeats and preheat tasks from the tracker (docs/adr/0005), for a swarm with a peer id.
  const peerId = (swarm as { peerId?: unknown } | undefined)?.peerId
  // The configured listen address until the host reports the bound one (port 0).
  let mirrorAddress = config.listen
  const preheat: PreheatWorker | undefined =
    config.trackerUrl === undefined || typeof peerId !== 'string'
      ? undefined
      : await (async () => {
          const { createTrackerClient } = await import('../../protocol/src/tracker-client/index.js')
          const node = (swarm as { node?: { getMultiaddrs(): Array<{ toString(): string }> } }).node
          return createPreheatWorker(
            {
              client: createTrackerClient({ url: config.trackerUrl!, timeoutMs: config.trackerTimeoutMs }),
              blobs,
              cache,
              metrics,
              blobStats,
              logger,
            },
            {
              peerId,
              multiaddrs: () => node?.getMultiaddrs().map((m) => m.toString()) ?? [],
              address: () => mirrorAddress,
              ...(config.zone === undefined ? {} : { zone: config.zone }),
              ...(config.rack === undefined ? {} : { rack: config.rack }),
            },
          )
        })()

  let started = false
  let stopped: Promise<void> | undefined
  return {
    app,
    cache,
    swarm,
    setMirrorAddress(address) {
      mirrorAddress = address
    },
    async start() {
      if (started) return
      started = true
      await mkdir(config.dataDir, { recursive: true })
      await Promise.all([cache.start(), manifestCache.start()])
      await swarm?.start?.()
      await preheat?.start()
      logger.info(
        {
          registryUrl: config.registryUrl,
          upstreams: config.upstreams.map((u) => ({ host: u.host, url: new URL(u.url).origin })),
          swarm: swarm !== undefined,
        },
        'agent started',
      )
    },
    stop() {
      stopped ??= (async () => {
        if (!started) return
        await preheat?.stop()
        await swarm?.stop?.()
        await cache.stop()
      })()
      return stopped
    },
  }
}
