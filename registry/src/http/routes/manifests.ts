/** `/v2/<name>/manifests/<reference>`: HEAD, GET, PUT and DELETE of manifests by tag or digest. */
import type { Context } from 'koa'
import { ManifestTooLargeError } from '../../../../protocol/src/index.js'
import type { ManifestRecord } from '../../service.js'
import { readBodyLimited } from '../body.js'
import { referenceParam, repositoryParam } from '../params.js'
import { answerEmpty } from './answer.js'
import type { EndpointHandlers, RouteDeps } from './types.js'

/**
 * Handlers of the manifest endpoint. Answers carry the stored media type as is (every
 * client accepts the four manifest kinds shoal stores), Docker-Content-Digest, and the
 * digest as ETag.
 */
export function createManifestRoutes(
  deps: Pick<RouteDeps, 'registry' | 'maxManifestBytes'>,
): EndpointHandlers<'manifest'> {
  const { registry, maxManifestBytes } = deps
  return {
    HEAD: async (ctx, match, signal) => {
      const info = await registry.statManifest(repositoryParam(match.name), referenceParam(match.reference), {
        signal,
      })
      setManifestHeaders(ctx, info)
      ctx.set('Content-Length', String(info.size))
      ctx.status = 200
    },
    GET: async (ctx, match, signal) => {
      const manifest = await registry.getManifest(
        repositoryParam(match.name),
        referenceParam(match.reference),
        {
          signal,
        },
      )
      setManifestHeaders(ctx, manifest)
      ctx.status = 200
      if (ctx.fresh) {
        ctx.status = 304
        return
      }
      ctx.body = Buffer.from(manifest.body.buffer, manifest.body.byteOffset, manifest.body.byteLength)
    },
    PUT: async (ctx, match, signal) => {
      const name = repositoryParam(match.name)
      const reference = referenceParam(match.reference)
      const body = await readBodyLimited(
        ctx.req,
        maxManifestBytes,
        (limit) => new ManifestTooLargeError(`manifest exceeds ${limit} bytes`, { limit }),
      )
      const mediaType = ctx.get('Content-Type') || undefined
      const result = await registry.putManifest(name, reference, mediaType, body, { signal })
      ctx.set('Location', `/v2/${name}/manifests/${result.digest}`)
      ctx.set('Docker-Content-Digest', result.digest)
      if (result.subject !== undefined) ctx.set('OCI-Subject', result.subject)
      answerEmpty(ctx, 201)
    },
    DELETE: async (ctx, match, signal) => {
      await registry.deleteManifest(repositoryParam(match.name), referenceParam(match.reference), { signal })
      answerEmpty(ctx, 202)
    },
  }
}

function setManifestHeaders(ctx: Context, info: Omit<ManifestRecord, 'body'>): void {
  ctx.set('Content-Type', info.mediaType)
  ctx.set('Docker-Content-Digest', info.digest)
  ctx.set('ETag', `"${info.digest}"`)
}
