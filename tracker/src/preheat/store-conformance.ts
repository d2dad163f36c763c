/**
 * The behaviour every PreheatStore must have, as a vitest suite: `open()` returns a store
 * over the same durable state each time it is called (so a second store sees what the
 * first wrote, as after a tracker restart). Test-only.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { Digest } from '../../../protocol/src/index.js'
import type { PreheatJob } from '../../../protocol/src/preheat-api.js'
import type { AgentRecord, PreheatStore } from './store.js'

/** A job fixture. */
export function jobFixture(id: string, createdAt: string, overrides: Partial<PreheatJob> = {}): PreheatJob {
  return {
    id,
    image: '127.0.0.1:5000/team/app:1',
    host: '127.0.0.1:5000',
    repository: 'team/app',
    reference: '1',
    registryUrl: 'http://127.0.0.1:5000',
    platforms: ['all'],
    scope: 'all',
    state: 'pending',
    createdAt,
    updatedAt: createdAt,
    blobs: [],
    targets: [],
    progress: { targets: 0, targetsDone: 0, bytesTotal: 0, bytesDone: 0 },
    ...overrides,
  }
}

function agent(peerId: string, lastSeenMs: number): AgentRecord {
  return { peerId, multiaddrs: [], zone: 'a', lastSeenMs }
}

/** Runs the conformance suite. */
export function preheatStoreConformance(name: string, open: () => Promise<PreheatStore>): void {
  describe(`PreheatStore conformance: ${name}`, () => {
    const opened: PreheatStore[] = []
    async function start(): Promise<PreheatStore> {
      const store = await open()
      await store.start()
      opened.push(store)
      return store
    }
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.stop()
    })

    it('stores, replaces, lists newest first and deletes jobs', async () => {
      const store = await start()
      expect(await store.getJob('nope')).toBeUndefined()
      await store.putJob(jobFixture('a', '2026-01-01T00:00:00.000Z'))
      await store.putJob(jobFixture('b', '2026-01-02T00:00:00.000Z'))
      await store.putJob(jobFixture('a', '2026-01-01T00:00:00.000Z', { state: 'running' }))
      expect((await store.getJob('a'))?.state).toBe('running')
      expect((await store.listJobs()).map((j) => j.id)).toEqual(['b', 'a'])
      await store.deleteJob('a')
      await store.deleteJob('a')
      expect((await store.listJobs()).map((j) => j.id)).toEqual(['b'])
    })

    it('returns copies, not live objects', async () => {
      const store = await start()
      const job = jobFixture('c', '2026-01-01T00:00:00.000Z')
      await store.putJob(job)
      job.state = 'failed'
      const read = (await store.getJob('c'))!
      expect(read.state).toBe('pending')
      read.state = 'cancelled'
      expect((await store.getJob('c'))?.state).toBe('pending')
    })

    it('keeps jobs across a restart', async () => {
      const first = await start()
      const digest = `sha256:${'1'.repeat(64)}` as Digest
      await first.putJob(
        jobFixture('d', '2026-01-01T00:00:00.000Z', {
          state: 'running',
          blobs: [{ digest, size: 3, mediaType: 'x' }],
          targets: [{ id: 'p1', kind: 'agent', state: 'done', held: [digest], bytesDone: 3 }],
        }),
      )
      await first.stop()
      opened.splice(opened.indexOf(first), 1)
      const second = await start()
      const read = await second.getJob('d')
      expect(read?.state).toBe('running')
      expect(read?.targets[0]?.held).toEqual([digest])
    })

    it('expires agents that stop beating', async () => {
      const store = await start()
      await store.upsertAgent(agent('p2', 1000), 500)
      await store.upsertAgent(agent('p1', 1000), 500)
      expect((await store.listAgents(1200)).map((a) => a.peerId)).toEqual(['p1', 'p2'])
      await store.upsertAgent(agent('p1', 1400), 500)
      expect((await store.listAgents(1600)).map((a) => a.peerId)).toEqual(['p1'])
      expect(await store.listAgents(2000)).toEqual([])
    })
  })
}
