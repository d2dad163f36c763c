/**
 * The HTTP layer's Prometheus metrics. Registering twice on one prom-client Registry
 * (two apps in one process) reuses the metrics already there instead of throwing.
 */
import { Counter, Histogram, type Registry } from 'prom-client'

/** The metrics every registry app updates. */
export interface HttpMetrics {
  requests: Counter<'method' | 'route' | 'status'>
  duration: Histogram<'method' | 'route'>
  /** Blob bytes handed to clients' sockets. */
  bytesSent: Counter
  /** Blob bytes read from upload request bodies. */
  bytesReceived: Counter
}

/** Request durations span tiny manifest HEADs and multi-GiB layer transfers. */
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]

/** Creates (or finds) the HTTP metrics on `registry`. */
export function createHttpMetrics(registry: Registry): HttpMetrics {
  return {
    requests: counter(registry, {
      name: 'shoal_registry_http_requests_total',
      help: 'Registry API requests answered, by method, route template and status.',
      labelNames: ['method', 'route', 'status'] as const,
    }),
    duration: histogram(registry, {
      name: 'shoal_registry_http_request_duration_seconds',
      help: 'Time from request to the end of the response, by method and route template.',
      labelNames: ['method', 'route'] as const,
      buckets: DURATION_BUCKETS,
    }),
    bytesSent: counter(registry, {
      name: 'shoal_registry_blob_bytes_sent_total',
      help: 'Blob bytes sent to clients.',
      labelNames: [] as const,
    }),
    bytesReceived: counter(registry, {
      name: 'shoal_registry_blob_bytes_received_total',
      help: 'Blob bytes received in uploads.',
      labelNames: [] as const,
    }),
  }
}

function counter<T extends string>(
  registry: Registry,
  config: { name: string; help: string; labelNames: readonly T[] },
): Counter<T> {
  const existing = registry.getSingleMetric(config.name)
  if (existing instanceof Counter) return existing as Counter<T>
  return new Counter({ ...config, registers: [registry] })
}

function histogram<T extends string>(
  registry: Registry,
  config: { name: string; help: string; labelNames: readonly T[]; buckets: number[] },
): Histogram<T> {
  const existing = registry.getSingleMetric(config.name)
  if (existing instanceof Histogram) return existing as Histogram<T>
  return new Histogram({ ...config, registers: [registry] })
}
