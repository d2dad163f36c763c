import { describe, expect, it } from 'vitest'
import { fluidBound, percentile } from './bound.js'

describe('fluid bound', () => {
  it('is bound by the node download when the swarm has capacity to spare', () => {
    // 100 MB at 100 Mbit/s is 8 s; the swarm term is 10*800e6/(200e6+1000e6) = 6.67 s.
    const bound = fluidBound({
      fileBytes: 100e6,
      nodes: 10,
      originMbit: 200,
      nodeUpMbit: 100,
      nodeDownMbit: 100,
    })
    expect(bound.seconds).toBeCloseTo(8, 6)
    expect(bound.limitedBy).toBe('node download')
    expect(bound.swarmTermSeconds).toBeCloseTo(8000 / 1200, 6)
  })

  it('is bound by the origin when it is the slowest link, and by the swarm when nodes cannot upload', () => {
    expect(
      fluidBound({ fileBytes: 1e6, nodes: 5, originMbit: 1, nodeUpMbit: 100, nodeDownMbit: 100 }).limitedBy,
    ).toBe('origin upload')
    const noUpload = fluidBound({
      fileBytes: 1e6,
      nodes: 5,
      originMbit: 10,
      nodeUpMbit: 0,
      nodeDownMbit: 100,
    })
    expect(noUpload.limitedBy).toBe('swarm upload')
    expect(noUpload.seconds).toBeCloseTo(4, 6)
  })

  it('takes nearest-rank percentiles', () => {
    const values = [5, 1, 4, 2, 3, 6, 7, 8, 9, 10]
    expect(percentile(values, 50)).toBe(5)
    expect(percentile(values, 90)).toBe(9)
    expect(percentile(values, 99)).toBe(10)
    expect(percentile([3], 0)).toBe(3)
  })
})
