/**
 * Preheat jobs in the tracker. A job is created pending; a background loop takes up to
 * `maxConcurrentJobs` of them at a time: it resolves the image (resolve.ts, with the
 * job's credentials, which are kept in memory only and never stored), picks the targets
 * from the agents that sent heartbeats recently (all, a count, a percentage, a zone) or
 * the seed registry, and marks the job running. Agents are handed their tasks in their
 * heartbeat (and announce) answers and report the blobs they hold in later heartbeats;
 * a target is done when it holds every blob of the job. The seed target is driven by
 * the tracker itself: it reads each blob through the seed registry (whose pull-through
 * then holds it). Jobs end succeeded, failed (with a reason), or cancelled.
 */
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { Digest } from '../../../protocol/src/index.js'
import { DecodeError, JobUnknownError } from '../../../protocol/src/index.js'
import {
  formatScope,
  isFinalJobState,
  parseImageReference,
  parseScope,
  type PreheatCreateRequest,
  type PreheatJob,
  type PreheatScope,
  type PreheatTarget,
} from '../../../protocol/src/preheat-api.js'
import { createRegistryClient } from '../../../protocol/src/registry-client/index.js'
import type { HeartbeatRequest, HeartbeatResponse, PreheatTask } from '../../../protocol/src/tracker-api.js'
import { MAX_TASKS_PER_ANSWER } from '../../../protocol/src/tracker-api.js'
import { ResolveError, resolveImage } from './resolve.js'
import type { AgentRecord, PreheatStore } from './store.js'

/** Collaborators of the preheat service. */
export interface PreheatServiceComponents {
  store: PreheatStore
  logger?: Logger
  metrics?: Registry
  now?: () => number
  random?: () => number
  fetch?: typeof fetch
}

/** Options of the preheat service. */
export interface PreheatServiceInit {
  /** Jobs resolved or running at once. @default 4 */
  maxConcurrentJobs?: number
  /** How often agents send heartbeats, in milliseconds. @default 5000 */
  heartbeatIntervalMs?: number
  /** An agent silent for this long is gone (its targets fail). @default max(3 heartbeats, 15 s) */
  agentTtlMs?: number
  /** A running job not finished after this long fails. @default 1800000 */
  jobTimeoutMs?: number
  /** How often the loop advances jobs. @default 500 */
  tickIntervalMs?: number
  /** The seed registry's URL, for scope `seed`; absent, the image's own registry is the seed. */
  seedRegistryUrl?: string
  /** Finished jobs kept; older ones are deleted. @default 200 */
  retainFinishedJobs?: number
}

/** The preheat service. */
export interface PreheatService {
  create(request: PreheatCreateRequest): Promise<PreheatJob>
  list(): Promise<PreheatJob[]>
  /** Throws JobUnknownError. */
  get(id: string): Promise<PreheatJob>
  /** Cancels a job that has not finished; throws JobUnknownError. */
  cancel(id: string): Promise<PreheatJob>
  /** Records an agent's heartbeat and returns its tasks. */
  heartbeat(request: HeartbeatRequest): Promise<HeartbeatResponse>
  /** The tasks of an agent (for announce answers). */
  tasksFor(peerId: string): Promise<PreheatTask[]>
  /** Agents that sent a heartbeat recently. */
  agents(): Promise<AgentRecord[]>
  /** Advances every job once (the loop calls it; tests may too). */
  tick(): Promise<void>
  start(): Promise<void>
  stop(): Promise<void>
}

function loopbackHost(host: string): boolean {
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.split(':')[0]!
  return name === 'localhost' || name === '::1' || /^127\./.test(name)
}

