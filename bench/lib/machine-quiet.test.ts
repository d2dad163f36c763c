import { describe, expect, it } from 'vitest'
import { busyCoresBetween, flushAndWaitForQuiet, parseDirtyMemory, probeCpuSpeed } from './machine-quiet.js'

describe('parseDirtyMemory', () => {
  it('reads Dirty and Writeback, not WritebackTmp', () => {
    const meminfo = [
      'MemTotal:       24684000 kB',
      'Dirty:             13336 kB',
      'Writeback:           120 kB',
      'WritebackTmp:       9999 kB',
    ].join('\n')
    expect(parseDirtyMemory(meminfo)).toEqual({ dirtyBytes: 13336 * 1024, writebackBytes: 120 * 1024 })
  })

  it('gives 0 for missing lines', () => {
    expect(parseDirtyMemory('MemTotal: 1 kB\n')).toEqual({ dirtyBytes: 0, writebackBytes: 0 })
  })
})

describe('busyCoresBetween', () => {
  it('scales the busy share of all cores to a number of cores', () => {
    // 2 cores, 1 s of wall time = 2 s of total time, 0.5 s of it busy: a quarter of both cores.
    expect(
      busyCoresBetween({ busySeconds: 10, totalSeconds: 100 }, { busySeconds: 10.5, totalSeconds: 102 }, 2),
    ).toBeCloseTo(0.5)
  })

  it('is 0 when no time passed', () => {
    expect(
      busyCoresBetween({ busySeconds: 1, totalSeconds: 5 }, { busySeconds: 1, totalSeconds: 5 }, 2),
    ).toBe(0)
  })
})

describe('flushAndWaitForQuiet', () => {
  it('runs sync and reports what it saw in the last window', async () => {
    // An impossible threshold: the wait must end by its timeout and say so.
    const result = await flushAndWaitForQuiet({ windowMs: 20, maxBusyCores: -1, timeoutMs: 60 })
    expect(result.quiet).toBe(false)
    expect(result.syncSeconds).toBeGreaterThanOrEqual(0)
    expect(result.waitSeconds).toBeGreaterThanOrEqual(0.06)
    expect(result.busyCores).toBeGreaterThanOrEqual(0)
  })
})

describe('probeCpuSpeed', () => {
  it("gives one core's sha256 rate in MB/s, a finite number well above zero", () => {
    const speed = probeCpuSpeed(4 * 1024 * 1024, 2)
    expect(Number.isFinite(speed)).toBe(true)
    // Any core that runs this suite hashes far more than 10 MB/s; a broken timer or a
    // unit slip (bytes vs MB) lands outside this range.
    expect(speed).toBeGreaterThan(10)
    expect(speed).toBeLessThan(100_000)
  })
})
