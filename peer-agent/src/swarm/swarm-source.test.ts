import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { type BlobCache, createBlobCache } from '../cache/index.js'
import type { ContentRouter } from '../routing/index.js'
import { blob, fakeSwarm } from '../transfer/testing/fake-swarm.js'
import { SwarmUnavailableError } from '../transfer/index.js'
import { createSwarmMetrics } from './metrics.js'
import { createSwarmBlobSource } from './swarm-source.js'

describe('swarm blob source', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  async function setup(minBlobBytes: number) {
    const root = await mkdtemp(join(tmpdir(), 'shoal-swarm-src-'))
    const cache: BlobCache = createBlobCache({}, { root, quotaBytes: 1 << 30, durable: false })
    await cache.start()
    const { bytes, map } = blob(3)
    const swarm = fakeSwarm(bytes, map)
    const holder = swarm.peer('holder', map.pieces.keys())
    let lookups = 0
    const router: ContentRouter = {
      async findPeers() {
        lookups++
        return [{ peerId: holder.id, multiaddrs: [] }]
      },
    } as unknown as ContentRouter
    const registry = new Registry()
    const source = createSwarmBlobSource(
      {
        cache,
        client: swarm.client,
        maps: { get: async () => map, seedPeerId: () => undefined },
        router,
        selfPeerId: 'self',
        metrics: createSwarmMetrics(registry, () => 0),
      },
      { minBlobBytes },
    )
    cleanups.push(async () => {
      await source.stop()
      await cache.stop()
      await rm(root, { recursive: true, force: true })
    })
    return { source, map, registry, lookups: () => lookups }
  }

  it('sends a blob below minBlobBytes to the seed or upstream without asking the swarm', async () => {
    const { source, map, registry, lookups } = await setup(1 << 20)
    const ref = { host: 'seed', repository: 'r', digest: map.digest }
    await expect(source.open(ref, undefined)).rejects.toBeInstanceOf(SwarmUnavailableError)
    expect(lookups()).toBe(0)
    const metric = await registry.getSingleMetric('shoal_agent_swarm_small_blobs_total')!.get()
    expect(metric.values[0]?.value).toBe(1)
    // Its size is still answered from the piece map.
    expect(await source.stat(ref)).toEqual({ digest: map.digest, size: map.size })
  })
})
