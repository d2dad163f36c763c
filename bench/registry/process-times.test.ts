import { describe, expect, it } from 'vitest'
import { diffProcessTimes, parseProcessTimes, readProcessTimes } from './process-times.js'

// A real line of /proc/<pid>/stat with a command name holding a space and a ')'.
const STAT =
  '4242 (node a) b) S 1 4242 4242 0 -1 4194304 12345 0 7 0 250 31 0 0 20 0 11 0 100 1000 2000 ' +
  '18446744073709551615 1 1 0 0 0 0 0 16781312 134234626 0 0 0 17 1 0 0 0 0 0'

describe('process times', () => {
  it('reads minor and major faults and user and system seconds after the command name', () => {
    expect(parseProcessTimes(STAT)).toEqual({
      minorFaults: 12345,
      majorFaults: 7,
      userSeconds: 2.5,
      systemSeconds: 0.31,
    })
  })

  it('rejects text that is not a stat line', () => {
    expect(() => parseProcessTimes('nothing here')).toThrow()
  })

  it('reads this process and takes differences field by field', () => {
    const before = readProcessTimes(process.pid)
    // Touch fresh memory so that the fault counter moves.
    const pages = Buffer.alloc(8 * 1024 * 1024, 1)
    const after = readProcessTimes(process.pid)
    const diff = diffProcessTimes(before, after)
    expect(pages[0]).toBe(1)
    expect(diff.minorFaults).toBeGreaterThan(0)
    expect(diff.userSeconds).toBeGreaterThanOrEqual(0)
    expect(diff.systemSeconds).toBeGreaterThanOrEqual(0)
  })
})
