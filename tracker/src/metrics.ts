/**
 * The tracker's Prometheus metrics, registered on the prom-client Registry it is given:
 *
 * - shoal_tracker_announces_total{event}: announces handled (event: started, completed, stopped, update)
 * - shoal_tracker_origin_grants_total: announces answered with allowOrigin true
 * - shoal_tracker_reports_total{dropped}: bad-peer reports, and whether they dropped the peer
 * - shoal_tracker_http_requests_total{route,status}: HTTP requests by route and status
 * - shoal_tracker_peers{state}: live peers by state (complete, partial, seed), read from the store at scrape
 * - shoal_tracker_swarms: live swarms, read from the store at scrape
 */
import type { Logger } from 'pino'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { PeerStore } from './peer-store/index.js'
import type { TrackerEvents } from './tracker.js'

/** The tracker's metric handles. */
export interface TrackerMetrics {
  events: TrackerEvents
  httpRequests: Counter<'route' | 'status'>
}

/** Registers the tracker's metrics on `registry`; gauges read `store` when scraped. */
export function createTrackerMetrics(components: {
  registry: Registry
  store: PeerStore
  logger?: Logger
  now?: () => number
}): TrackerMetrics {
  const { registry, store } = components
  const now = components.now ?? Date.now
  const announces = new Counter({
    name: 'shoal_tracker_announces_total',
    help: 'Announces handled by the tracker, by event',
    labelNames: ['event'] as const,
    registers: [registry],
  })
  const originGrants = new Counter({
    name: 'shoal_tracker_origin_grants_total',
    help: 'Announces answered with allowOrigin true (back-to-origin slots granted or renewed)',
    registers: [registry],
  })
  const reports = new Counter({
    name: 'shoal_tracker_reports_total',
    help: 'Bad-peer reports received, by whether they dropped the peer',
    labelNames: ['dropped'] as const,
    registers: [registry],
  })
  const httpRequests = new Counter({
    name: 'shoal_tracker_http_requests_total',
    help: 'HTTP requests served by the tracker API, by route and status',
    labelNames: ['route', 'status'] as const,
    registers: [registry],
  })

  // One store read serves both gauges within a scrape.
  let pending: ReturnType<PeerStore['stats']> | undefined
  function stats(): ReturnType<PeerStore['stats']> {
    pending ??= store.stats(now()).finally(() => {
      pending = undefined
    })
    return pending
  }
  new Gauge({
    name: 'shoal_tracker_peers',
    help: 'Live peers in all swarms, by state (complete, partial, seed)',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      try {
        const s = await stats()
        this.set({ state: 'complete' }, s.complete)
        this.set({ state: 'partial' }, s.partial)
        this.set({ state: 'seed' }, s.seeds)
      } catch (err) {
        components.logger?.warn({ err }, 'could not read peer counts for metrics')
      }
    },
  })
  new Gauge({
    name: 'shoal_tracker_swarms',
    help: 'Live swarms (blobs with at least one live peer)',
    registers: [registry],
    async collect() {
      try {
        this.set((await stats()).swarms)
      } catch (err) {
        components.logger?.warn({ err }, 'could not read swarm count for metrics')
      }
    },
  })

  return {
    httpRequests,
    events: {
      onAnnounce(event, allowOrigin) {
        announces.inc({ event })
        if (allowOrigin) originGrants.inc()
      },
      onReport(dropped) {
        reports.inc({ dropped: String(dropped) })
      },
    },
  }
}
