import { describe, expect, it } from 'vitest'
import { buildRegistryRows, type RegistryMeasurements } from './rows.js'
import type { ThroughputResult } from './scenarios.js'

const settings = {
  blobBytes: 512 * 1024 * 1024,
  chunkBytes: 16 * 1024 * 1024,
  concurrency: 4,
  connections: 50,
  durationSeconds: 5,
  largeBlobBytes: 1024 * 1024 * 1024,
  rssLimitBytes: 200e6,
}
const names = { candidate: 'shoal', baseline: 'distribution' }

function throughput(mbPerSecond: number, peakRssBytes: number): ThroughputResult {
  return {
    mbPerSecond: {
      n: 1,
      min: mbPerSecond,
      median: mbPerSecond,
      mean: mbPerSecond,
      max: mbPerSecond,
      values: [mbPerSecond],
    },
    peakRssBytes,
    cpuSecondsPerGiB: 0.5,
    serverCores: 1,
    backgroundSeconds: 0,
    userSecondsPerGiB: 0.1,
    systemSecondsPerGiB: 0.4,
    minorFaultsPerGiB: 10,
    runs: [],
  }
}

describe('buildRegistryRows', () => {
  it('reports only the parts that ran (--only pull-1)', () => {
    const m: RegistryMeasurements = {
      pull: { shoal: throughput(2000, 130e6), distribution: throughput(1800, 35e6) },
      idleRss: { shoal: 100e6, distribution: 22e6 },
    }
    const rows = buildRegistryRows(m, names, settings)
    const metrics = rows.map((row) => row.metric)
    expect(metrics).toContain('blob pull 512 MiB, 1 stream')
    expect(metrics).toContain('peak RSS during 512 MiB pulls')
    expect(metrics.some((metric) => metric.includes('push'))).toBe(false)
    expect(metrics.some((metric) => metric.includes('manifest'))).toBe(false)
    expect(rows.find((row) => row.metric === 'peak RSS during 512 MiB pulls')?.candidate).toBe(130)
  })

  it('takes the peak RSS over pushes and pulls when both ran', () => {
    const m: RegistryMeasurements = {
      mono: { shoal: throughput(300, 140e6), distribution: throughput(280, 30e6) },
      chunked: { shoal: throughput(300, 120e6), distribution: throughput(280, 30e6) },
      pull: { shoal: throughput(2000, 130e6), distribution: throughput(1800, 35e6) },
      idleRss: { shoal: 100e6, distribution: 22e6 },
    }
    const row = buildRegistryRows(m, names, settings).find((r) => r.metric.startsWith('peak RSS during'))
    expect(row).toMatchObject({ metric: 'peak RSS during 512 MiB pushes and pulls', candidate: 140 })
  })
})
