/**
 * The agent's preheat worker: sends the tracker a heartbeat every interval the tracker
 * asks for, idle or not (stats for the live view: cache use, upload/download rates,
 * bytes by source), and works on the preheat tasks the answers carry. A task's blob is
 * read through the agent's layered blob source (cache, then the swarm, then the
 * upstream), drained, so it lands in the cache and stays seeded like any other blob.
 * The next heartbeat lists the digests held (the tracker marks the target done) or the
 * tasks that failed after a few attempts. A task that disappears from the answers
 * (job cancelled, or done) is aborted.
 */
import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import type { Digest } from '../../../protocol/src/index.js'
import type { HeartbeatRequest, PreheatTask } from '../../../protocol/src/tracker-api.js'
import type { TrackerClient } from '../../../protocol/src/tracker-client/index.js'
import type { BlobCache } from '../cache/index.js'
import type { BlobSource } from '../mirror/sources.js'
import type { BlobStats } from './blob-stats.js'

/** Collaborators of the preheat worker. */
export interface PreheatWorkerComponents {
  client: Pick<TrackerClient, 'heartbeat'>
  /** The layered blob source the mirror serves from. */
  blobs: BlobSource
  cache: Pick<BlobCache, 'has' | 'usage'>
  /** The agent's metrics: read for the stats, and the worker's own counters go there. */
  metrics: Registry
  /** Per-blob byte counters reported in heartbeats (live view). */
  blobStats?: Pick<BlobStats, 'snapshot'>
  logger?: Logger
}

/** Options of the preheat worker. */
export interface PreheatWorkerInit {
  peerId: string
  multiaddrs(): string[]
  zone?: string
  rack?: string
  /**
   * The mirror endpoint's address, shown in the live view; read at every heartbeat,
   * since the endpoint may be bound (port 0) only after the worker starts.
   */
  address?: () => string | undefined
  /** Tasks fetched at once. @default 2 */
  maxConcurrentTasks?: number
  /** Attempts per task before it is reported failed. @default 3 */
  maxAttempts?: number
  /** Heartbeat interval until the tracker gives one, and after a failed heartbeat. @default 5000 */
  defaultIntervalMs?: number
}

/** The running worker. */
export interface PreheatWorker {
  /** Sends a heartbeat now (tests; the worker beats on its own). */
  beat(): Promise<void>
  /** Tasks being fetched now. */
  active(): PreheatTask[]
  start(): Promise<void>
  stop(): Promise<void>
}

const key = (t: { jobId: string; digest: string }) => `${t.jobId}/${t.digest}`

