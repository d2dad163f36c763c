/**
 * The in-process preheat store. With `file`, every job change is written to that JSON
 * file (write to a temporary file, then rename, one write at a time) and the file is read
 * back at start, so jobs survive a restart. Agents are kept in memory only.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { PreheatJob } from '../../../protocol/src/preheat-api.js'
import { type AgentRecord, newestFirst, type PreheatStore } from './store.js'

/** Options of createMemoryPreheatStore. */
export interface MemoryPreheatStoreInit {
  /** JSON file the jobs are persisted to; absent, jobs live only in memory. */
  file?: string
}

/** Creates the memory store (see the file comment). */
export function createMemoryPreheatStore(init: MemoryPreheatStoreInit = {}): PreheatStore {
  const jobs = new Map<string, PreheatJob>()
  const agents = new Map<string, { agent: AgentRecord; expiresAt: number }>()
  let writing: Promise<void> = Promise.resolve()
  let dirty = false

  function persist(): Promise<void> {
    const file = init.file
    if (file === undefined) return Promise.resolve()
    dirty = true
    writing = writing.then(async () => {
      if (!dirty) return
      dirty = false
      const tmp = `${file}.tmp`
      await mkdir(dirname(file), { recursive: true })
      await writeFile(tmp, JSON.stringify({ version: 1, jobs: [...jobs.values()] }))
      await rename(tmp, file)
    })
    return writing
  }

  return {
    async putJob(job) {
      jobs.set(job.id, structuredClone(job))
      await persist()
    },
    async getJob(id) {
      const job = jobs.get(id)
      return job === undefined ? undefined : structuredClone(job)
    },
    async listJobs() {
      return newestFirst([...jobs.values()].map((j) => structuredClone(j)))
    },
    async deleteJob(id) {
      if (jobs.delete(id)) await persist()
    },
    async upsertAgent(agent, ttlMs) {
      agents.set(agent.peerId, { agent: { ...agent }, expiresAt: agent.lastSeenMs + ttlMs })
    },
    async listAgents(nowMs) {
      const live: AgentRecord[] = []
      for (const [id, entry] of agents) {
        if (entry.expiresAt <= nowMs) agents.delete(id)
        else live.push({ ...entry.agent })
      }
      return live.sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0))
    },
    async start() {
      if (init.file === undefined) return
      let text: string
      try {
        text = await readFile(init.file, 'utf8')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
        throw err
      }
      const parsed = JSON.parse(text) as { jobs?: PreheatJob[] }
      for (const job of parsed.jobs ?? []) jobs.set(job.id, job)
    },
    async stop() {
      await writing
    },
  }
}
