/**
 * The registry's HTTP face: the whole OCI Distribution Spec v1.1 API over a
 * RegistryService, as a Koa application. Routes are thin (parse, call one service
 * method, set headers, stream the body); one middleware renders every error.
 *
 * ```
 * GET|HEAD   /v2/                                   200 {}
 * GET        /v2/_catalog?n=&last=                  200 {repositories}, Link when more
 * GET|HEAD   /v2/<name>/manifests/<ref>             200 stored media type, Docker-Content-Digest, ETag
 * PUT        /v2/<name>/manifests/<ref>             201 Location, Docker-Content-Digest[, OCI-Subject]
 * DELETE     /v2/<name>/manifests/<ref>             202
 * GET|HEAD   /v2/<name>/blobs/<digest>              200, or 206/416 for Range: bytes=N-|N-M|-K
 * DELETE     /v2/<name>/blobs/<digest>              202
 * POST       /v2/<name>/blobs/uploads/              202 session; ?digest= 201; ?mount=[&from=] 201 or 202
 * GET        /v2/<name>/blobs/uploads/<id>          204 Range: 0-<offset-1>
 * PATCH      /v2/<name>/blobs/uploads/<id>          202 (Content-Range start-end, or streamed)
 * PUT        /v2/<name>/blobs/uploads/<id>?digest=  201 Location /v2/<name>/blobs/<digest>
 * DELETE     /v2/<name>/blobs/uploads/<id>          204
 * GET        /v2/<name>/tags/list?n=&last=          200 {name, tags}, Link when more
 * GET        /v2/<name>/referrers/<digest>          200 image index[, OCI-Filters-Applied]
 * ```
 */
import Koa, { type Context, type Middleware } from 'koa'
import type { Logger } from 'pino'
import { Registry } from 'prom-client'
import { RouteUnknownError, UnsupportedError } from '../../../protocol/src/index.js'
import type { RegistryService } from '../service.js'
import { createErrorHandler, type ErrorHints } from './error-handler.js'
import { createHttpMetrics } from './metrics.js'
import { createObserver, type ObservedState } from './observe.js'
import { matchRoute, ROUTE_TEMPLATES, type RouteMatch } from './router.js'
import { createBaseRoutes } from './routes/base.js'
import { createBlobRoutes } from './routes/blobs.js'
import { createCatalogRoutes } from './routes/catalog.js'
import { createManifestRoutes } from './routes/manifests.js'
import { createReferrerRoutes } from './routes/referrers.js'
import { createTagRoutes } from './routes/tags.js'
import type { RouteHandler, RouteTable } from './routes/types.js'
import { createUploadRoutes, createUploadStartRoutes } from './routes/uploads.js'

/** Collaborators of the registry app. */
export interface RegistryAppComponents {
  registry: RegistryService
  logger?: Logger
  /** Where the HTTP metrics are registered; a private registry when omitted. */
  metrics?: Registry
  /**
   * Extra routes outside /v2/ (the seed's /shoal/v1/...), run before the OCI routes
   * under the same observer and error middleware; they call next() for paths they do
   * not serve.
   */
  routes?: Middleware
}

/** Options of the registry app. */
export interface RegistryAppInit {
  /**
   * Largest manifest body accepted on PUT, in bytes; bigger ones answer 413.
   * @default 4194304 (4 MiB)
   */
  maxManifestBytes?: number
}

/** Default manifest size limit (4 MiB), as common registries use. */
export const DEFAULT_MAX_MANIFEST_BYTES = 4 * 1024 * 1024

/**
 * Creates the Koa app that serves `/v2/...` over `registry`. Every answer carries
 * `Docker-Distribution-API-Version: registry/2.0`; errors answer the OCI error body with
 * the status protocol's error table maps them to (an unknown path 404, an unsupported
 * method 405 with `Allow`). It registers shoal_registry_http_requests_total,
 * shoal_registry_http_request_duration_seconds, shoal_registry_blob_bytes_sent_total and
 * shoal_registry_blob_bytes_received_total on `components.metrics`.
 */
export function createRegistryApp(components: RegistryAppComponents, init: RegistryAppInit = {}): Koa {
  const { registry, logger } = components
  const metrics = createHttpMetrics(components.metrics ?? new Registry())
  const maxManifestBytes = init.maxManifestBytes ?? DEFAULT_MAX_MANIFEST_BYTES
  const routes: RouteTable = {
    base: createBaseRoutes(),
    catalog: createCatalogRoutes({ registry }),
    manifest: createManifestRoutes({ registry, maxManifestBytes }),
    blob: createBlobRoutes({ registry, metrics }),
    uploads: createUploadStartRoutes({ registry, metrics }),
    upload: createUploadRoutes({ registry, metrics }),
    tags: createTagRoutes({ registry }),
    referrers: createReferrerRoutes({ registry }),
  }
  const app = new Koa()
  // Errors Koa reports itself are those of a response already under way (mostly clients
  // that went away mid-download); the error middleware has answered everything else.
  app.on('error', (err: unknown) => logger?.debug({ err }, 'response failed after it started'))
  app.use(createObserver({ metrics, logger }))
  app.use(createErrorHandler({ logger }))
  if (components.routes) app.use(components.routes)
  app.use(createDispatcher(routes))
  return app
}

/** Finds the endpoint and method handler and runs it with a signal that aborts when the client goes away. */
function createDispatcher(routes: RouteTable): Middleware {
  return async (ctx) => {
    const match = matchRoute(ctx.path)
    if (match === undefined) throw new RouteUnknownError(undefined, { path: ctx.path.slice(0, 300) })
    const template = ROUTE_TEMPLATES[match.route]
    ;(ctx.state as ObservedState).route = template
    const handlers = routes[match.route] as Partial<Record<string, RouteHandler<RouteMatch>>>
    // HEAD of an endpoint without its own HEAD handler is its GET without the body.
    const handler = handlers[ctx.method] ?? (ctx.method === 'HEAD' ? handlers.GET : undefined)
    if (handler === undefined) {
      const allow = Object.keys(handlers)
      if (allow.includes('GET') && !allow.includes('HEAD')) allow.push('HEAD')
      ;(ctx.state as ErrorHints).allow = allow
      throw new UnsupportedError(`${ctx.method} is not supported on ${template}`, {
        method: ctx.method,
        allow,
      })
    }
    await handler(ctx, match, clientGone(ctx))
  }
}

/** A signal that aborts when the connection closes before the response has been sent. */
function clientGone(ctx: Context): AbortSignal {
  const controller = new AbortController()
  ctx.res.once('close', () => {
    if (!ctx.res.writableFinished) controller.abort(new Error('client closed the connection'))
  })
  return controller.signal
}
