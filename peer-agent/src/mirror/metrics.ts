/**
 * The mirror's Prometheus metrics. Creating them twice on one prom-client Registry
 * (two agents in one test process) reuses the metrics already there.
 */
import { Counter, type Registry } from 'prom-client'

/** The metrics the mirror endpoint and its blob source update. */
export interface MirrorMetrics {
  /** Requests answered, by method, route template and status. */
  requests: Counter<'method' | 'route' | 'status'>
  /** Blob bytes delivered to clients, by where they came from. */
  blobBytes: Counter<'source'>
}

/** Creates (or finds) the mirror metrics on `registry`. */
export function createMirrorMetrics(registry: Registry): MirrorMetrics {
  return {
    requests: counter(registry, {
      name: 'shoal_agent_http_requests_total',
      help: 'Mirror requests answered, by method, route template and status.',
      labelNames: ['method', 'route', 'status'] as const,
    }),
    blobBytes: counter(registry, {
      name: 'shoal_agent_blob_bytes_total',
      help: 'Blob bytes delivered to clients, by source (peer, seed, upstream, cache).',
      labelNames: ['source'] as const,
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
