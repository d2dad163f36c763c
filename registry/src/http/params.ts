/**
 * Validation of path and query parameters before they reach the service. The service
 * validates again; checking here as well keeps malformed names (such as `..` or
 * percent-encoded traversal) from reaching any storage code at all.
 */
import type { ParsedUrlQuery } from 'node:querystring'
import {
  assertRepositoryName,
  BlobUploadUnknownError,
  type Digest,
  parseDigest,
  parseReference,
} from '../../../protocol/src/index.js'

/** Returns `raw` when it is a valid repository name; NameInvalidError otherwise. */
export function repositoryParam(raw: string): string {
  assertRepositoryName(raw)
  return raw
}

/** Returns the digest; DigestInvalidError when malformed or of an unsupported algorithm. */
export function digestParam(raw: string): Digest {
  return parseDigest(raw).digest
}

/** Returns `raw` when it is a valid tag or digest; TagInvalidError or DigestInvalidError otherwise. */
export function referenceParam(raw: string): string {
  parseReference(raw)
  return raw
}

const UPLOAD_ID = /^[A-Za-z0-9_=-][A-Za-z0-9._=-]{0,255}$/

/**
 * Returns the upload id when it could have been issued by the registry (URL-safe, not
 * starting with '.'); BlobUploadUnknownError otherwise, as for any unknown session.
 */
export function uploadIdParam(raw: string): string {
  if (!UPLOAD_ID.test(raw)) throw new BlobUploadUnknownError(undefined, { id: raw.slice(0, 300) })
  return raw
}

/** The first value of a query parameter, undefined when absent. */
export function queryParam(query: ParsedUrlQuery, key: string): string | undefined {
  const value = query[key]
  return Array.isArray(value) ? value[0] : value
}
