/**
 * Blob uploads: `POST /v2/<name>/blobs/uploads/` (start, monolithic `?digest=`, or
 * cross-repository `?mount=&from=`) and `GET|PATCH|PUT|DELETE
 * /v2/<name>/blobs/uploads/<id>`. Bodies stream straight into the service.
 */
import type { Context } from 'koa'
import { DigestInvalidError, SizeInvalidError } from '../../../../protocol/src/index.js'
import type { RegistryService } from '../../service.js'
import { declaredLength, hasBody, streamBody } from '../body.js'
import type { HttpMetrics } from '../metrics.js'
import { digestParam, queryParam, repositoryParam, uploadIdParam } from '../params.js'
import { parseUploadRange } from '../range.js'
import { answerBlobCreated, answerEmpty, answerUpload } from './answer.js'
import type { EndpointHandlers, RouteDeps } from './types.js'

/** Handlers of `POST /v2/<name>/blobs/uploads/`. */
export function createUploadStartRoutes(
  deps: Pick<RouteDeps, 'registry' | 'metrics'>,
): EndpointHandlers<'uploads'> {
  const { registry, metrics } = deps
  return {
    POST: async (ctx, match, signal) => {
      const name = repositoryParam(match.name)
      const mount = queryParam(ctx.query, 'mount')
      if (mount !== undefined) {
        const digest = digestParam(mount)
        const from = queryParam(ctx.query, 'from')
        const mounted = await registry.mountBlob(
          name,
          digest,
          from === undefined ? undefined : repositoryParam(from),
          { signal },
        )
        if (mounted !== undefined) return answerBlobCreated(ctx, name, mounted.digest)
        // Not mountable: the spec asks for an ordinary upload session instead.
      }
      const digest = mount === undefined ? queryParam(ctx.query, 'digest') : undefined
      if (digest !== undefined)
        return monolithicUpload(ctx, registry, metrics, name, digestParam(digest), signal)
      const upload = await registry.startUpload(name, { signal })
      answerUpload(ctx, name, upload, 202)
    },
  }
}

/**
 * A whole blob in one POST: opens a session and completes it with the body. A failed
 * completion cancels the session so that nothing is left behind.
 */
async function monolithicUpload(
  ctx: Context,
  registry: RegistryService,
  metrics: HttpMetrics,
  name: string,
  digest: string,
  signal: AbortSignal,
): Promise<void> {
  const length = declaredLength(ctx.req)
  const upload = await registry.startUpload(name, { signal })
  try {
    const body = hasBody(ctx.req) ? streamBody(ctx.req, metrics.bytesReceived) : undefined
    const chunk = length === undefined ? undefined : { length }
    const info = await registry.completeUpload(name, upload.id, digest, body, chunk, { signal })
    answerBlobCreated(ctx, name, info.digest)
  } catch (err) {
    await registry.cancelUpload(name, upload.id).catch(() => {})
    throw err
  }
}

/** Handlers of `/v2/<name>/blobs/uploads/<id>`. */
export function createUploadRoutes(
  deps: Pick<RouteDeps, 'registry' | 'metrics'>,
): EndpointHandlers<'upload'> {
  const { registry, metrics } = deps
  return {
    GET: async (ctx, match, signal) => {
      const name = repositoryParam(match.name)
      const upload = await registry.getUpload(name, uploadIdParam(match.id), { signal })
      answerUpload(ctx, name, upload, 204)
    },
    PATCH: async (ctx, match, signal) => {
      const name = repositoryParam(match.name)
      const id = uploadIdParam(match.id)
      const chunk = chunkOf(ctx)
      const upload = await registry.appendUpload(
        name,
        id,
        streamBody(ctx.req, metrics.bytesReceived),
        chunk,
        {
          signal,
        },
      )
      answerUpload(ctx, name, upload, 202)
    },
    PUT: async (ctx, match, signal) => {
      const name = repositoryParam(match.name)
      const id = uploadIdParam(match.id)
      const digestQuery = queryParam(ctx.query, 'digest')
      if (digestQuery === undefined) throw new DigestInvalidError('the digest query parameter is required')
      const digest = digestParam(digestQuery)
      const chunk = chunkOf(ctx)
      const body = hasBody(ctx.req) ? streamBody(ctx.req, metrics.bytesReceived) : undefined
      const info = await registry.completeUpload(
        name,
        id,
        digest,
        body,
        body === undefined ? undefined : chunk,
        {
          signal,
        },
      )
      answerBlobCreated(ctx, name, info.digest)
    },
    DELETE: async (ctx, match, signal) => {
      await registry.cancelUpload(repositoryParam(match.name), uploadIdParam(match.id), { signal })
      answerEmpty(ctx, 204)
    },
  }
}

/**
 * Where a chunk claims to start and how long it is, from Content-Range (`start-end`) and
 * Content-Length. Without Content-Range the chunk is appended at the current offset.
 * SizeInvalidError when the two headers disagree; RangeInvalidError (416) when
 * Content-Range is malformed.
 */
function chunkOf(ctx: Context): { start?: number; length?: number } {
  const length = declaredLength(ctx.req)
  const header = ctx.get('Content-Range')
  if (header === '') return length === undefined ? {} : { length }
  const range = parseUploadRange(header)
  if (length !== undefined && length !== range.length) {
    throw new SizeInvalidError(
      `Content-Length ${length} does not match Content-Range ${header.slice(0, 100)}`,
      {
        contentLength: length,
        rangeLength: range.length,
      },
    )
  }
  return range
}
