import { randomUUID } from 'node:crypto'
import pino from 'pino'
import { Registry } from 'prom-client'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createTrackerClient, digestOf } from '../../protocol/src/index.js'
import { parseTrackerConfig } from './config.js'
import { createTrackerNode, type TrackerNode } from './main.js'
import { startTestRedis, type TestRedis } from './testing/redis-server.js'
import { serveApp } from './testing/serve.js'

let redis: TestRedis
const cleanups: Array<() => Promise<void>> = []

beforeAll(async () => {
  redis = await startTestRedis()
})
afterAll(async () => {
  await redis?.stop()
})
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function replica(keyPrefix: string): Promise<{ node: TrackerNode; url: string }> {
  const config = parseTrackerConfig({
    store: { type: 'redis', redisUrl: redis.url, keyPrefix },
    originSlotsPerSwarm: 2,
  })
  const node = await createTrackerNode(config, { logger: pino({ level: 'silent' }), metrics: new Registry() })
  await node.start()
  cleanups.push(() => node.stop())
  const server = await serveApp(node.app)
  cleanups.push(() => server.close())
  return { node, url: server.url }
}

describe('tracker replicas over one Redis', () => {
  it('hand out one consistent swarm and share origin rationing and bans', async () => {
    const keyPrefix = `test:${randomUUID()}:`
    const one = createTrackerClient({ url: (await replica(keyPrefix)).url })
    const two = createTrackerClient({ url: (await replica(keyPrefix)).url })
    const digest = digestOf('shared blob')
    const base = { multiaddrs: ['/ip4/127.0.0.1/tcp/4001'], digest }

    await one.announce({ ...base, peerId: 'seed', role: 'seed', state: 'complete' })
    const grants = [
      await one.announce({ ...base, peerId: 'a', state: 'partial' }),
      await two.announce({ ...base, peerId: 'b', state: 'partial' }),
      await one.announce({ ...base, peerId: 'c', state: 'partial' }),
      await two.announce({ ...base, peerId: 'd', state: 'partial' }),
    ].map((r) => r.allowOrigin)
    expect(grants).toEqual([true, true, false, false])

    const fromOne = await one.announce({ ...base, peerId: 'x', state: 'partial', wantsSeed: false })
    const fromTwo = await two.announce({ ...base, peerId: 'x', state: 'partial', wantsSeed: false })
    expect(fromOne.peers.map((p) => p.peerId).sort()).toEqual(['a', 'b', 'c', 'd'])
    expect(fromTwo.peers.map((p) => p.peerId).sort()).toEqual(['a', 'b', 'c', 'd'])
    expect(await one.swarms()).toEqual(await two.swarms())

    // A completes through replica two: replica one now grants its slot to c.
    await two.announce({ ...base, peerId: 'a', state: 'complete', event: 'completed' })
    expect((await one.announce({ ...base, peerId: 'c', state: 'partial' })).allowOrigin).toBe(true)

    // Reports through different replicas add up; the ban holds on both.
    await one.reportBadPeer({ reporter: 'a', peerId: 'd', digest })
    expect((await two.reportBadPeer({ reporter: 'b', peerId: 'd', digest })).dropped).toBe(true)
    await expect(one.announce({ ...base, peerId: 'd', state: 'partial' })).rejects.toMatchObject({
      status: 403,
    })
    expect((await two.swarm(digest)).banned).toEqual(['d'])
  })

  it('fails start() when Redis is unreachable', async () => {
    const config = parseTrackerConfig({ store: { type: 'redis', redisUrl: 'redis://127.0.0.1:1' } })
    const node = await createTrackerNode(config, {
      logger: pino({ level: 'silent' }),
      metrics: new Registry(),
    })
    await expect(node.start()).rejects.toThrow()
    await node.stop()
  })
})
