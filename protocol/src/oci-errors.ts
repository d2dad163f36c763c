/**
 * The one table that maps domain errors to OCI Distribution error codes and HTTP
 * statuses (statuses from the distribution spec's error code table and endpoint list).
 */
import { ShoalError, UpstreamError } from './errors.js'

/** An OCI error code as it appears in `{"errors":[{"code": ...}]}`. */
export type OciErrorCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'RANGE_INVALID'
  | 'TAG_INVALID'
  | 'UNKNOWN'

/** The OCI rendering of an error: code and HTTP status. */
export interface OciErrorMapping {
  code: OciErrorCode
  status: number
}

const TABLE: Record<string, OciErrorMapping> = {
  BlobUnknownError: { code: 'BLOB_UNKNOWN', status: 404 },
  BlobUploadUnknownError: { code: 'BLOB_UPLOAD_UNKNOWN', status: 404 },
  BlobUploadInvalidError: { code: 'BLOB_UPLOAD_INVALID', status: 400 },
  DigestInvalidError: { code: 'DIGEST_INVALID', status: 400 },
  DigestMismatchError: { code: 'DIGEST_INVALID', status: 400 },
  ManifestUnknownError: { code: 'MANIFEST_UNKNOWN', status: 404 },
  ManifestInvalidError: { code: 'MANIFEST_INVALID', status: 400 },
  ManifestBlobUnknownError: { code: 'MANIFEST_BLOB_UNKNOWN', status: 400 },
  ManifestTooLargeError: { code: 'MANIFEST_INVALID', status: 413 },
  NameInvalidError: { code: 'NAME_INVALID', status: 400 },
  NameUnknownError: { code: 'NAME_UNKNOWN', status: 404 },
  TagInvalidError: { code: 'TAG_INVALID', status: 400 },
  SizeInvalidError: { code: 'SIZE_INVALID', status: 400 },
  TooLargeError: { code: 'SIZE_INVALID', status: 413 },
  RangeInvalidError: { code: 'RANGE_INVALID', status: 416 },
  UnsupportedError: { code: 'UNSUPPORTED', status: 405 },
  // The spec's UNSUPPORTED covers "a missing implementation or invalid set of parameters".
  RouteUnknownError: { code: 'UNSUPPORTED', status: 404 },
  ParameterInvalidError: { code: 'UNSUPPORTED', status: 400 },
  UnauthorizedError: { code: 'UNAUTHORIZED', status: 401 },
  DeniedError: { code: 'DENIED', status: 403 },
  TooManyRequestsError: { code: 'TOOMANYREQUESTS', status: 429 },
  DecodeError: { code: 'UNKNOWN', status: 400 },
  ConfigError: { code: 'UNKNOWN', status: 500 },
  InsufficientStorageError: { code: 'UNKNOWN', status: 507 },
  SignatureInvalidError: { code: 'UNKNOWN', status: 502 },
  TrackerUnavailableError: { code: 'UNKNOWN', status: 503 },
  TrackerRejectedError: { code: 'UNKNOWN', status: 502 },
  JobUnknownError: { code: 'UNKNOWN', status: 404 },
}

/**
 * Maps any thrown value to its OCI code and HTTP status. Unknown errors map to
 * UNKNOWN/500; an UpstreamError keeps the upstream's status.
 */
export function ociErrorFor(err: unknown): OciErrorMapping {
  if (err instanceof UpstreamError) return { code: 'UNKNOWN', status: err.status }
  if (err instanceof ShoalError) return TABLE[err.name] ?? { code: 'UNKNOWN', status: 500 }
  return { code: 'UNKNOWN', status: 500 }
}

/** The OCI error body for one error. */
export function ociErrorBody(err: unknown): {
  errors: Array<{ code: OciErrorCode; message: string; detail?: unknown }>
} {
  const { code } = ociErrorFor(err)
  const message = err instanceof Error ? err.message : String(err)
  const detail = err instanceof ShoalError ? err.detail : undefined
  return { errors: [detail === undefined ? { code, message } : { code, message, detail }] }
}
