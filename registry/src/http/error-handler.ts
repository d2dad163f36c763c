/**
 * The one place where thrown errors become HTTP answers: every error is rendered through
 * protocol's OCI error table as `{"errors":[{code,message,detail}]}` with the mapped
 * status. Routes only throw.
 */
import type { Middleware } from 'koa'
import type { Logger } from 'pino'
import { ociErrorBody, ociErrorFor, RangeInvalidError, ShoalError } from '../../../protocol/src/index.js'

/** Header every registry answer carries, errors included. */
export const API_VERSION_HEADER = 'Docker-Distribution-API-Version'
/** Its value. */
export const API_VERSION = 'registry/2.0'

/** Data a route may leave on `ctx.state` for the error answer. */
export interface ErrorHints {
  /** Methods the matched endpoint supports (rendered as `Allow` on a 405). */
  allow?: string[]
}

/**
 * Creates the error middleware. Headers a route set before it failed are dropped. A
 * RangeInvalidError whose detail has a numeric `size` answers `Content-Range: bytes
 * *\/size`. When the request body was not read to its end the connection is closed
 * after the answer, so an oversized or refused upload is not drained byte by byte.
 */
export function createErrorHandler(components: { logger?: Logger }): Middleware {
  const { logger } = components
  return async (ctx, next) => {
    try {
      await next()
    } catch (err) {
      if (ctx.headerSent || !ctx.writable) {
        // Nothing can be answered any more; make sure the client sees a broken response.
        ctx.res.destroy()
        logger?.debug({ err, method: ctx.method, path: ctx.path }, 'error after response started')
        return
      }
      const { status } = ociErrorFor(err)
      for (const name of Object.keys(ctx.response.headers)) ctx.remove(name)
      ctx.set(API_VERSION_HEADER, API_VERSION)
      const hints = ctx.state as ErrorHints
      if (status === 405 && hints.allow !== undefined) ctx.set('Allow', hints.allow.join(', '))
      if (err instanceof RangeInvalidError) {
        const size = (err.detail as { size?: unknown } | undefined)?.size
        if (typeof size === 'number') ctx.set('Content-Range', `bytes */${size}`)
      }
      if (!ctx.req.complete) ctx.set('Connection', 'close')
      ctx.status = status
      ctx.set('Content-Type', 'application/json; charset=utf-8')
      // Only domain errors are meant for clients; anything else may carry internals such
      // as file paths, and is only logged.
      const shown = err instanceof ShoalError ? err : new Error('internal server error')
      ctx.body = Buffer.from(JSON.stringify(ociErrorBody(shown)))
      if (status >= 500) {
        logger?.error({ err, method: ctx.method, path: ctx.path, status }, 'request failed')
      } else if (!(err instanceof ShoalError)) {
        logger?.warn({ err, method: ctx.method, path: ctx.path, status }, 'request failed')
      }
    }
  }
}
