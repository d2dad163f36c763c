import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import type { RegistryService } from '../service.js'
import { createRegistryApp } from './app.js'
import { createHttpMetrics } from './metrics.js'

describe('http metrics', () => {
  it('registers the four metrics once and reuses them for a second app on the same registry', async () => {
    const metrics = new Registry()
    const service = {} as RegistryService
    createRegistryApp({ registry: service, metrics })
    expect(() => createRegistryApp({ registry: service, metrics })).not.toThrow()
    const names = (await metrics.getMetricsAsJSON()).map((m) => m.name).sort()
    expect(names).toEqual([
      'shoal_registry_blob_bytes_received_total',
      'shoal_registry_blob_bytes_sent_total',
      'shoal_registry_http_request_duration_seconds',
      'shoal_registry_http_requests_total',
    ])
    expect(createHttpMetrics(metrics).requests).toBe(
      metrics.getSingleMetric('shoal_registry_http_requests_total'),
    )
  })

  it('uses a private registry when none is given', () => {
    const service = {} as RegistryService
    expect(() => {
      createRegistryApp({ registry: service })
      createRegistryApp({ registry: service })
    }).not.toThrow()
  })
})
