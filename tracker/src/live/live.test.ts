import pino from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { createTrackerClient, digestOf } from '../../../protocol/src/index.js'
import { parseTrackerConfig } from '../config.js'
import { createTrackerNode } from '../main.js'
import { serveApp } from '../testing/serve.js'
import type { Overview } from './overview.js'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

describe('live view routes', () => {
  it('serves the page and an overview of agents, swarms and totals', async () => {
    const node = await createTrackerNode(parseTrackerConfig({}), {
      logger: pino({ level: 'silent' }),
      metrics: new Registry(),
    })
    await node.start()
    cleanups.push(() => node.stop())
    const server = await serveApp(node.app)
    cleanups.push(() => server.close())

    const page = await fetch(`${server.url}/`)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toMatch(/^text\/html/)
    const html = await page.text()
    expect(html).toContain('<table id="swarms">')
    expect(html).toContain("fetch('v1/overview'")

    const client = createTrackerClient({ url: server.url })
    const digest = digestOf(new TextEncoder().encode('blob'))
    await client.heartbeat({
      peerId: 'agentA',
      multiaddrs: [],
      zone: 'z1',
      address: '127.0.0.1:5001',
      cacheUsedBytes: 10,
      bytesBySource: { peer: 100, seed: 20 },
      blobs: [{ digest, peer: 3, seed: 1, upstream: 0 }],
    })
    await client.heartbeat({
      peerId: 'agentB',
      multiaddrs: [],
      bytesBySource: { peer: 5, upstream: 7 },
      blobs: [{ digest, peer: 2, seed: 0, upstream: 2 }],
    })
    await client.announce({
      peerId: 'agentA',
      multiaddrs: [],
      digest,
      state: 'complete',
      pieceCount: 4,
      piecesHeld: 4,
    })
    await client.announce({
      peerId: 'agentB',
      multiaddrs: [],
      digest,
      state: 'partial',
      pieceCount: 4,
      piecesHeld: 1,
    })

    const overview = (await (await fetch(`${server.url}/v1/overview`)).json()) as Overview
    expect(overview.agents.map((a) => [a.peerId, a.zone, a.address])).toEqual([
      ['agentA', 'z1', '127.0.0.1:5001'],
      ['agentB', undefined, undefined],
    ])
    expect(overview.swarms).toEqual([
      {
        digest,
        peers: 2,
        complete: 1,
        seeds: 0,
        originSlotsInUse: 1,
        completion: (1 + 0.25) / 2,
        pieceCount: 4,
        bytesFromPeers: 5,
        bytesFromSeed: 1,
        bytesFromUpstream: 2,
      },
    ])
    expect(overview.totals).toEqual({ peer: 105, seed: 20, upstream: 7, cache: 0, uploaded: 0 })
    expect(overview.jobs).toEqual([])
  })
})
