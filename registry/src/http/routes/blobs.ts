/** `/v2/<name>/blobs/<digest>`: HEAD, GET (with single byte ranges) and DELETE of blobs. */
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Context } from 'koa'
import type { Counter } from 'prom-client'
import type { BlobInfo, BlobReader } from '../../service.js'
import { digestParam, repositoryParam } from '../params.js'
import { contentRange, type ResolvedRange, resolveRange } from '../range.js'
import { sendFile } from '../send-file.js'
import { answerEmpty } from './answer.js'
import type { EndpointHandlers, RouteDeps } from './types.js'

/**
 * Handlers of the blob endpoint. GET sends the blob's file through reused buffers when
 * the storage offers one (send-file.ts), and otherwise streams the service's reader to
 * the socket; both with backpressure (memory stays flat for any size), counting bytes
 * as they go out. A `Range` request answers 206 with Content-Range, or 416 with
 * `Content-Range: bytes *\/size` when unsatisfiable; a Range header that is not one
 * valid `bytes=` range is ignored (RFC 9110) and the whole blob served.
 */
export function createBlobRoutes(deps: Pick<RouteDeps, 'registry' | 'metrics'>): EndpointHandlers<'blob'> {
  const { registry, metrics } = deps
  return {
    HEAD: async (ctx, match, signal) => {
      const info = await registry.statBlob(repositoryParam(match.name), digestParam(match.digest), { signal })
      setBlobHeaders(ctx, info)
      ctx.set('Content-Length', String(info.size))
      ctx.status = 200
    },
    GET: async (ctx, match, signal) => {
      const name = repositoryParam(match.name)
      const digest = digestParam(match.digest)
      const rangeHeader = ctx.get('Range')
      let range: ResolvedRange | undefined
      if (rangeHeader !== '') {
        // The size is needed to resolve suffix ranges and to answer 416 properly.
        const info = await registry.statBlob(name, digest, { signal })
        range = resolveRange(rangeHeader, info.size)
      }
      const reader = await registry.getBlob(name, digest, range, { signal })
      setBlobHeaders(ctx, reader.info)
      if (range === undefined) {
        ctx.status = 200
        ctx.set('Content-Length', String(reader.info.size))
      } else {
        ctx.status = 206
        ctx.set('Content-Range', contentRange(reader.range, reader.info.size))
        ctx.set('Content-Length', String(reader.range.end - reader.range.start + 1))
      }
      if (reader.file !== undefined) {
        // Koa leaves the response to us: the file goes out through reused buffers.
        ctx.respond = false
        await sendFile(ctx.res, reader.file, reader.range, (bytes) => metrics.bytesSent.inc(bytes))
        return
      }
      ctx.body = countSent(reader, metrics.bytesSent)
    },
    DELETE: async (ctx, match, signal) => {
      await registry.deleteBlob(repositoryParam(match.name), digestParam(match.digest), { signal })
      answerEmpty(ctx, 202)
    },
  }
}

function setBlobHeaders(ctx: Context, info: BlobInfo): void {
  ctx.set('Content-Type', 'application/octet-stream')
  ctx.set('Docker-Content-Digest', info.digest)
  ctx.set('ETag', `"${info.digest}"`)
  ctx.set('Accept-Ranges', 'bytes')
  // Content-addressed: a blob's bytes never change.
  ctx.set('Cache-Control', 'max-age=31536000')
}

/**
 * Passes the reader's bytes through, counting each chunk as it is handed on to the
 * response (whose pull, through backpressure, paces the source). An
 * error of the source reaches the response (which is then cut off); a client that goes
 * away destroys the source.
 */
function countSent(reader: BlobReader, sent: Counter): Transform {
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      sent.inc(chunk.byteLength)
      callback(null, chunk)
    },
  })
  pipeline(reader.stream, counter).catch(() => {
    // pipeline has destroyed both streams; Koa sees the counter's error and cuts off the response.
  })
  return counter
}
