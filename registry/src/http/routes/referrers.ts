/** `GET /v2/<name>/referrers/<digest>`: manifests whose subject is the digest, as an OCI index. */
import { MEDIA_TYPES } from '../../../../protocol/src/index.js'
import { digestParam, queryParam, repositoryParam } from '../params.js'
import type { EndpointHandlers, RouteDeps } from './types.js'

/**
 * Handlers of the referrers API: an image index of the referrers' descriptors, filtered
 * by `?artifactType=` when given (then named in `OCI-Filters-Applied`).
 */
export function createReferrerRoutes(deps: Pick<RouteDeps, 'registry'>): EndpointHandlers<'referrers'> {
  const { registry } = deps
  return {
    GET: async (ctx, match, signal) => {
      const name = repositoryParam(match.name)
      const digest = digestParam(match.digest)
      const artifactType = queryParam(ctx.query, 'artifactType') || undefined
      const result = await registry.referrers(name, digest, artifactType, { signal })
      if (result.filtersApplied.length > 0) ctx.set('OCI-Filters-Applied', result.filtersApplied.join(','))
      ctx.set('Content-Type', MEDIA_TYPES.ociIndex)
      ctx.status = 200
      const index = { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: result.descriptors }
      ctx.body = Buffer.from(JSON.stringify(index))
    },
  }
}