/** Creates the preheat worker (see the file comment). */
export function createPreheatWorker(
  components: PreheatWorkerComponents,
  init: PreheatWorkerInit,
): PreheatWorker {
  const { client, blobs, cache, metrics, logger } = components
  const maxConcurrent = init.maxConcurrentTasks ?? 2
  const maxAttempts = init.maxAttempts ?? 3
  let intervalMs = init.defaultIntervalMs ?? 5000
  const running = new Map<string, { task: PreheatTask; ac: AbortController }>()
  const queued = new Map<string, PreheatTask>()
  /** Digests of tasks received, to report as held (bounded, oldest dropped). */
  const known = new Set<Digest>()
  const failed = new Map<string, { jobId: string; digest: Digest; reason: string }>()
  /** Tasks finished here, until the tracker stops handing them out. */
  const completed = new Set<string>()
  let timer: ReturnType<typeof setTimeout> | undefined
  let stopped = true
  let beating: Promise<void> | undefined
  let again = false
  let last: { at: number; up: number; down: number } | undefined

  const tasksCounter =
    (metrics.getSingleMetric('shoal_agent_preheat_tasks_total') as Counter<'result'> | undefined) ??
    new Counter({
      name: 'shoal_agent_preheat_tasks_total',
      help: 'Preheat tasks finished, by result (done, failed, cancelled).',
      labelNames: ['result'],
      registers: [metrics],
    })

  async function sum(name: string, labels?: Record<string, string>): Promise<number> {
    const m = await metrics.getSingleMetric(name)?.get()
    let total = 0
    for (const v of m?.values ?? []) {
      if (labels === undefined || Object.entries(labels).every(([k, x]) => v.labels[k] === x))
        total += v.value
    }
    return total
  }

  async function stats(): Promise<Partial<HeartbeatRequest>> {
    const peer = await sum('shoal_agent_swarm_piece_bytes_total', { source: 'peer' })
    const seed = await sum('shoal_agent_swarm_piece_bytes_total', { source: 'seed' })
    const upstream = await sum('shoal_agent_blob_bytes_total', { source: 'upstream' })
    const cached = await sum('shoal_agent_blob_bytes_total', { source: 'cache' })
    const uploaded = await sum('shoal_agent_swarm_uploaded_bytes_total')
    const at = Date.now()
    const down = peer + seed + upstream
    let rates = {}
    if (last !== undefined && at > last.at) {
      const seconds = (at - last.at) / 1000
      rates = {
        uploadBytesPerSec: Math.max(0, (uploaded - last.up) / seconds),
        downloadBytesPerSec: Math.max(0, (down - last.down) / seconds),
      }
    }
    last = { at, up: uploaded, down }
    const usage = cache.usage()
    return {
      cacheUsedBytes: usage.usedBytes,
      cacheQuotaBytes: usage.quotaBytes,
      ...rates,
      bytesBySource: { peer, seed, upstream, cache: cached, uploaded },
      ...(components.blobStats ? { blobs: components.blobStats.snapshot(64) } : {}),
    }
  }

  function schedule(delayMs: number): void {
    clearTimeout(timer)
    if (stopped) return
    timer = setTimeout(() => {
      timer = undefined
      void beat()
    }, delayMs)
    timer.unref?.()
  }

  async function runTask(task: PreheatTask, signal: AbortSignal): Promise<void> {
    let lastError: unknown
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      if (cache.has(task.digest)) return
      try {
        const opened = await blobs.open(
          { host: task.host, repository: task.repository, digest: task.digest },
          undefined,
          { signal },
        )
        const onAbort = () => opened.stream.destroy(signal.reason as Error)
        signal.addEventListener('abort', onAbort, { once: true })
        try {
          for await (const _ of opened.stream) {
            signal.throwIfAborted()
          }
        } finally {
          signal.removeEventListener('abort', onAbort)
        }
        return
      } catch (err) {
        if (signal.aborted) throw err
        lastError = err
        logger?.debug({ err, digest: task.digest, attempt }, 'preheat fetch failed')
        await new Promise((r) => setTimeout(r, Math.min(2000, 200 * 2 ** attempt)))
      }
    }
    throw lastError
  }

  function pump(): void {
    for (const [k, task] of queued) {
      if (running.size >= maxConcurrent || stopped) return
      queued.delete(k)
      const ac = new AbortController()
      running.set(k, { task, ac })
      void runTask(task, ac.signal)
        .then(
          () => {
            completed.add(k)
            known.add(task.digest)
            tasksCounter.inc({ result: 'done' })
            logger?.debug({ job: task.jobId, digest: task.digest }, 'preheat task done')
          },
          (err: unknown) => {
            if (ac.signal.aborted) {
              tasksCounter.inc({ result: 'cancelled' })
              return
            }
            tasksCounter.inc({ result: 'failed' })
            const reason = err instanceof Error ? err.message : String(err)
            failed.set(k, { jobId: task.jobId, digest: task.digest, reason: reason.slice(0, 500) })
            logger?.warn({ job: task.jobId, digest: task.digest, reason }, 'preheat task failed')
          },
        )
        .finally(() => {
          if (running.get(k)?.ac === ac) running.delete(k)
          // Tell the tracker at once, and take the next task.
          if (!stopped) void beat()
          pump()
        })
    }
  }

  function reconcile(tasks: PreheatTask[]): void {
    const wanted = new Map(tasks.map((t) => [key(t), t]))
    for (const [k, r] of running) {
      if (!wanted.has(k)) {
        r.ac.abort(new Error('preheat task withdrawn'))
        running.delete(k)
      }
    }
    for (const k of queued.keys()) if (!wanted.has(k)) queued.delete(k)
    for (const k of completed) if (!wanted.has(k)) completed.delete(k)
    for (const [k, t] of wanted) {
      known.add(t.digest)
      if (known.size > 1024) known.delete(known.values().next().value as Digest)
      // Held already (fetched, or a task the tracker has not yet seen reported): nothing to do.
      if (running.has(k) || failed.has(k) || completed.has(k) || cache.has(t.digest)) continue
      queued.set(k, t)
    }
    pump()
  }

  async function beatOnce(): Promise<void> {
    const held = [...known].filter((d) => cache.has(d))
    const reports = [...failed.values()].slice(0, 64)
    const address = init.address?.()
    try {
      const answer = await client.heartbeat(
        {
          peerId: init.peerId,
          multiaddrs: init.multiaddrs().slice(0, 16),
          ...(init.zone === undefined ? {} : { zone: init.zone }),
          ...(init.rack === undefined ? {} : { rack: init.rack }),
          ...(address === undefined ? {} : { address }),
          ...(await stats()),
          ...(held.length > 0 ? { held: held.slice(-1024) } : {}),
          ...(reports.length > 0 ? { failed: reports } : {}),
        },
        { signal: AbortSignal.timeout(10_000) },
      )
      // Reported failures are the tracker's now; a task it hands out again is retried.
      for (const r of reports) {
        const k = key(r)
        if (!answer.tasks.some((t) => key(t) === k)) failed.delete(k)
      }
      intervalMs = Math.max(answer.intervalMs, 50)
      if (!stopped) reconcile(answer.tasks)
    } catch (err) {
      logger?.debug({ err }, 'heartbeat failed')
    }
  }

  async function beat(): Promise<void> {
    if (beating !== undefined) {
      again = true
      return beating
    }
    beating = (async () => {
      do {
        again = false
        await beatOnce()
      } while (again && !stopped)
    })().finally(() => {
      beating = undefined
      schedule(intervalMs)
    })
    return beating
  }

  return {
    beat,
    active: () => [...running.values()].map((r) => r.task),
    async start() {
      if (!stopped) return
      stopped = false
      void beat()
    },
    async stop() {
      if (stopped) return
      stopped = true
      clearTimeout(timer)
      for (const r of running.values()) r.ac.abort(new Error('agent stopping'))
      running.clear()
      queued.clear()
      await beating
      clearTimeout(timer)
    },
  }
}
