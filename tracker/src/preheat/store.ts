/**
 * Where preheat jobs and the agents' heartbeats live. Jobs are durable (a JSON file under
 * the tracker's data dir for the memory store, Redis for the Redis store) so they survive
 * a tracker restart; agent records expire on their own when an agent stops beating.
 * Every implementation passes the conformance suite in store-conformance.ts.
 */
import type { PreheatJob } from '../../../protocol/src/preheat-api.js'

/** An agent as its latest heartbeat described it. */
export interface AgentRecord {
  peerId: string
  multiaddrs: string[]
  zone?: string
  rack?: string
  address?: string
  cacheUsedBytes?: number
  cacheQuotaBytes?: number
  uploadBytesPerSec?: number
  downloadBytesPerSec?: number
  bytesBySource?: Partial<Record<string, number>>
  /** Recently active blobs and the bytes this agent got for each, by source. */
  blobs?: Array<{ digest: string; peer: number; seed: number; upstream: number }>
  lastSeenMs: number
}

/** Preheat state behind the tracker. */
export interface PreheatStore {
  /** Inserts or replaces a job. */
  putJob(job: PreheatJob): Promise<void>
  getJob(id: string): Promise<PreheatJob | undefined>
  /** Every job, newest first. */
  listJobs(): Promise<PreheatJob[]>
  /** Removes a job (retention); absent is not an error. */
  deleteJob(id: string): Promise<void>
  /** Records an agent; it expires `ttlMs` after `agent.lastSeenMs` unless refreshed. */
  upsertAgent(agent: AgentRecord, ttlMs: number): Promise<void>
  /** Agents not expired at `nowMs`, sorted by peer id. */
  listAgents(nowMs: number): Promise<AgentRecord[]>
  start(): Promise<void>
  /** Flushes and releases; safe to call twice. */
  stop(): Promise<void>
}

/** Sorts jobs newest first (ties by id). */
export function newestFirst(jobs: PreheatJob[]): PreheatJob[] {
  return jobs.sort((a, b) =>
    a.createdAt === b.createdAt ? (a.id < b.id ? 1 : -1) : a.createdAt < b.createdAt ? 1 : -1,
  )
}
