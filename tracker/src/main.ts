/**
 * The tracker's composition root: the only place that picks concrete classes (memory
 * or Redis store) from the configuration. The CLI serves `app` on an http.Server.
 */
import type Koa from 'koa'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { TrackerConfig } from './config.js'
import { createTrackerApp } from './http/app.js'
import { createTrackerMetrics } from './metrics.js'
import type { PeerStore } from './peer-store/index.js'
import { createMemoryPeerStore } from './peer-store/memory.js'
import { createRedisPeerStore } from './peer-store/redis.js'
import { createTracker, type Tracker } from './tracker.js'

/** A composed tracker: its Koa app, the service behind it and its lifecycle. */
export interface TrackerNode {
  app: Koa
  tracker: Tracker
  store: PeerStore
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
  components: { logger: Logger; metrics: Registry; now?: () => number; random?: () => number },
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
      badPeerReporters: config.badPeerReporters,
      badPeerBanMs: config.badPeerBanMs,
      seedPeerIds: config.seedPeerIds,
    },
  )
  const app = createTrackerApp({ tracker, logger, metrics })
  let started = false
  return {
    app,
    tracker,
    store,
    async start() {
      if (started) return
      await store.start()
      started = true
      logger.info({ store: config.store.type }, 'tracker started')
    },
    async stop() {
      if (!started) return
      started = false
      await store.stop()
    },
  }
}
