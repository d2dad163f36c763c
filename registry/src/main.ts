/**
 * The registry's composition root: the only place that knows the concrete classes.
 * It builds the storage driver and the storage-backed registry, wraps it in the
 * pull-through cache when upstreams are configured, puts the HTTP app on top, and
 * runs garbage collection periodically.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type Koa from 'koa'
import type { Logger } from 'pino'
import { Counter, Histogram, type Registry } from 'prom-client'
import type { RegistryConfig } from './config.js'
import { createRegistryApp } from './http/app.js'
import { createPreheatClient } from '../../protocol/src/tracker-client/preheat.js'
import {
  createObservedRegistry,
  createPreheatRules,
  createWebhookNotifier,
  parsePreheatRule,
} from './events/index.js'
import { createPullThroughRegistry } from './proxy/index.js'
import { createSeeder, type Seeder } from './seeder/index.js'
import type { RegistryService } from './service.js'
import { createFilesystemDriver, createMemoryDriver, createStorageRegistry } from './storage/index.js'

/** The collaborators the registry node needs from its host process. */
export interface RegistryNodeComponents {
  logger: Logger
  /** Where the registry's metrics are registered; the host serves it at /metrics. */
  metrics: Registry
}

/** A composed registry: its HTTP app (serving /v2/), its service and its lifecycle. */
export interface RegistryNode {
  app: Koa
  service: RegistryService
  /** Starts storage and the periodic garbage collection. */
  start(): Promise<void>
  /** Stops garbage collection (aborting a running pass) and storage. Safe to call twice. */
  stop(): Promise<void>
  /** Runs one garbage collection pass now, as the periodic timer does. */
  collectGarbage(options?: { signal?: AbortSignal }): Promise<void>
  /** The seed (libp2p piece server, piece maps, announces), unless seed.enabled is false. */
  seed?: Seeder
  /** Tells the node the URL it is served at (preheat rules name it to the tracker); optional. */
  setUrl?(url: string): void
}

/**
 * Composes a registry from its configuration. Nothing listens or runs until start();
 * serving `app` is the caller's business (the CLI puts it on an http.Server).
 */
