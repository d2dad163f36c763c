import { afterAll, beforeAll } from 'vitest'
import { startTestRedis, type TestRedis } from '../testing/redis-server.js'
import { createRedisPreheatStore } from './redis-store.js'
import { preheatStoreConformance } from './store-conformance.js'

let redis: TestRedis | undefined
const prefix = `test:${process.pid}:${Date.now()}:`
beforeAll(async () => {
  redis = await startTestRedis()
}, 20_000)
afterAll(async () => {
  await redis?.stop()
})

preheatStoreConformance('redis', async () => createRedisPreheatStore({ url: redis!.url, keyPrefix: prefix }))
