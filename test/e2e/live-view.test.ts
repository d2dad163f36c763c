/**
 * The tracker's live view in a real headless Chromium (Debian's chromium driven by
 * playwright-core): while ten agents pull one blob the page shows its swarm filling up,
 * and once they are done its numbers match the metrics (peers in the swarm, bytes the
 * agents got from peers and from the seed). `shoal status` renders the same overview.
 */
import { type Browser, chromium } from 'playwright-core'
import { afterEach, describe, expect, it } from 'vitest'
import { renderStatus, fetchOverview } from '../../cli/src/commands/status.js'
import { blobFixture } from '../../protocol/src/testing/fixtures.js'
import { type Cluster, metricValue, startCluster, waitUntil } from '../integration/swarm-cluster.js'

/** The bits of the DOM the page checks use (the test compiles without the DOM lib). */
type El = {
  textContent: string | null
  dataset: Record<string, string | undefined>
  querySelector(selector: string): El | null
}
type Doc = {
  querySelector(selector: string): El | null
  querySelectorAll(selector: string): { length: number }
}

const MiB = 1024 * 1024
const SIZE = 8 * MiB
const AGENTS = 10

describe('live view', () => {
  let cluster: Cluster | undefined
  let browser: Browser | undefined
  afterEach(async () => {
    await browser?.close()
    browser = undefined
    await cluster?.stop()
    cluster = undefined
  })

  it('shows a swarm while ten agents pull, with numbers matching the metrics', async () => {
    // A capped seed keeps the swarm in flight long enough to be seen.
    cluster = await startCluster({
      tracker: { originSlotsPerSwarm: 1, preheat: { heartbeatIntervalMs: 200 } },
      seed: { uploadBytesPerSecond: 2 * MiB },
    })
    const blob = blobFixture(SIZE, 31)
    await cluster.push('team/live', blob.bytes, blob.digest)
    const agents = await Promise.all(
      Array.from({ length: AGENTS }, () => cluster!.addAgent({ swarmStallTimeoutMs: 60_000 })),
    )
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    })
    const page = await browser.newPage()
    await page.goto(`${cluster.tracker!.url}/?interval=200`)
    await page.waitForFunction(
      (n) =>
        (globalThis as unknown as { document: Doc }).document.querySelectorAll('#agents tbody tr').length ===
        n,
      AGENTS,
    )

    const c = cluster
    const pulls = Promise.all(agents.map((agent) => c.pull(agent, 'team/live', blob.digest)))
    const row = `#swarms tr[data-digest="${blob.digest}"]`
    // In flight: several peers in the swarm, not all complete yet.
    await page.waitForFunction(
      (sel) => {
        const tr = (globalThis as unknown as { document: Doc }).document.querySelector(sel)
        if (tr === null) return false
        const peers = Number(tr.querySelector('.peers')?.textContent)
        const fraction = Number(tr.querySelector('.completion')?.dataset.fraction)
        return peers >= 2 && fraction < 1
      },
      row,
      { timeout: 60_000 },
    )
    const results = await pulls
    for (const r of results) expect(r).toEqual({ digest: blob.digest, size: SIZE })

    // Done: every agent complete in the swarm, as the tracker's metrics say.
    await page.waitForFunction(
      ([sel, n]) => {
        const tr = (globalThis as unknown as { document: Doc }).document.querySelector(sel as string)
        return (
          tr !== null &&
          Number(tr.querySelector('.complete')?.textContent) === n &&
          Number(tr.querySelector('.peers')?.textContent) === n &&
          tr.querySelector('.completion')?.dataset.fraction === '1'
        )
      },
      [row, AGENTS] as const,
      { timeout: 30_000 },
    )
    expect(await metricValue(cluster.tracker!.metrics, 'shoal_tracker_peers', { state: 'complete' })).toBe(
      AGENTS,
    )

    // Bytes by source on the page equal the sums of the agents' metrics (after a heartbeat).
    let fromPeers = 0
    let fromSeed = 0
    for (const agent of agents) {
      fromPeers += await metricValue(agent.metrics, 'shoal_agent_swarm_piece_bytes_total', { source: 'peer' })
      fromSeed += await metricValue(agent.metrics, 'shoal_agent_swarm_piece_bytes_total', { source: 'seed' })
    }
    expect(fromPeers + fromSeed).toBe(AGENTS * SIZE)
    const shown = async () =>
      page.evaluate(() => ({
        peer: Number(
          (globalThis as unknown as { document: Doc }).document.querySelector('#totals td.peer')!.dataset
            .bytes,
        ),
        seed: Number(
          (globalThis as unknown as { document: Doc }).document.querySelector('#totals td.seed')!.dataset
            .bytes,
        ),
      }))
    await waitUntil(async () => {
      const s = await shown()
      return s.peer === fromPeers && s.seed === fromSeed
    }, 'the page totals to match the agent metrics')
    // Per blob, the swarm row shows the bytes the agents' clients got from peers and the seed.
    let blobFromPeers = 0
    let blobFromSeed = 0
    for (const agent of agents) {
      blobFromPeers += await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: 'peer' })
      blobFromSeed += await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: 'seed' })
    }
    expect(blobFromPeers + blobFromSeed).toBe(AGENTS * SIZE)
    await waitUntil(async () => {
      const s = await page.evaluate((sel) => {
        const tr = (globalThis as unknown as { document: Doc }).document.querySelector(sel)
        return {
          peer: Number(tr?.querySelector('.from-peer')?.dataset.bytes),
          seed: Number(tr?.querySelector('.from-seed')?.dataset.bytes),
        }
      }, row)
      return s.peer === blobFromPeers && s.seed === blobFromSeed
    }, 'the swarm row bytes to match the agent metrics')
    // Per agent, the row shows what its metrics say.
    for (const agent of agents) {
      const cellBytes = await page.evaluate(
        (peer) =>
          Number(
            (globalThis as unknown as { document: Doc }).document.querySelector(
              `#agents tr[data-peer="${peer}"] td.from-peer`,
            )?.dataset.bytes,
          ),
        agent.swarm.peerId,
      )
      expect(cellBytes).toBe(
        await metricValue(agent.metrics, 'shoal_agent_swarm_piece_bytes_total', { source: 'peer' }),
      )
    }

    // shoal status prints the same overview.
    const text = renderStatus(await fetchOverview(cluster.tracker!.url))
    expect(text).toContain(`AGENTS (${AGENTS})`)
    expect(text).toMatch(new RegExp(`${blob.digest}\\s+${AGENTS}\\s+${AGENTS}\\s+\\d+\\s+\\d+\\s+100%`))
  }, 240_000)
})