export async function createRegistryNode(
  config: RegistryConfig,
  components: RegistryNodeComponents,
): Promise<RegistryNode> {
  const { logger, metrics } = components
  const driver =
    config.storageDriver === 'memory'
      ? createMemoryDriver()
      : createFilesystemDriver({ root: config.dataDir })
  // The seed's key lives beside the data (a memory registry gets a fresh one each run).
  const { enabled: seedEnabled, ...seedConfig } = config.seed
  const seed = seedEnabled
    ? await createSeeder(
        { driver, logger, metrics },
        {
          ...seedConfig,
          ...(config.storageDriver === 'filesystem' ? { keyPath: join(config.dataDir, 'seed', 'key') } : {}),
        },
      )
    : undefined
  const storage = createStorageRegistry(
    { driver, logger },
    {
      maxManifestBytes: config.maxManifestBytes,
      uploadTtlMs: config.uploadTtlMs,
      ...(seed ? { onBlobCommitted: (info) => seed.blobCommitted(info) } : {}),
    },
  )
  const inner: RegistryService =
    config.upstreams.length > 0
      ? createPullThroughRegistry(
          { local: storage, logger, metrics },
          { upstreams: config.upstreams, tagTtlMs: config.tagTtlMs },
        )
      : storage
  // Webhooks and preheat rules see pushes, pulls and deletes (registry/src/events).
  const events = config.events
  let servedUrl: string | undefined
  const webhooks =
    events.webhookUrls.length === 0
      ? undefined
      : createWebhookNotifier(
          { logger, metrics },
          {
            urls: events.webhookUrls,
            events: events.webhookEvents,
            maxAttempts: events.webhookMaxAttempts,
            initialBackoffMs: events.webhookInitialBackoffMs,
            maxBackoffMs: events.webhookMaxBackoffMs,
          },
        )
  const rules =
    events.preheatRules.length === 0 ||
    events.trackerUrl === undefined ||
    events.trackerAdminToken === undefined
      ? undefined
      : createPreheatRules(
          {
            client: createPreheatClient({ url: events.trackerUrl, token: events.trackerAdminToken }),
            ...(webhooks ? { sink: (e) => webhooks.notify(e) } : {}),
            logger,
          },
          {
            rules: events.preheatRules.map(parsePreheatRule),
            registryUrl: () => events.preheatRegistryUrl ?? servedUrl ?? `http://${config.listen}`,
          },
        )
  const service: RegistryService =
    webhooks || rules
      ? createObservedRegistry(inner, (event) => {
          webhooks?.notify(event)
          rules?.handle(event)
        })
      : inner
  const app = createRegistryApp(
    { registry: service, logger, metrics, ...(seed ? { routes: seed.routes } : {}) },
    { maxManifestBytes: config.maxManifestBytes },
  )

  const gcRuns = new Counter({
    name: 'shoal_registry_gc_runs_total',
    help: 'Garbage collection passes, by result (ok or error)',
    labelNames: ['result'] as const,
    registers: [metrics],
  })
  const gcDuration = new Histogram({
    name: 'shoal_registry_gc_duration_seconds',
    help: 'Duration of garbage collection passes',
    buckets: [0.01, 0.1, 1, 10, 60, 600],
    registers: [metrics],
  })

  const gcBlobsDeleted = new Counter({
    name: 'shoal_registry_gc_blobs_deleted_total',
    help: 'Blobs removed by garbage collection',
    registers: [metrics],
  })
  const gcBytesFreed = new Counter({
    name: 'shoal_registry_gc_bytes_freed_total',
    help: 'Bytes of blob content removed by garbage collection',
    registers: [metrics],
  })

  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> | undefined
  let stopController: AbortController | undefined
  let started = false
  let stopped: Promise<void> | undefined

  async function collectGarbage(options: { signal?: AbortSignal } = {}): Promise<void> {
    // One pass at a time: a timer tick during a long pass joins it rather than starting another.
    running ??= (async () => {
      const endTimer = gcDuration.startTimer()
      const signals = [options.signal, stopController?.signal].filter(
        (s): s is AbortSignal => s !== undefined,
      )
      try {
        const report = await storage.collectGarbage({
          graceMs: config.gcGraceMs,
          ...(signals.length > 0 ? { signal: AbortSignal.any(signals) } : {}),
        })
        gcRuns.inc({ result: 'ok' })
        gcBlobsDeleted.inc(report.blobsDeleted)
        gcBytesFreed.inc(report.bytesFreed)
        logger.info({ report }, 'garbage collection finished')
      } catch (err) {
        gcRuns.inc({ result: 'error' })
        throw err
      } finally {
        endTimer()
        running = undefined
      }
    })()
    return running
  }

  return {
    app,
    service,
    setUrl(url: string) {
      servedUrl = url
    },
    collectGarbage,
    ...(seed ? { seed } : {}),
    async start() {
      if (started) return
      started = true
      stopController = new AbortController()
      // Create the data folder up front so a bad path fails at start, not at the first push.
      if (config.storageDriver === 'filesystem') await mkdir(config.dataDir, { recursive: true })
      await storage.start()
      await seed?.start()
      if (config.gcIntervalMs > 0) {
        timer = setInterval(() => {
          collectGarbage().catch((err: unknown) => {
            if (!stopController?.signal.aborted) logger.error({ err }, 'garbage collection failed')
          })
        }, config.gcIntervalMs)
        timer.unref()
      }
    },
    stop() {
      stopped ??= (async () => {
        if (timer) clearInterval(timer)
        stopController?.abort()
        await running?.catch(() => {})
        await rules?.stop()
        await webhooks?.stop()
        await seed?.stop()
        if (started) await storage.stop()
      })()
      return stopped
    },
  }
}
