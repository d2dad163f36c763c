/**
 * The outermost middleware: stamps the API version header on every answer, and when the
 * response is over (finished or cut off) records the request metrics and writes one
 * access-log line.
 */
import type { Middleware } from 'koa'
import type { Logger } from 'pino'
import { API_VERSION, API_VERSION_HEADER } from './error-handler.js'
import type { HttpMetrics } from './metrics.js'

/** Route label of requests that matched no endpoint (keeps label cardinality bounded). */
export const UNMATCHED_ROUTE = 'unmatched'

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS'])

/** What the dispatcher leaves on `ctx.state` for this middleware. */
export interface ObservedState {
  /** The matched route template. */
  route?: string
}

/** Creates the observing middleware. */
export function createObserver(components: { metrics: HttpMetrics; logger?: Logger }): Middleware {
  const { metrics, logger } = components
  return async (ctx, next) => {
    const started = process.hrtime.bigint()
    ctx.set(API_VERSION_HEADER, API_VERSION)
    ctx.res.once('close', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      const route = (ctx.state as ObservedState).route ?? UNMATCHED_ROUTE
      const method = KNOWN_METHODS.has(ctx.method) ? ctx.method : 'OTHER'
      const status = ctx.res.statusCode
      metrics.requests.inc({ method, route, status: String(status) })
      metrics.duration.observe({ method, route }, seconds)
      logger?.debug(
        {
          method: ctx.method,
          path: ctx.path,
          route,
          status,
          durationMs: Math.round(seconds * 1e4) / 10,
          completed: ctx.res.writableFinished,
          remote: ctx.req.socket.remoteAddress,
        },
        'request',
      )
    })
    await next()
  }
}
