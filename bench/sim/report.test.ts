import { describe, expect, it } from 'vitest'
import { formatSimRows, formatSimTimeline, renderSimPlots, summarizeSim } from './report.js'
import type { SimConfig, SimResult } from './simulate.js'

const MiB = 2 ** 20

function fake(nodes: number, completionMs: number[]): { config: SimConfig; result: SimResult } {
  const config: SimConfig = {
    nodes,
    imageBytes: 100 * MiB,
    layers: 1,
    nodeUpMbit: 100,
    originMbit: 100,
    latencyMs: 1,
    seed: 1,
  }
  const result: SimResult = {
    completionMs,
    lastDoneMs: Math.max(...completionMs),
    originBytes: 150 * MiB,
    imageBytes: 100 * MiB,
    pieceSize: [MiB],
    pieces: 100,
    events: 10,
    deliveredPieces: 100 * nodes,
    duplicatePieces: 0,
    wastedBytes: 0,
    busyAnswers: 0,
    declinedAnswers: 0,
    wallMs: 5,
  }
  return { config, result }
}

describe('sim report', () => {
  it('summarises percentiles, the bound and origin egress', () => {
    const { config, result } = fake(4, [4000, 1000, 3000, 2000])
    const row = summarizeSim('x', config, result)
    expect(row.p50Seconds).toBe(2)
    expect(row.maxSeconds).toBe(4)
    expect(row.completionSeconds).toEqual([1, 2, 3, 4])
    // F/u_s = 100 MiB * 8 / 100 Mbit.
    expect(row.boundSeconds).toBeCloseTo((100 * MiB * 8) / 100e6, 9)
    expect(row.ratioToBound).toBeCloseTo(4 / row.boundSeconds, 9)
    expect(row.originRatio).toBe(1.5)
  })

  it('prints a published reference under its run', () => {
    const { config, result } = fake(2, [1000, 2000])
    const text = formatSimRows([
      summarizeSim('kraken', config, result, { name: 'Kraken', p50Seconds: 10, p99Seconds: 18 }),
    ])
    const lines = text.split('\n')
    expect(lines).toHaveLength(4)
    expect(lines[3]).toMatch(/Kraken \(published\)\s+2\s+10\s+—\s+18/)
  })

  it('draws one CDF panel, and a second against N when N varies', () => {
    const a = fake(2, [1000, 2000])
    const b = fake(3, [1000, 2000, 3000])
    const one = renderSimPlots([summarizeSim('a', a.config, a.result)])
    const two = renderSimPlots([summarizeSim('a', a.config, a.result), summarizeSim('b', b.config, b.result)])
    expect(one.match(/<svg /g)).toHaveLength(2)
    expect(two.match(/<svg /g)).toHaveLength(3)
    expect(two).toContain('Completion time against N')
  })

  it('prints a timeline in percent and draws it as a panel of its own', () => {
    const { config, result } = fake(2, [1000, 2000])
    result.timeline = [
      { t: 0, pulling: 2, downBusy: 0, upBusy: 0, originBusy: 0, idleOnBusy: 0 },
      { t: 1, pulling: 1, downBusy: 0.5, upBusy: 0.254, originBusy: 1, idleOnBusy: 1 },
    ]
    const row = summarizeSim('t', config, result)
    const lines = formatSimTimeline(row).split('\n')
    expect(lines).toHaveLength(4)
    expect(lines[3]).toMatch(/^1\s+1\s+50\s+25\s+100\s+1$/)
    const svg = renderSimPlots([row])
    expect(svg).toContain('Links in use over the run')
    expect(svg.match(/<svg /g)).toHaveLength(3)
  })
})
