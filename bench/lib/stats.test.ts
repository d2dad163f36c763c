import { describe, expect, it } from 'vitest'
import { median, megabytesPerSecond, summarize } from './stats.js'

describe('stats', () => {
  it('takes the middle value, or the mean of the middle two', () => {
    expect(median([5, 1, 3])).toBe(3)
    expect(median([4, 1, 3, 2])).toBe(2.5)
    expect(() => median([])).toThrow(RangeError)
  })

  it('summarizes a series', () => {
    expect(summarize([2, 4, 9])).toEqual({ n: 3, min: 2, median: 4, mean: 5, max: 9, values: [2, 4, 9] })
  })

  it('reports MB/s in decimal megabytes', () => {
    expect(megabytesPerSecond(50_000_000, 2)).toBe(25)
    expect(megabytesPerSecond(1, 0)).toBeNaN()
  })
})
