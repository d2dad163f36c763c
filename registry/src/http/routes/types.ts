/**
 * What route modules share: their collaborators and the shape of a handler. A handler
 * parses its request, calls one service method, sets headers and the body; it throws
 * domain errors and never picks an error status itself.
 */
import type { Context } from 'koa'
import type { RegistryService } from '../../service.js'
import type { HttpMetrics } from '../metrics.js'
import type { RouteMatch, RouteName } from '../router.js'

/** Collaborators of the route handlers. */
export interface RouteDeps {
  registry: RegistryService
  metrics: HttpMetrics
  /** Largest manifest body accepted on PUT, in bytes. */
  maxManifestBytes: number
}

/** Handles one method of one endpoint; `signal` aborts when the client goes away. */
export type RouteHandler<M extends RouteMatch> = (
  ctx: Context,
  match: M,
  signal: AbortSignal,
) => Promise<void>

/** The handlers of one endpoint, by HTTP method. */
export type EndpointHandlers<R extends RouteName> = Partial<
  Record<string, RouteHandler<Extract<RouteMatch, { route: R }>>>
>

/** Handlers of every endpoint. */
export type RouteTable = { [R in RouteName]: EndpointHandlers<R> }
