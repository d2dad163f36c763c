/** `GET /v2/_catalog`: the registry's repositories, paginated with `n` and `last`. */
import { nextPageLink, parsePageRequest } from '../pagination.js'
import type { EndpointHandlers, RouteDeps } from './types.js'

/** Handlers of the catalog: `{"repositories"}`, with a `Link: <...>; rel="next"` header when more follow. */
export function createCatalogRoutes(deps: Pick<RouteDeps, 'registry'>): EndpointHandlers<'catalog'> {
  const { registry } = deps
  return {
    GET: async (ctx, _match, signal) => {
      const page = await registry.catalog(parsePageRequest(ctx.query), { signal })
      const link = nextPageLink('/v2/_catalog', page)
      if (link !== undefined) ctx.set('Link', link)
      ctx.status = 200
      ctx.body = { repositories: page.items }
    },
  }
}
