/**
 * The Redis preheat store, shared by tracker replicas. Keys (P = keyPrefix):
 *
 * ```
 * Ppreheat:jobs        hash  jobId -> PreheatJob JSON
 * Ppreheat:agents      hash  peerId -> AgentRecord JSON
 * Ppreheat:agents:exp  zset  peerId -> expiry (ms)
 * ```
 */
import { Redis } from 'ioredis'
import type { PreheatJob } from '../../../protocol/src/preheat-api.js'
import { type AgentRecord, newestFirst, type PreheatStore } from './store.js'

/** Options of createRedisPreheatStore. */
export interface RedisPreheatStoreInit {
  url: string
  /** @default 'shoal:tracker:' */
  keyPrefix?: string
  /** Deadline of one command, in milliseconds. @default 5000 */
  commandTimeoutMs?: number
}

/** Creates the Redis store (see the file comment). */
export function createRedisPreheatStore(init: RedisPreheatStoreInit): PreheatStore {
  const prefix = init.keyPrefix ?? 'shoal:tracker:'
  const jobsKey = `${prefix}preheat:jobs`
  const agentsKey = `${prefix}preheat:agents`
  const expKey = `${prefix}preheat:agents:exp`
  let redis: Redis | undefined

  function client(): Redis {
    if (redis === undefined) throw new Error('preheat store is not started')
    return redis
  }

  return {
    async putJob(job) {
      await client().hset(jobsKey, job.id, JSON.stringify(job))
    },
    async getJob(id) {
      const json = await client().hget(jobsKey, id)
      return json === null ? undefined : (JSON.parse(json) as PreheatJob)
    },
    async listJobs() {
      const all = await client().hvals(jobsKey)
      return newestFirst(all.map((j) => JSON.parse(j) as PreheatJob))
    },
    async deleteJob(id) {
      await client().hdel(jobsKey, id)
    },
    async upsertAgent(agent, ttlMs) {
      await client()
        .multi()
        .hset(agentsKey, agent.peerId, JSON.stringify(agent))
        .zadd(expKey, agent.lastSeenMs + ttlMs, agent.peerId)
        .exec()
    },
    async listAgents(nowMs) {
      const r = client()
      const dead = await r.zrangebyscore(expKey, '-inf', nowMs)
      if (dead.length > 0) {
        await r
          .multi()
          .hdel(agentsKey, ...dead)
          .zrem(expKey, ...dead)
          .exec()
      }
      const all = await r.hvals(agentsKey)
      return all
        .map((j) => JSON.parse(j) as AgentRecord)
        .sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0))
    },
    async start() {
      if (redis !== undefined) return
      const r = new Redis(init.url, {
        lazyConnect: true,
        maxRetriesPerRequest: 2,
        commandTimeout: init.commandTimeoutMs ?? 5000,
        enableOfflineQueue: true,
      })
      r.on('error', () => {})
      await r.connect()
      redis = r
    },
    async stop() {
      const r = redis
      redis = undefined
      if (r === undefined) return
      try {
        await r.quit()
      } catch {
        r.disconnect()
      }
    },
  }
}
