import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { digestOf } from '../../../protocol/src/index.js'
import { startTestRedis, type TestRedis } from '../testing/redis-server.js'
import { describePeerStoreConformance, peerRecord } from './conformance.js'
import { createRedisPeerStore } from './redis.js'

let redis: TestRedis
beforeAll(async () => {
  redis = await startTestRedis()
})
afterAll(async () => {
  await redis?.stop()
})

// Each test gets its own key prefix, so a shared CI Redis needs no flushing.
describePeerStoreConformance('redis', async () => {
  const store = createRedisPeerStore({ url: redis.url, keyPrefix: `test:${randomUUID()}:` })
  await store.start()
  return { store, cleanup: () => store.stop() }
})

describe('redis peer store', () => {
  it('shares state between two stores on one Redis', async () => {
    const keyPrefix = `test:${randomUUID()}:`
    const one = createRedisPeerStore({ url: redis.url, keyPrefix })
    const two = createRedisPeerStore({ url: redis.url, keyPrefix })
    await one.start()
    await two.start()
    try {
      const d = digestOf('shared')
      await one.upsertPeer(d, peerRecord('p1', { lastSeenMs: Date.now() }), 60_000)
      expect((await two.listPeers(d, Date.now())).map((p) => p.peerId)).toEqual(['p1'])
      expect(await one.acquireOriginSlot(d, 'p1', 1, Date.now(), 60_000)).toBe(true)
      expect(await two.acquireOriginSlot(d, 'p2', 1, Date.now(), 60_000)).toBe(false)
    } finally {
      await one.stop()
      await two.stop()
      await two.stop()
    }
  })
  it('fails start() against a Redis that is not there', async () => {
    const store = createRedisPeerStore({ url: 'redis://127.0.0.1:1', commandTimeoutMs: 500 })
    await expect(store.start()).rejects.toThrow()
    await store.stop()
  })
})
