/**
 * Where the registry keeps things in a storage driver. Only this file knows the tree:
 *
 * ```
 * /
 * ├── blobs/                                   content, shared by every repository
 * │   └── sha256/
 * │       └── ab/
 * │           └── abcd…(hex)/
 * │               ├── data                     the blob (layer, config or manifest body)
 * │               └── piece-map                the seed's signed piece map of it (binary
 * │                                            envelope, registry/src/seeder); goes with the blob
 * ├── repositories/
 * │   └── library/alpine/                      a repository name may have many components;
 * │       │                                    '_'-prefixed dirs cannot be name components
 * │       ├── _layers/
 * │       │   └── sha256/abcd…/link            blob linked into this repository (holds the digest)
 * │       ├── _manifests/
 * │       │   ├── revisions/
 * │       │   │   └── sha256/abcd…/link        manifest held here: {digest, mediaType, size, subject?}
 * │       │   └── tags/
 * │       │       └── latest/
 * │       │           ├── link                 the digest the tag points to
 * │       │           └── cache.json           pull-through only: {digest, checkedAt} of the
 * │       │                                    tag's last confirmation by the upstream
 * │       └── _referrers/
 * │           └── sha256/<subject hex>/
 * │               └── sha256_<referrer hex>    the referrer's descriptor (JSON)
 * └── uploads/
 *     └── <upload id>/
 *         ├── data                             bytes received so far (fsynced per chunk)
 *         └── state.json                       {id, repository, offset, startedAt, updatedAt}
 * ```
 *
 * Blob content is written into uploads/<id>/data, verified, fsynced and then renamed to
 * blobs/…/data, so a blob path never holds a partial blob. Links are small files
 * replaced atomically. Manifest bodies live in blobs/ like any other content.
 */
import { type Digest, parseDigest } from '../../../protocol/src/index.js'

/** The root of all blob content. */
export const BLOBS_ROOT = '/blobs'
/** The root of all repositories. */
export const REPOSITORIES_ROOT = '/repositories'
/** The root of all upload sessions. */
export const UPLOADS_ROOT = '/uploads'

/** Directories under a repository that mark it as one (and can never be a name component). */
export const REPOSITORY_MARKERS = ['_layers', '_manifests'] as const

function split(digest: Digest | string): { algorithm: string; hex: string } {
  const { algorithm, hex } = parseDigest(digest)
  return { algorithm, hex }
}

/** The directory of a blob's content. */
export function blobDir(digest: Digest): string {
  const { algorithm, hex } = split(digest)
  return `${BLOBS_ROOT}/${algorithm}/${hex.slice(0, 2)}/${hex}`
}

/** The file holding a blob's content. */
export function blobDataPath(digest: Digest): string {
  return `${blobDir(digest)}/data`
}

/**
 * The file holding the seed's signed piece map of a blob (beside its data, so garbage
 * collection removes both together).
 */
export function blobPieceMapPath(digest: Digest): string {
  return `${blobDir(digest)}/piece-map`
}

/** The directory of one repository. */
export function repositoryDir(repository: string): string {
  return `${REPOSITORIES_ROOT}/${repository}`
}

/** The directory of a repository's blob links of one algorithm. */
export function layerLinksDir(repository: string, algorithm?: string): string {
  const base = `${repositoryDir(repository)}/_layers`
  return algorithm ? `${base}/${algorithm}` : base
}

/** The link file that makes a blob part of a repository. */
export function layerLinkPath(repository: string, digest: Digest): string {
  const { algorithm, hex } = split(digest)
  return `${layerLinksDir(repository, algorithm)}/${hex}/link`
}

/** The directory of a repository's manifest revisions of one algorithm. */
export function revisionsDir(repository: string, algorithm?: string): string {
  const base = `${repositoryDir(repository)}/_manifests/revisions`
  return algorithm ? `${base}/${algorithm}` : base
}

/** The link file of a manifest revision. */
export function revisionLinkPath(repository: string, digest: Digest): string {
  const { algorithm, hex } = split(digest)
  return `${revisionsDir(repository, algorithm)}/${hex}/link`
}

/** The directory of a repository's tags. */
export function tagsDir(repository: string): string {
  return `${repositoryDir(repository)}/_manifests/tags`
}

/** The link file of one tag. */
export function tagLinkPath(repository: string, tag: string): string {
  return `${tagsDir(repository)}/${tag}/link`
}

/** The record of when a pull-through cache last confirmed a tag with its upstream. */
export function tagCacheRecordPath(repository: string, tag: string): string {
  return `${tagsDir(repository)}/${tag}/cache.json`
}

/** The directory holding the referrers of one subject. */
export function referrersDir(repository: string, subject: Digest): string {
  const { algorithm, hex } = split(subject)
  return `${repositoryDir(repository)}/_referrers/${algorithm}/${hex}`
}

/** The file holding one referrer's descriptor. */
export function referrerPath(repository: string, subject: Digest, referrer: Digest): string {
  const { algorithm, hex } = split(referrer)
  return `${referrersDir(repository, subject)}/${algorithm}_${hex}`
}

/** The directory of one upload session. */
export function uploadDir(id: string): string {
  return `${UPLOADS_ROOT}/${id}`
}

/** The bytes received by an upload. */
export function uploadDataPath(id: string): string {
  return `${uploadDir(id)}/data`
}

/** The persisted state of an upload. */
export function uploadStatePath(id: string): string {
  return `${uploadDir(id)}/state.json`
}

/** Builds a digest from an algorithm directory name and a hex directory name. */
export function digestFromParts(algorithm: string, hex: string): Digest | undefined {
  try {
    return parseDigest(`${algorithm}:${hex}`).digest
  } catch {
    return undefined
  }
}
