/**
 * Domain errors shared by every shoal part. Each class has a stable `name` that tests
 * and the OCI error table key on; none of them knows about HTTP.
 */

/** Base class of every shoal domain error; `detail` is rendered as the OCI error detail. */
export class ShoalError extends Error {
  readonly detail: unknown
  constructor(message: string, detail?: unknown, options?: { cause?: unknown }) {
    super(message, options)
    this.detail = detail
  }
}

function defineError(name: string, defaultMessage: string) {
  const cls = class extends ShoalError {
    constructor(message: string = defaultMessage, detail?: unknown, options?: { cause?: unknown }) {
      super(message, detail, options)
      this.name = name
    }
  }
  Object.defineProperty(cls, 'name', { value: name })
  return cls
}

/** The blob is not known to the registry (or not linked into the repository). */
export class BlobUnknownError extends defineError('BlobUnknownError', 'blob unknown to registry') {}
/** The upload session id is not known or has expired. */
export class BlobUploadUnknownError extends defineError(
  'BlobUploadUnknownError',
  'blob upload unknown to registry',
) {}
/** The upload request is malformed (bad Content-Range, missing body, bad state). */
export class BlobUploadInvalidError extends defineError('BlobUploadInvalidError', 'blob upload invalid') {}
/** A digest string is malformed or uses an unsupported algorithm. */
export class DigestInvalidError extends defineError('DigestInvalidError', 'provided digest is invalid') {}
/** Content did not hash to the digest it was supposed to have. */
export class DigestMismatchError extends defineError(
  'DigestMismatchError',
  'provided digest did not match uploaded content',
) {}
/** The manifest (or tag) is not known in the repository. */
export class ManifestUnknownError extends defineError('ManifestUnknownError', 'manifest unknown') {}
/** The manifest failed validation (JSON, schema, media type). */
export class ManifestInvalidError extends defineError('ManifestInvalidError', 'manifest invalid') {}
/** A manifest references a blob or child manifest that the repository does not hold. */
export class ManifestBlobUnknownError extends defineError(
  'ManifestBlobUnknownError',
  'manifest references a manifest or blob unknown to registry',
) {}
/** The manifest body exceeds the configured size limit. */
export class ManifestTooLargeError extends defineError('ManifestTooLargeError', 'manifest too large') {}
/** A repository name does not match the OCI grammar. */
export class NameInvalidError extends defineError('NameInvalidError', 'invalid repository name') {}
/** The repository is not known to the registry. */
export class NameUnknownError extends defineError(
  'NameUnknownError',
  'repository name not known to registry',
) {}
/** A tag does not match the OCI grammar or does not match the manifest. */
export class TagInvalidError extends defineError('TagInvalidError', 'manifest tag did not match URI') {}
/** A declared content length does not match what was received. */
export class SizeInvalidError extends defineError(
  'SizeInvalidError',
  'provided length did not match content length',
) {}
/** A body exceeded a size limit. */
export class TooLargeError extends defineError('TooLargeError', 'request entity too large') {}
/** A requested or uploaded byte range is not satisfiable or out of order. */
export class RangeInvalidError extends defineError('RangeInvalidError', 'requested range not satisfiable') {}
/** The operation is not supported by this registry or configuration. */
export class UnsupportedError extends defineError('UnsupportedError', 'the operation is unsupported') {}
/** No API endpoint answers at the requested path. */
export class RouteUnknownError extends defineError('RouteUnknownError', 'no such API endpoint') {}
/** A request parameter (such as a page size) is malformed or out of range. */
export class ParameterInvalidError extends defineError(
  'ParameterInvalidError',
  'invalid request parameter',
) {}
/** The client did not authenticate. */
export class UnauthorizedError extends defineError('UnauthorizedError', 'authentication required') {}
/** The client is authenticated but not allowed to do this. */
export class DeniedError extends defineError('DeniedError', 'requested access to the resource is denied') {}
/** The caller (or the upstream) is rate limiting. */
export class TooManyRequestsError extends defineError('TooManyRequestsError', 'too many requests') {}
/** An upstream registry failed; `status` carries its HTTP status when there was one. */
export class UpstreamError extends ShoalError {
  readonly status: number
  constructor(message: string, status = 502, detail?: unknown, options?: { cause?: unknown }) {
    super(message, detail, options)
    this.name = 'UpstreamError'
    this.status = status
  }
}
/** A configuration problem; `problems` lists every one found. */
export class ConfigError extends ShoalError {
  readonly problems: string[]
  constructor(problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`, problems)
    this.name = 'ConfigError'
    this.problems = problems
  }
}
/** Bytes received from a peer or the network do not decode as the expected message. */
export class DecodeError extends defineError('DecodeError', 'malformed message') {}
/** There is not enough disk space (or quota) to store the content. */
export class InsufficientStorageError extends defineError(
  'InsufficientStorageError',
  'insufficient storage',
) {}
/** A signature (for example on a piece map) is missing, malformed, or not made by the expected signer. */
export class SignatureInvalidError extends defineError('SignatureInvalidError', 'signature invalid') {}
/** The tracker could not be reached, timed out, or answered with a server error. */
export class TrackerUnavailableError extends defineError('TrackerUnavailableError', 'tracker unavailable') {}
/** The tracker refused a request (a 4xx answer); `status` carries its HTTP status. */
export class TrackerRejectedError extends ShoalError {
  readonly status: number
  constructor(message: string, status = 400, detail?: unknown, options?: { cause?: unknown }) {
    super(message, detail, options)
    this.name = 'TrackerRejectedError'
    this.status = status
  }
}
/** No preheat job has the given id. */
export class JobUnknownError extends defineError('JobUnknownError', 'preheat job unknown') {}
