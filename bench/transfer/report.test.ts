import { describe, expect, it } from 'vitest'
import { buildRows, formatRows, judge, type Measurement } from './report.js'

function m(
  kind: Measurement['kind'],
  peers: number,
  seconds: number,
  variant?: string,
  run = 1,
): Measurement {
  const entry: Measurement = {
    kind,
    peers,
    run,
    bytes: 1e9,
    seconds,
    clientCpuSeconds: 1,
    serverCpuSeconds: 0.5,
  }
  if (variant !== undefined) entry.variant = variant
  return entry
}

describe('transfer report', () => {
  const measurements = [
    m('raw', 1, 0.5),
    m('raw', 1, 1),
    m('raw', 1, 0.4),
    m('raw-sha256', 1, 1),
    m('shoal', 1, 2, 'node-crypto'),
    m('shoal', 1, 5, 'default'),
    m('raw', 3, 0.25),
    m('shoal', 3, 1, 'node-crypto'),
  ]

  it('takes medians per configuration and relates each to raw TCP with the same peers', () => {
    const rows = buildRows(measurements)
    expect(rows.map((r) => r.label)).toEqual([
      'raw TCP',
      'raw TCP + sha256/piece',
      'shoal node-crypto',
      'shoal default',
      'raw TCP',
      'shoal node-crypto',
    ])
    const raw = rows[0]!
    expect(raw.runs).toBe(3)
    expect(raw.megabytesPerSecond).toBe(2000)
    expect(raw.cpuSecondsPerGB).toBe(1.5)
    expect(rows[2]!.ratioToRaw).toBe(0.25)
    expect(rows[2]!.ratioToRawSha256).toBe(0.5)
    expect(rows[5]!.ratioToRaw).toBe(0.25)
    expect(rows[5]!.ratioToRawSha256).toBeUndefined()
    expect(formatRows(rows)).toContain('shoal default')
  })

  it('passes only at or above half of raw TCP on one connection', () => {
    const rows = buildRows(measurements)
    expect(judge(rows, 'node-crypto')).toMatchObject({ pass: false, ratio: 0.25 })
    expect(judge(rows, 'missing')).toMatchObject({ pass: false, ratio: undefined })
    const fast = buildRows([m('raw', 1, 1), m('shoal', 1, 2, 'x')])
    expect(judge(fast, 'x')).toMatchObject({ pass: true, ratio: 0.5 })
    expect(judge(fast, 'x').message).toMatch(/^PASS/)
  })

  it('judges the median of per-run ratios to raw TCP, not the ratio of the medians', () => {
    // Raw TCP swings between runs; shoal keeps half of raw TCP's speed in every run.
    const runs = [
      m('raw', 1, 1, undefined, 1),
      m('shoal', 1, 2, 'default', 1),
      m('raw', 1, 0.4, undefined, 2),
      m('shoal', 1, 0.8, 'default', 2),
      m('raw', 1, 0.5, undefined, 3),
      m('shoal', 1, 1, 'default', 3),
    ]
    const rows = buildRows(runs)
    const row = rows.find((r) => r.kind === 'shoal')!
    expect(row.pairRatios).toEqual([0.5, 0.5, 0.5])
    expect(row.pairedRatioToRaw).toBe(0.5)
    // Medians: raw 2000 MB/s, shoal 1000 MB/s: also 0.5 here, but from different runs.
    expect(row.ratioToRaw).toBe(0.5)
    expect(rows[0]!.pairedRatioToRaw).toBe(1)
    const verdict = judge(rows, 'default')
    expect(verdict).toMatchObject({ pass: true, ratio: 0.5, pairRatios: [0.5, 0.5, 0.5] })
    expect(verdict.message).toContain('0.50, 0.50, 0.50')
    expect(formatRows(rows)).toContain('x raw paired')

    // At 0.4x of raw TCP in two runs of three: the medians (1000 over 2000 MB/s, taken
    // from different runs) would pass it.
    const uneven = buildRows([
      m('raw', 1, 0.5, undefined, 1),
      m('shoal', 1, 1, 'default', 1),
      m('raw', 1, 0.4, undefined, 2),
      m('shoal', 1, 1, 'default', 2),
      m('raw', 1, 2, undefined, 3),
      m('shoal', 1, 5, 'default', 3),
    ])
    expect(uneven.find((r) => r.kind === 'shoal')!.ratioToRaw).toBe(0.5)
    expect(judge(uneven, 'default')).toMatchObject({ pass: false, ratio: 0.4 })
  })

  it('fails when no run pairs shoal with raw TCP', () => {
    const rows = buildRows([m('raw', 1, 1, undefined, 1), m('shoal', 1, 1, 'default', 2)])
    expect(judge(rows, 'default')).toMatchObject({ pass: false, ratio: undefined })
  })
})
