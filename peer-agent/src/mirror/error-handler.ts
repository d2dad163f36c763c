/**
 * The mirror's one error middleware: every thrown error becomes the OCI error body
 * with the status protocol's table maps it to (an upstream failure keeps the
 * upstream's status), and a 401 carries the upstream's challenge so the client
 * authenticates where the upstream expects it to.
 */
import type { Middleware } from 'koa'
import type { Logger } from 'pino'
import {
  ociErrorBody,
  ociErrorFor,
  RangeInvalidError,
  ShoalError,
  UnauthorizedError,
} from '../../../protocol/src/index.js'

/** Header every answer carries, errors included. */
export const API_VERSION_HEADER = 'Docker-Distribution-API-Version'
/** Its value. */
export const API_VERSION = 'registry/2.0'

/**
 * Creates the error middleware. Headers a route set before it failed are dropped; a 405
 * answers `Allow` from the error's `detail.allow`.
 */
export function createErrorHandler(components: { logger?: Logger }): Middleware {
  const { logger } = components
  return async (ctx, next) => {
    try {
      await next()
    } catch (err) {
      if (ctx.headerSent || !ctx.writable) {
        // The answer is under way: cut it off so the client sees a broken response, not a short blob.
        ctx.res.destroy()
        logger?.debug({ err, method: ctx.method, path: ctx.path }, 'error after response started')
        return
      }
      const { status } = ociErrorFor(err)
      for (const name of Object.keys(ctx.response.headers)) ctx.remove(name)
      ctx.set(API_VERSION_HEADER, API_VERSION)
      const detail =
        err instanceof ShoalError ? (err.detail as Record<string, unknown> | undefined) : undefined
      if (err instanceof UnauthorizedError && typeof detail?.wwwAuthenticate === 'string') {
        ctx.set('WWW-Authenticate', detail.wwwAuthenticate)
      }
      if (status === 405 && Array.isArray(detail?.allow)) ctx.set('Allow', detail.allow.join(', '))
      if (err instanceof RangeInvalidError && typeof detail?.size === 'number') {
        ctx.set('Content-Range', `bytes */${detail.size}`)
      }
      ctx.status = status
      ctx.set('Content-Type', 'application/json; charset=utf-8')
      // Only domain errors are meant for clients; anything else may carry internals.
      const shown = err instanceof ShoalError ? err : new Error('internal server error')
      ctx.body = Buffer.from(JSON.stringify(ociErrorBody(shown)))
      if (status >= 500) {
        logger?.warn({ err, method: ctx.method, path: ctx.path, status }, 'request failed')
      } else if (!(err instanceof ShoalError)) {
        logger?.warn({ err, method: ctx.method, path: ctx.path, status }, 'request failed')
      }
    }
  }
}
