/**
 * The tracker's composition root: the only place that picks concrete classes (memory
 * or Redis store) from the configuration. The CLI serves `app` on an http.Server.
 */
import { join } from 'node:path'
import type Koa from 'koa'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { TrackerConfig } from './config.js'
import { createTrackerApp } from './http/app.js'
import { createTrackerMetrics } from './metrics.js'
import type { PeerStore } from './peer-store/index.js'
import { createMemoryPeerStore } from './peer-store/memory.js'
import { createRedisPeerStore } from './peer-store/redis.js'
import { liveRoutes } from './live/routes.js'
import { createMemoryPreheatStore } from './preheat/memory-store.js'
import { createRedisPreheatStore } from './preheat/redis-store.js'
import { preheatRoutes } from './preheat/routes.js'
import { createPreheatService, type PreheatService } from './preheat/service.js'
import { createTracker, type Tracker } from './tracker.js'

/** A composed tracker: its Koa app, the service behind it and its lifecycle. */
export interface TrackerNode {
  app: Koa
  tracker: Tracker
  store: PeerStore
  /** Preheat jobs and agent heartbeats. */
  preheat: PreheatService
  /** Opens the store (connects to Redis). Throws when Redis cannot be reached. */
  start(): Promise<void>
  /** Closes the store; safe to call twice. */
  stop(): Promise<void>
}

/**
 * Composes a tracker from its configuration (see parseTrackerConfig). Metrics are
 * registered on `components.metrics`. Nothing is opened until start().
 */
export async function createTrackerNode(
  config: TrackerConfig,
  components: {
    logger: Logger
    metrics: Registry
    now?: () => number
    random?: () => number
    /** fetch used to resolve preheat images. */
    fetch?: typeof fetch
  },
): Promise<TrackerNode> {
  const { logger } = components
  const store =
    config.store.type === 'redis'
      ? createRedisPeerStore({
          url: config.store.redisUrl!,
          keyPrefix: config.store.keyPrefix,
          keyTtlMs: Math.max(10 * 60_000, config.peerTtlMs * 2, config.badPeerBanMs),
        })
      : createMemoryPeerStore({ sweepIntervalMs: Math.max(1000, config.peerTtlMs), now: components.now })
  const metrics = createTrackerMetrics({ registry: components.metrics, store, logger, now: components.now })
  const tracker = createTracker(
    { store, logger, events: metrics.events, now: components.now, random: components.random },
    {
      announceIntervalMs: config.announceIntervalMs,
      peerTtlMs: config.peerTtlMs,
      maxPeersPerAnswer: config.maxPeersPerAnswer,
      originSlotsPerSwarm: config.originSlotsPerSwarm,
      exclusiveOriginSlots: config.exclusiveOriginSlots,
      badPeerReporters: config.badPeerReporters,
      badPeerBanMs: config.badPeerBanMs,
      seedPeerIds: config.seedPeerIds,
    },
  )
  const preheatStore =
    config.store.type === 'redis'
      ? createRedisPreheatStore({ url: config.store.redisUrl!, keyPrefix: config.store.keyPrefix })
      : createMemoryPreheatStore(
          config.dataDir === undefined ? {} : { file: join(config.dataDir, 'preheat-jobs.json') },
        )
  const preheat = createPreheatService(
    {
      store: preheatStore,
      logger,
      metrics: components.metrics,
      ...(components.now ? { now: components.now } : {}),
      ...(components.random ? { random: components.random } : {}),
      ...(components.fetch ? { fetch: components.fetch } : {}),
    },
    {
      maxConcurrentJobs: config.preheat.maxConcurrentJobs,
      heartbeatIntervalMs: config.preheat.heartbeatIntervalMs,
      ...(config.preheat.agentTtlMs === undefined ? {} : { agentTtlMs: config.preheat.agentTtlMs }),
      jobTimeoutMs: config.preheat.jobTimeoutMs,
      ...(config.preheat.seedRegistryUrl === undefined
        ? {}
        : { seedRegistryUrl: config.preheat.seedRegistryUrl }),
      retainFinishedJobs: config.preheat.retainFinishedJobs,
    },
  )
  const app = createTrackerApp({
    tracker,
    logger,
    metrics,
    extraRoutes: [
      ...preheatRoutes(preheat, {
        ...(config.preheat.adminToken === undefined ? {} : { adminToken: config.preheat.adminToken }),
      }),
      ...liveRoutes({ tracker, preheat }),
    ],
    tasksFor: (peerId) => preheat.tasksFor(peerId),
  })
  let started = false
  return {
    app,
    tracker,
    store,
    preheat,
    async start() {
      if (started) return
      await store.start()
      try {
        await preheatStore.start()
        await preheat.start()
      } catch (err) {
        await store.stop()
        throw err
      }
      started = true
      logger.info({ store: config.store.type }, 'tracker started')
    },
    async stop() {
      if (!started) return
      started = false
      await preheat.stop()
      await preheatStore.stop()
      await store.stop()
    },
  }
}
