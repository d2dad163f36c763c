/** `GET /v2/<name>/tags/list`: the repository's tags, paginated with `n` and `last`. */
import { repositoryParam } from '../params.js'
import { nextPageLink, parsePageRequest } from '../pagination.js'
import type { EndpointHandlers, RouteDeps } from './types.js'

/** Handlers of the tag list: `{"name","tags"}`, with a `Link: <...>; rel="next"` header when more follow. */
export function createTagRoutes(deps: Pick<RouteDeps, 'registry'>): EndpointHandlers<'tags'> {
  const { registry } = deps
  return {
    GET: async (ctx, match, signal) => {
      const name = repositoryParam(match.name)
      const page = await registry.listTags(name, parsePageRequest(ctx.query), { signal })
      const link = nextPageLink(`/v2/${name}/tags/list`, page)
      if (link !== undefined) ctx.set('Link', link)
      ctx.status = 200
      ctx.body = { name, tags: page.items }
    },
  }
}
