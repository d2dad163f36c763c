/**
 * One prom-client registry per served part, carrying the default process metrics
 * (CPU, memory, event loop lag, file descriptors) beside the part's own metrics.
 */
import { collectDefaultMetrics, Registry } from 'prom-client'

/** A new metrics registry with the default Node.js process metrics already registered. */
export function createMetricsRegistry(): Registry {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  return registry
}
