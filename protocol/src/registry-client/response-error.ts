/**
 * Turns a failed registry answer into a shoal domain error: 404 by what was asked for,
 * 401/403/429 by status, OCI error codes of other 4xx answers by the shared table, and
 * everything else into UpstreamError carrying the upstream's status.
 */
import {
  BlobUnknownError,
  BlobUploadInvalidError,
  BlobUploadUnknownError,
  DeniedError,
  DigestInvalidError,
  ManifestBlobUnknownError,
  ManifestInvalidError,
  ManifestUnknownError,
  NameInvalidError,
  NameUnknownError,
  RangeInvalidError,
  type ShoalError,
  SizeInvalidError,
  TagInvalidError,
  TooManyRequestsError,
  UnauthorizedError,
  UnsupportedError,
  UpstreamError,
} from '../errors.js'

/** What a request was about, which decides what a 404 means. */
export type ResourceKind = 'blob' | 'manifest' | 'tags' | 'upload' | 'base'

/** An OCI error entry as registries send it. */
export interface UpstreamErrorEntry {
  code?: string
  message?: string
  detail?: unknown
}

type ErrorClass = new (message?: string, detail?: unknown, options?: { cause?: unknown }) => ShoalError

const BY_CODE: Record<string, ErrorClass> = {
  BLOB_UNKNOWN: BlobUnknownError,
  BLOB_UPLOAD_INVALID: BlobUploadInvalidError,
  BLOB_UPLOAD_UNKNOWN: BlobUploadUnknownError,
  DIGEST_INVALID: DigestInvalidError,
  MANIFEST_BLOB_UNKNOWN: ManifestBlobUnknownError,
  MANIFEST_INVALID: ManifestInvalidError,
  MANIFEST_UNKNOWN: ManifestUnknownError,
  NAME_INVALID: NameInvalidError,
  NAME_UNKNOWN: NameUnknownError,
  SIZE_INVALID: SizeInvalidError,
  TAG_INVALID: TagInvalidError,
  UNSUPPORTED: UnsupportedError,
  RANGE_INVALID: RangeInvalidError,
}

const MAX_ERROR_BODY = 64 * 1024

/** Reads at most 64 KiB of an error body and parses OCI `errors` from it, if any. */
export async function readErrorEntries(res: Response): Promise<UpstreamErrorEntry[]> {
  if (res.body === null) return []
  let text = ''
  try {
    const reader = res.body.getReader()
    const decoder = new TextDecoder()
    while (text.length < MAX_ERROR_BODY) {
      const { done, value } = await reader.read()
      if (done) break
      text += decoder.decode(value, { stream: true })
    }
    await reader.cancel().catch(() => {})
  } catch {
    return []
  }
  try {
    const json = JSON.parse(text) as { errors?: unknown }
    if (Array.isArray(json.errors)) {
      return json.errors.filter((e): e is UpstreamErrorEntry => typeof e === 'object' && e !== null)
    }
  } catch {
    // Not JSON: fall through.
  }
  return []
}

/**
 * The domain error for a failed upstream answer. `what` names the request in the
 * message (`GET https://r/v2/x/manifests/latest`).
 */
export function errorForStatus(
  status: number,
  kind: ResourceKind,
  what: string,
  entries: UpstreamErrorEntry[] = [],
): ShoalError {
  const first = entries[0]
  const message = `${what}: upstream answered ${status}${first?.message ? ` (${first.message})` : ''}`
  const detail = entries.length > 0 ? { upstreamStatus: status, errors: entries } : { upstreamStatus: status }
  if (status === 404) {
    if (kind === 'blob') return new BlobUnknownError(message, detail)
    if (kind === 'manifest') return new ManifestUnknownError(message, detail)
    if (kind === 'tags') return new NameUnknownError(message, detail)
    if (kind === 'upload') return new BlobUploadUnknownError(message, detail)
    return new UpstreamError(message, 404, detail)
  }
  if (status === 401) return new UnauthorizedError(message, detail)
  if (status === 403) return new DeniedError(message, detail)
  if (status === 429) return new TooManyRequestsError(message, detail)
  if (status === 416) return new RangeInvalidError(message, detail)
  if (status >= 400 && status < 500 && first?.code !== undefined) {
    const cls = BY_CODE[first.code]
    if (cls !== undefined) return new cls(message, detail)
  }
  return new UpstreamError(message, status, detail)
}

/**
 * True for failures that mean "the upstream is unavailable right now": no connection,
 * a deadline, 429, 5xx.
 */
export function isUpstreamUnavailable(err: unknown): boolean {
  if (err instanceof TooManyRequestsError) return true
  if (err instanceof Error && err.name === 'TimeoutError') return true
  return err instanceof UpstreamError && err.status >= 500
}
