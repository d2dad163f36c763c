import { describe, expect, it } from 'vitest'
import { fluidBound } from './bound.js'
import { alignTimeline, formatRounds, judgeTargets, renderPlots, summarizeRound } from './report.js'

const IMAGE = 100e6

function round(system: 'shoal' | 'distribution', nodes: number, lastMs: number, egress: number) {
  const bound = fluidBound({ fileBytes: IMAGE, nodes, originMbit: 100, nodeUpMbit: 100, nodeDownMbit: 100 })
  const results = Array.from({ length: nodes }, (_, i) => ({
    node: `n${i + 1}`,
    ok: true,
    completionMs: Math.round((lastMs * (i + 1)) / nodes),
    bytes: IMAGE,
    retries: 0,
    cpuSeconds: 0.25,
  }))
  return summarizeRound({
    system,
    nodes,
    imageBytes: IMAGE,
    bound,
    results,
    originEgressBytes: egress,
    registryBlobBytesSent: null,
    machineCpu: 0.5,
    wallSeconds: lastMs / 1000,
  })
}

describe('cluster report', () => {
  it('summarises a round against the bound and judges the targets', () => {
    const r10 = round('shoal', 10, 9_000, 1.05 * IMAGE)
    expect(r10.maxSeconds).toBe(9)
    expect(r10.p50Seconds).toBe(4.5)
    expect(r10.ratioToBound).toBeCloseTo(9 / 8, 6)
    expect(r10.clientCpuSeconds).toBe(2.5)
    const r50 = round('shoal', 50, 11_000, 1.2 * IMAGE)
    const verdicts = judgeTargets([r10, r50, round('distribution', 50, 400_000, 50 * IMAGE)])
    expect(verdicts.map((v) => v.pass)).toEqual([true, false, true, true])
    expect(verdicts[3]!.measured).toBe('1.22x')
  })

  it('treats a failed node as a miss, and renders the table and both plots', () => {
    const r = round('shoal', 3, 5_000, IMAGE)
    const failed = { ...r, failed: 1, ok: 2, ratioToBound: null }
    expect(judgeTargets([failed]).find((v) => v.target.includes('bound'))!.pass).toBe(false)
    expect(formatRounds([r])).toContain('shoal')
    const svg = renderPlots([
      r,
      round('shoal', 10, 6_000, IMAGE),
      round('distribution', 10, 80_000, 10 * IMAGE),
    ])
    expect(svg.match(/<polyline/g)!.length).toBeGreaterThanOrEqual(5)
  })

  it('draws what the links and the clients carried over time, as a share of N x the image', () => {
    const plain = renderPlots([round('shoal', 4, 8_000, IMAGE)])
    expect(plain).not.toContain('Bytes delivered over time')
    const r = round('shoal', 4, 8_000, IMAGE)
    r.timeline = [
      {
        seconds: 5,
        nodesDownBytes: 2 * IMAGE,
        nodesUpBytes: 1.5 * IMAGE,
        originBytes: IMAGE / 2,
        clientBytes: IMAGE / 2,
        nodesDone: 0,
        machineBusy: 0.5,
        serviceCpuSeconds: 4,
      },
      {
        seconds: 10,
        nodesDownBytes: 4 * IMAGE,
        nodesUpBytes: 3 * IMAGE,
        originBytes: IMAGE,
        clientBytes: 4 * IMAGE,
        nodesDone: 4,
        machineBusy: 0.25,
        serviceCpuSeconds: 6,
      },
    ]
    const svg = renderPlots([r])
    expect(svg).toContain('Bytes delivered over time')
    expect(svg).toContain('shoal N=4 links')
    expect(svg).toContain('shoal N=4 clients')
    // The CDF plus two timeline lines.
    expect(svg.match(/<polyline/g)!.length).toBe(3)
  })

  it('puts timeline samples on the round clock, from the common start, leaving out earlier ones', () => {
    const sample = (at: number, bytes: number) => ({
      at,
      nodesDownBytes: bytes,
      nodesUpBytes: bytes,
      originBytes: bytes,
      clientBytes: 0,
      nodesDone: 0,
      machineBusy: 1,
      serviceCpuSeconds: 1,
    })
    const startAt = 1_000_000
    const aligned = alignTimeline(
      [
        sample(startAt - 2_000, 0),
        sample(startAt, 0),
        sample(startAt + 3_040, 5),
        sample(startAt + 8_000, 9),
      ],
      startAt,
    )
    expect(aligned.map((s) => s.seconds)).toEqual([3, 8])
    const { at: _at, ...rest } = sample(startAt + 8_000, 9)
    expect(aligned[1]).toStrictEqual({ seconds: 8, ...rest })
  })
})
