import { PassThrough, Readable } from 'node:stream'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import type { Digest } from '../../../protocol/src/index.js'
import type { HeartbeatRequest, HeartbeatResponse, PreheatTask } from '../../../protocol/src/tracker-api.js'
import type { BlobSource } from '../mirror/sources.js'
import { createPreheatWorker, type PreheatWorker } from './worker.js'

const d = (c: string) => `sha256:${c.repeat(64)}` as Digest
const task = (jobId: string, digest: Digest): PreheatTask => ({
  jobId,
  digest,
  host: 'r.example',
  repository: 'team/app',
})

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe('preheat worker', () => {
  const workers: PreheatWorker[] = []
  afterEach(async () => {
    for (const w of workers.splice(0)) await w.stop()
  })

  it('fetches its tasks into the cache, reports them held, aborts withdrawn tasks and reports failures', async () => {
    const held = new Set<Digest>()
    const requests: HeartbeatRequest[] = []
    let tasks: PreheatTask[] = [task('j1', d('a')), task('j1', d('b')), task('j2', d('c'))]
    const hanging: PassThrough[] = []
    const blobs: BlobSource = {
      stat: async () => ({ digest: d('a'), size: 1 }),
      async open(ref) {
        if (ref.digest === d('b')) throw new Error('upstream said 404')
        if (ref.digest === d('c')) {
          const stream = new PassThrough()
          hanging.push(stream)
          return { size: 1, stream, range: { start: 0, end: 0 }, source: 'peer' }
        }
        held.add(ref.digest)
        return {
          size: 3,
          stream: Readable.from([Buffer.from('abc')]),
          range: { start: 0, end: 2 },
          source: 'peer',
        }
      },
    }
    const metrics = new Registry()
    let address = '127.0.0.1:0'
    const worker = createPreheatWorker(
      {
        client: {
          async heartbeat(request): Promise<HeartbeatResponse> {
            requests.push(request)
            return { intervalMs: 50, tasks }
          },
        },
        blobs,
        cache: { has: (digest) => held.has(digest), usage: () => ({ usedBytes: 7, quotaBytes: 100 }) },
        metrics,
      },
      { peerId: 'agent1', multiaddrs: () => [], zone: 'z1', address: () => address, maxAttempts: 2 },
    )
    workers.push(worker)
    await worker.start()
    // The host binds the mirror after the worker started: later heartbeats carry the bound address.
    address = '127.0.0.1:5001'
    await until(() => requests.some((r) => r.held?.includes(d('a'))), 'a reported held')
    await until(() => requests.some((r) => r.failed?.some((f) => f.digest === d('b'))), 'b reported failed')
    const failure = requests.find((r) => r.failed !== undefined)!.failed![0]!
    expect(failure).toMatchObject({ jobId: 'j1', reason: 'upstream said 404' })
    expect(requests[0]).toMatchObject({
      peerId: 'agent1',
      zone: 'z1',
      address: '127.0.0.1:0',
      cacheUsedBytes: 7,
    })
    expect(requests.at(-1)).toMatchObject({ address: '127.0.0.1:5001' })
    expect(worker.active().map((t) => t.digest)).toEqual([d('c')])
    // The job of c is cancelled: the tracker stops handing it out and the worker aborts it.
    tasks = [task('j1', d('a'))]
    await until(() => worker.active().length === 0, 'c aborted')
    await until(() => hanging[0]!.destroyed, 'the stream of c destroyed')
    const counts = await metrics.getSingleMetric('shoal_agent_preheat_tasks_total')!.get()
    const by = Object.fromEntries(counts.values.map((v) => [v.labels.result, v.value]))
    expect(by).toEqual({ done: 1, failed: 1, cancelled: 1 })
  })
})
