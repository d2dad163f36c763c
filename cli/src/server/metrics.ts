/**
 * One prom-client registry per served part, carrying the default process metrics
 * (CPU, memory, event loop lag, file descriptors) beside the part's own metrics.
 */
import { collectDefaultMetrics, Registry } from 'prom-client'

/**
 * Resolution of the event-loop delay histogram, in milliseconds. prom-client's default
 * of 10 wakes every process 100 times a second to sample the delay; on this project's
 * test machine that alone cost an idle process 4-5 ms of CPU per second, and a node of
 * the cluster testbed runs one agent among fifty on two cores. At 100 ms the histogram
 * still shows stalls that matter (a blocked loop shows up as its full delay).
 */
export const EVENT_LOOP_MONITORING_PRECISION_MS = 100

/** A new metrics registry with the default Node.js process metrics already registered. */
export function createMetricsRegistry(): Registry {
  const registry = new Registry()
  collectDefaultMetrics({
    register: registry,
    eventLoopMonitoringPrecision: EVENT_LOOP_MONITORING_PRECISION_MS,
  })
  return registry
}
