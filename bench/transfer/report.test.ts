import { describe, expect, it } from 'vitest'
import { buildRows, formatRows, judge, type Measurement } from './report.js'

function m(kind: Measurement['kind'], peers: number, seconds: number, variant?: string): Measurement {
  const entry: Measurement = {
    kind,
    peers,
    run: 1,
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
})