/** Creates the preheat service (see the file comment). */
export function createPreheatService(
  components: PreheatServiceComponents,
  init: PreheatServiceInit = {},
): PreheatService {
  const { store, logger } = components
  const now = components.now ?? Date.now
  const random = components.random ?? Math.random
  const maxConcurrent = init.maxConcurrentJobs ?? 4
  const heartbeatIntervalMs = init.heartbeatIntervalMs ?? 5000
  const agentTtlMs = init.agentTtlMs ?? Math.max(3 * heartbeatIntervalMs, 15_000)
  const jobTimeoutMs = init.jobTimeoutMs ?? 30 * 60_000
  const tickIntervalMs = init.tickIntervalMs ?? 500
  const retain = init.retainFinishedJobs ?? 200
  /** Credentials of jobs not yet resolved, by job id (never stored). */
  const credentials = new Map<string, Pick<PreheatCreateRequest, 'username' | 'password' | 'token'>>()
  /** Jobs whose resolution or seed pull runs in this process. */
  const working = new Map<string, AbortController>()
  let lock: Promise<unknown> = Promise.resolve()
  let timer: ReturnType<typeof setInterval> | undefined
  let ticking: Promise<void> | undefined
  /** When this process started; agents get one TTL after it to beat again before their targets fail. */
  let startedAtMs = 0

  const registry = components.metrics
  const gaugeName = 'shoal_tracker_preheat_jobs'
  const jobsGauge =
    registry === undefined
      ? undefined
      : ((registry.getSingleMetric(gaugeName) as Gauge<'state'> | undefined) ??
        new Gauge({
          name: gaugeName,
          help: 'Preheat jobs by state.',
          labelNames: ['state'],
          registers: [registry],
        }))
  const finishedName = 'shoal_tracker_preheat_jobs_finished_total'
  const finished =
    registry === undefined
      ? undefined
      : ((registry.getSingleMetric(finishedName) as Counter<'state'> | undefined) ??
        new Counter({
          name: finishedName,
          help: 'Preheat jobs finished, by final state.',
          labelNames: ['state'],
          registers: [registry],
        }))
  const agentsName = 'shoal_tracker_agents'
  if (registry !== undefined && registry.getSingleMetric(agentsName) === undefined) {
    new Gauge({
      name: agentsName,
      help: 'Agents that sent a heartbeat recently.',
      registers: [registry],
      async collect() {
        this.set((await store.listAgents(now())).length)
      },
    })
  }

  /** Runs `fn` after every earlier mutation (one writer per process). */
  function locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = lock.then(fn, fn)
    lock = run.catch(() => {})
    return run
  }

  const iso = () => new Date(now()).toISOString()

  function refreshProgress(job: PreheatJob): void {
    const bytesTotal = job.blobs.reduce((s, b) => s + b.size, 0)
    const sizes = new Map(job.blobs.map((b) => [b.digest, b.size]))
    for (const t of job.targets) t.bytesDone = t.held.reduce((s, d) => s + (sizes.get(d) ?? 0), 0)
    job.progress = {
      targets: job.targets.length,
      targetsDone: job.targets.filter((t) => t.state === 'done').length,
      bytesTotal: bytesTotal * job.targets.length,
      bytesDone: job.targets.reduce((s, t) => s + t.bytesDone, 0),
    }
  }

  function finish(job: PreheatJob, state: 'succeeded' | 'failed' | 'cancelled', reason?: string): void {
    job.state = state
    if (reason !== undefined) job.reason = reason
    else delete job.reason
    job.finishedAt = iso()
    job.updatedAt = job.finishedAt
    for (const t of job.targets)
      if (t.state === 'pending') t.state = state === 'cancelled' ? 'cancelled' : 'failed'
    credentials.delete(job.id)
    working.get(job.id)?.abort(new Error(`job ${state}`))
    working.delete(job.id)
    finished?.inc({ state })
    logger?.info({ job: job.id, image: job.image, state, reason }, 'preheat job finished')
  }

  /** Ends a running job whose targets are all final. */
  function settle(job: PreheatJob): void {
    refreshProgress(job)
    if (job.state !== 'running') return
    if (job.targets.some((t) => t.state === 'pending')) return
    const failed = job.targets.filter((t) => t.state === 'failed')
    if (failed.length === 0) finish(job, 'succeeded')
    else
      finish(
        job,
        'failed',
        `${failed.length} of ${job.targets.length} targets failed; ${failed[0]!.id}: ${failed[0]!.error ?? 'failed'}`,
      )
  }

  function selectTargets(scope: PreheatScope, agents: AgentRecord[]): AgentRecord[] {
    const shuffled = agents
      .map((a) => ({ a, k: random() }))
      .sort((x, y) => x.k - y.k)
      .map((x) => x.a)
    switch (scope.type) {
      case 'all':
        return agents
      case 'zone':
        return agents.filter((a) => a.zone === scope.zone)
      case 'count':
        return shuffled.slice(0, scope.count)
      case 'percent':
        return shuffled.slice(0, Math.ceil((agents.length * scope.percent) / 100))
      default:
        return []
    }
  }

  async function resolveAndStart(id: string, signal: AbortSignal): Promise<void> {
    const job = await store.getJob(id)
    if (job === undefined || job.state !== 'pending') return
    const creds = credentials.get(id) ?? {}
    let outcome:
      | { ok: true; resolved: Awaited<ReturnType<typeof resolveImage>> }
      | { ok: false; reason: string }
    try {
      const resolved = await resolveImage(
        {
          registryUrl: job.registryUrl,
          repository: job.repository,
          reference: job.reference,
          platforms: job.platforms,
          ...creds,
        },
        { signal, ...(components.fetch ? { fetch: components.fetch } : {}) },
      )
      outcome = { ok: true, resolved }
    } catch (err) {
      if (signal.aborted) return
      outcome = {
        ok: false,
        reason:
          err instanceof ResolveError
            ? err.message
            : `could not resolve ${job.image}: ${(err as Error).message}`,
      }
    }
    const agents = outcome.ok ? await store.listAgents(now()) : []
    await locked(async () => {
      const current = await store.getJob(id)
      if (current === undefined || current.state !== 'pending') return
      if (!outcome.ok) {
        finish(current, 'failed', outcome.reason)
      } else {
        current.manifestDigest = outcome.resolved.manifestDigest
        current.blobs = outcome.resolved.blobs
        const scope = parseScope(current.scope)
        const targets: PreheatTarget[] =
          scope.type === 'seed'
            ? [{ id: 'seed', kind: 'seed', state: 'pending', held: [], bytesDone: 0 }]
            : selectTargets(scope, agents).map((a) => ({
                id: a.peerId,
                kind: 'agent' as const,
                ...(a.zone === undefined ? {} : { zone: a.zone }),
                state: 'pending' as const,
                held: [],
                bytesDone: 0,
              }))
        current.targets = targets
        current.state = 'running'
        current.startedAt = iso()
        current.updatedAt = current.startedAt
        if (targets.length === 0) finish(current, 'failed', `no agent matches scope ${current.scope}`)
        else if (current.blobs.length === 0) {
          for (const t of current.targets) t.state = 'done'
        }
        settle(current)
      }
      await store.putJob(current)
    })
    const after = await store.getJob(id)
    if (after?.state === 'running' && after.targets.some((t) => t.kind === 'seed')) {
      await pullIntoSeed(after, signal)
    }
  }

  /** Reads every blob of the job through the seed registry, so the seed holds it. */
  async function pullIntoSeed(job: PreheatJob, signal: AbortSignal): Promise<void> {
    const url = init.seedRegistryUrl ?? job.registryUrl
    const creds = url === job.registryUrl ? (credentials.get(job.id) ?? {}) : {}
    const client = createRegistryClient({
      url,
      ...creds,
      ...(components.fetch ? { fetch: components.fetch } : {}),
      userAgent: 'shoal-tracker-preheat',
    })
    let error: string | undefined
    const held: Digest[] = []
    for (const blob of job.blobs) {
      try {
        const download = await client.getBlob(job.repository, blob.digest, { signal })
        for await (const _ of download.stream) {
          // drained: the seed's pull-through stores what it serves
        }
        held.push(blob.digest)
      } catch (err) {
        if (signal.aborted) return
        error = `${blob.digest}: ${(err as Error).message}`
        break
      }
      await locked(async () => {
        const current = await store.getJob(job.id)
        const target = current?.targets.find((t) => t.kind === 'seed')
        if (current === undefined || target === undefined || current.state !== 'running') return
        target.held = [...held]
        refreshProgress(current)
        current.updatedAt = iso()
        await store.putJob(current)
      })
    }
    await locked(async () => {
      const current = await store.getJob(job.id)
      const target = current?.targets.find((t) => t.kind === 'seed')
      if (current === undefined || target === undefined || current.state !== 'running') return
      target.held = held
      if (error !== undefined) {
        target.state = 'failed'
        target.error = error
      } else target.state = 'done'
      current.updatedAt = iso()
      settle(current)
      await store.putJob(current)
    })
  }

  async function tick(): Promise<void> {
    const jobs = await store.listJobs()
    const agents = new Set((await store.listAgents(now())).map((a) => a.peerId))
    // Running jobs: time out, notice departed agents, settle.
    for (const job of jobs.filter((j) => j.state === 'running')) {
      await locked(async () => {
        const current = await store.getJob(job.id)
        if (current === undefined || current.state !== 'running') return
        let changed = false
        const started = Date.parse(current.startedAt ?? current.createdAt)
        if (now() - started > jobTimeoutMs) {
          finish(current, 'failed', `timed out after ${Math.round(jobTimeoutMs / 1000)} s`)
          changed = true
        } else {
          for (const t of current.targets) {
            const grace = now() - startedAtMs < agentTtlMs
            if (t.kind === 'agent' && t.state === 'pending' && !agents.has(t.id) && !grace) {
              t.state = 'failed'
              t.error = `agent ${t.id} stopped sending heartbeats`
              changed = true
            }
          }
          if (
            current.targets.some((t) => t.kind === 'seed' && t.state === 'pending') &&
            !working.has(current.id)
          ) {
            // A seed pull interrupted by a restart starts again.
            const ac = new AbortController()
            working.set(current.id, ac)
            void pullIntoSeed(current, ac.signal).finally(() => {
              if (working.get(current.id) === ac) working.delete(current.id)
            })
          }
          if (changed) settle(current)
        }
        if (changed) {
          current.updatedAt = iso()
          await store.putJob(current)
        }
      })
    }
    // Pending jobs: start as many as the concurrency allows.
    const active = jobs.filter((j) => j.state === 'running').length + [...working.keys()].length
    let slots = Math.max(0, maxConcurrent - active)
    const pending = jobs.filter((j) => j.state === 'pending' && !working.has(j.id)).reverse()
    for (const job of pending) {
      if (slots <= 0) break
      slots--
      const ac = new AbortController()
      working.set(job.id, ac)
      void resolveAndStart(job.id, ac.signal)
        .catch((err: unknown) => logger?.error({ err, job: job.id }, 'preheat job failed to start'))
        .finally(() => {
          if (working.get(job.id) === ac) working.delete(job.id)
        })
    }
    // Retention.
    const done = jobs.filter((j) => isFinalJobState(j.state))
    for (const old of done.slice(retain)) await store.deleteJob(old.id)
    if (jobsGauge !== undefined) {
      jobsGauge.reset()
      const latest = await store.listJobs()
      for (const j of latest) jobsGauge.inc({ state: j.state })
    }
  }

  function kick(): void {
    if (timer === undefined) return
    ticking ??= tick()
      .catch((err: unknown) => logger?.warn({ err }, 'preheat loop failed'))
      .finally(() => {
        ticking = undefined
      })
  }

  async function tasksFor(peerId: string, jobs?: PreheatJob[]): Promise<PreheatTask[]> {
    const tasks: PreheatTask[] = []
    for (const job of jobs ?? (await store.listJobs())) {
      if (job.state !== 'running') continue
      const target = job.targets.find((t) => t.kind === 'agent' && t.id === peerId)
      if (target === undefined || target.state !== 'pending') continue
      for (const blob of job.blobs) {
        if (target.held.includes(blob.digest)) continue
        if (tasks.length >= MAX_TASKS_PER_ANSWER) return tasks
        tasks.push({
          jobId: job.id,
          digest: blob.digest,
          host: job.host,
          repository: job.repository,
          size: blob.size,
        })
      }
    }
    return tasks
  }

  return {
    async create(request) {
      let image: ReturnType<typeof parseImageReference>
      let scope: PreheatScope
      try {
        image = parseImageReference(request.image)
        scope = parseScope(request.scope ?? 'all')
      } catch (err) {
        throw new DecodeError((err as Error).message)
      }
      const registryUrl =
        request.registryUrl?.replace(/\/+$/, '') ??
        `${loopbackHost(image.host) ? 'http' : 'https'}://${image.host}`
      const created = iso()
      const job: PreheatJob = {
        id: `${now().toString(36)}-${randomBytes(6).toString('hex')}`,
        image: request.image,
        host: image.host,
        repository: image.repository,
        reference: image.reference,
        registryUrl,
        platforms: request.platforms ?? ['all'],
        scope: formatScope(scope),
        state: 'pending',
        createdAt: created,
        updatedAt: created,
        blobs: [],
        targets: [],
        progress: { targets: 0, targetsDone: 0, bytesTotal: 0, bytesDone: 0 },
      }
      const creds = {
        ...(request.username !== undefined ? { username: request.username } : {}),
        ...(request.password !== undefined ? { password: request.password } : {}),
        ...(request.token !== undefined ? { token: request.token } : {}),
      }
      if (Object.keys(creds).length > 0) credentials.set(job.id, creds)
      await locked(() => store.putJob(job))
      logger?.info({ job: job.id, image: job.image, scope: job.scope }, 'preheat job created')
      kick()
      return job
    },

    list: () => store.listJobs(),

    async get(id) {
      const job = await store.getJob(id)
      if (job === undefined) throw new JobUnknownError(`no preheat job ${id.slice(0, 80)}`)
      return job
    },

    cancel(id) {
      return locked(async () => {
        const job = await store.getJob(id)
        if (job === undefined) throw new JobUnknownError(`no preheat job ${id.slice(0, 80)}`)
        if (isFinalJobState(job.state)) return job
        finish(job, 'cancelled', 'cancelled by an admin')
        refreshProgress(job)
        await store.putJob(job)
        return job
      })
    },

    async heartbeat(request) {
      const seenMs = now()
      await store.upsertAgent(
        {
          peerId: request.peerId,
          multiaddrs: request.multiaddrs,
          ...(request.zone === undefined ? {} : { zone: request.zone }),
          ...(request.rack === undefined ? {} : { rack: request.rack }),
          ...(request.address === undefined ? {} : { address: request.address }),
          ...(request.cacheUsedBytes === undefined ? {} : { cacheUsedBytes: request.cacheUsedBytes }),
          ...(request.cacheQuotaBytes === undefined ? {} : { cacheQuotaBytes: request.cacheQuotaBytes }),
          ...(request.uploadBytesPerSec === undefined
            ? {}
            : { uploadBytesPerSec: request.uploadBytesPerSec }),
          ...(request.downloadBytesPerSec === undefined
            ? {}
            : { downloadBytesPerSec: request.downloadBytesPerSec }),
          ...(request.bytesBySource === undefined ? {} : { bytesBySource: request.bytesBySource }),
          ...(request.blobs === undefined ? {} : { blobs: request.blobs }),
          lastSeenMs: seenMs,
        },
        agentTtlMs,
      )
      const held = new Set(request.held ?? [])
      const failed = request.failed ?? []
      let jobs = await store.listJobs()
      const touches = jobs.filter(
        (j) =>
          j.state === 'running' &&
          j.targets.some(
            (t) =>
              t.id === request.peerId &&
              t.state === 'pending' &&
              (j.blobs.some((b) => held.has(b.digest) && !t.held.includes(b.digest)) ||
                failed.some((f) => f.jobId === j.id)),
          ),
      )
      if (touches.length > 0) {
        await locked(async () => {
          for (const stale of touches) {
            const job = await store.getJob(stale.id)
            if (job === undefined || job.state !== 'running') continue
            const target = job.targets.find((t) => t.id === request.peerId)
            if (target === undefined || target.state !== 'pending') continue
            for (const b of job.blobs)
              if (held.has(b.digest) && !target.held.includes(b.digest)) target.held.push(b.digest)
            const failure = failed.find((f) => f.jobId === job.id)
            if (failure !== undefined) {
              target.state = 'failed'
              target.error = `${failure.digest}: ${failure.reason}`
            } else if (job.blobs.every((b) => target.held.includes(b.digest))) target.state = 'done'
            job.updatedAt = iso()
            settle(job)
            await store.putJob(job)
          }
        })
        jobs = await store.listJobs()
        kick()
      }
      return { intervalMs: heartbeatIntervalMs, tasks: await tasksFor(request.peerId, jobs) }
    },

    tasksFor: (peerId) => tasksFor(peerId),

    agents: () => store.listAgents(now()),

    tick: () => locked(async () => {}).then(() => tick()),

    async start() {
      if (timer !== undefined) return
      startedAtMs = now()
      timer = setInterval(kick, tickIntervalMs)
      timer.unref?.()
      kick()
    },

    async stop() {
      if (timer === undefined) return
      clearInterval(timer)
      timer = undefined
      for (const ac of working.values()) ac.abort(new Error('tracker stopping'))
      await ticking
      await lock
    },
  }
}
