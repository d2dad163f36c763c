/**
 * Small helpers for the shapes of answer the registry API repeats: bodiless statuses,
 * upload-session headers, and "blob created".
 */
import type { Context } from 'koa'
import type { UploadState } from '../../service.js'
import { uploadRangeHeader } from '../range.js'

/**
 * Answers `status` with an empty body and `Content-Length: 0` (Koa would otherwise write
 * the status text as a body, or turn an empty 2xx into 204).
 */
export function answerEmpty(ctx: Context, status: number): void {
  ctx.body = null
  ctx.status = status
}

/** The URL path of an upload session. */
export function uploadLocation(name: string, id: string): string {
  return `/v2/${name}/blobs/uploads/${encodeURIComponent(id)}`
}

/** Sets Location, Range and Docker-Upload-UUID of an upload session and answers `status`. */
export function answerUpload(ctx: Context, name: string, upload: UploadState, status: number): void {
  ctx.set('Location', uploadLocation(name, upload.id))
  ctx.set('Range', uploadRangeHeader(upload.offset))
  ctx.set('Docker-Upload-UUID', upload.id)
  answerEmpty(ctx, status)
}

/** Answers 201 for a blob now present in `name`: Location and Docker-Content-Digest. */
export function answerBlobCreated(ctx: Context, name: string, digest: string): void {
  ctx.set('Location', `/v2/${name}/blobs/${digest}`)
  ctx.set('Docker-Content-Digest', digest)
  answerEmpty(ctx, 201)
}
