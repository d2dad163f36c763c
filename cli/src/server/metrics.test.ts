import { describe, expect, it } from 'vitest'
import { createMetricsRegistry, EVENT_LOOP_MONITORING_PRECISION_MS } from './metrics.js'

describe('createMetricsRegistry', () => {
  it('samples the event-loop delay at its coarse precision, not every 10 ms', async () => {
    const registry = createMetricsRegistry()
    // The histogram records how late each of its timers fired, so its smallest sample is
    // about one resolution: ~0.01 s at prom-client's default of 10 ms.
    await new Promise((resolve) => setTimeout(resolve, 4 * EVENT_LOOP_MONITORING_PRECISION_MS))
    // The lag metric's collect reads the histogram and sets the min, max and percentiles.
    await registry.getSingleMetric('nodejs_eventloop_lag_seconds')?.get()
    const min = (await registry.getSingleMetric('nodejs_eventloop_lag_min_seconds')?.get())?.values[0]?.value
    expect(min).toBeDefined()
    expect(min!).toBeGreaterThanOrEqual((0.8 * EVENT_LOOP_MONITORING_PRECISION_MS) / 1000)
  })

  it('keeps the default process metrics', async () => {
    const text = await createMetricsRegistry().metrics()
    expect(text).toContain('process_cpu_seconds_total')
    expect(text).toContain('nodejs_eventloop_lag_p99_seconds')
  })
})
