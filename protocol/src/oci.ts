/**
 * OCI grammar and media types: repository names, tags, references, and the manifest
 * kinds shoal understands. Parsing and validation only; no I/O.
 */
import { type Digest, isDigest, parseDigest } from './digest.js'
import { ManifestInvalidError, NameInvalidError, TagInvalidError } from './errors.js'

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  ociLayerTar: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const

/** Manifest media types a registry accepts on PUT. */
export const MANIFEST_MEDIA_TYPES: readonly string[] = [
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.dockerManifest,
  MEDIA_TYPES.dockerManifestList,
]

/** True for the two index kinds (OCI index, Docker manifest list). */
export function isIndexMediaType(mediaType: string): boolean {
  return mediaType === MEDIA_TYPES.ociIndex || mediaType === MEDIA_TYPES.dockerManifestList
}

// The distribution spec's grammar: path components of lowercase alphanumerics joined by
// separators, components joined by '/'.
const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*'
const NAME_GRAMMAR = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`)
const TAG_GRAMMAR = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/
const MAX_NAME_LENGTH = 255

/** True when `name` is a valid repository name. */
export function isRepositoryName(name: string): boolean {
  return typeof name === 'string' && name.length <= MAX_NAME_LENGTH && NAME_GRAMMAR.test(name)
}

/** Throws NameInvalidError unless `name` is a valid repository name. */
export function assertRepositoryName(name: string): void {
  if (!isRepositoryName(name))
    throw new NameInvalidError(`invalid repository name: ${String(name).slice(0, 300)}`)
}

/** True when `tag` is a valid tag. */
export function isTag(tag: string): boolean {
  return typeof tag === 'string' && TAG_GRAMMAR.test(tag)
}

/** Throws TagInvalidError unless `tag` is a valid tag. */
export function assertTag(tag: string): void {
  if (!isTag(tag)) throw new TagInvalidError(`invalid tag: ${String(tag).slice(0, 200)}`)
}

/** A manifest reference: a tag or a digest. */
export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest }

/**
 * Parses a manifest reference. A string containing ':' must be a digest
 * (DigestInvalidError otherwise); anything else must be a tag (TagInvalidError).
 */
export function parseReference(ref: string): Reference {
  if (ref.includes(':')) return { kind: 'digest', digest: parseDigest(ref).digest }
  assertTag(ref)
  return { kind: 'tag', tag: ref }
}

/** An OCI content descriptor. */
export interface Descriptor {
  mediaType: string
  digest: Digest
  size: number
  artifactType?: string
  annotations?: Record<string, string>
  platform?: Platform
  urls?: string[]
  data?: string
}

/** The platform of an index entry. */
export interface Platform {
  architecture: string
  os: string
  variant?: string
  'os.version'?: string
  'os.features'?: string[]
}

/** A parsed, validated manifest of any supported kind. */
export interface ParsedManifest {
  mediaType: string
  /** Whether this is an index (OCI index or Docker manifest list). */
  isIndex: boolean
  /** The config descriptor of an image manifest. */
  config?: Descriptor
  /** Layers (image manifest) — blobs the registry must hold. */
  layers: Descriptor[]
  /** Child manifests (index) — manifests the registry must hold. */
  manifests: Descriptor[]
  subject?: Descriptor
  artifactType?: string
  annotations?: Record<string, string>
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw new ManifestInvalidError(`${where}: descriptor must be an object`)
  const { mediaType, digest, size } = v
  if (typeof mediaType !== 'string' || mediaType.length === 0 || mediaType.length > 255) {
    throw new ManifestInvalidError(`${where}: mediaType must be a non-empty string`)
  }
  if (typeof digest !== 'string' || !isDigest(digest)) {
    throw new ManifestInvalidError(`${where}: invalid digest`, { digest })
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new ManifestInvalidError(`${where}: size must be a non-negative integer`)
  }
  if (v.annotations !== undefined && !isObject(v.annotations)) {
    throw new ManifestInvalidError(`${where}: annotations must be an object`)
  }
  if (v.artifactType !== undefined && typeof v.artifactType !== 'string') {
    throw new ManifestInvalidError(`${where}: artifactType must be a string`)
  }
  return v as unknown as Descriptor
}

/**
 * Parses and validates a manifest body against the media type it was sent with
 * (the Content-Type of a PUT). Throws ManifestInvalidError for malformed JSON, an
 * unsupported media type, or a body whose own mediaType contradicts `contentType`.
 */
export function parseManifest(body: Uint8Array, contentType?: string): ParsedManifest {
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'))
  } catch (err) {
    throw new ManifestInvalidError('manifest is not valid JSON', undefined, { cause: err })
  }
  if (!isObject(json)) throw new ManifestInvalidError('manifest must be a JSON object')
  const declared = typeof json.mediaType === 'string' ? json.mediaType : undefined
  const ct = contentType?.split(';')[0]?.trim()
  let mediaType = declared ?? ct
  if (mediaType === undefined) {
    // An OCI manifest may omit mediaType; infer from shape.
    mediaType = Array.isArray(json.manifests) ? MEDIA_TYPES.ociIndex : MEDIA_TYPES.ociManifest
  }
  if (
    declared !== undefined &&
    ct !== undefined &&
    ct !== '' &&
    declared !== ct &&
    MANIFEST_MEDIA_TYPES.includes(ct)
  ) {
    throw new ManifestInvalidError(`manifest mediaType ${declared} does not match Content-Type ${ct}`)
  }
  if (!MANIFEST_MEDIA_TYPES.includes(mediaType)) {
    throw new ManifestInvalidError(`unsupported manifest media type: ${mediaType}`)
  }
  if (json.schemaVersion !== 2) throw new ManifestInvalidError('schemaVersion must be 2')
  const index = isIndexMediaType(mediaType)
  const result: ParsedManifest = { mediaType, isIndex: index, layers: [], manifests: [] }
  if (index) {
    if (!Array.isArray(json.manifests)) throw new ManifestInvalidError('index must have a manifests array')
    result.manifests = json.manifests.map((m, i) => parseDescriptor(m, `manifests[${i}]`))
  } else {
    result.config = parseDescriptor(json.config, 'config')
    if (!Array.isArray(json.layers)) throw new ManifestInvalidError('manifest must have a layers array')
    result.layers = json.layers.map((l, i) => parseDescriptor(l, `layers[${i}]`))
  }
  if (json.subject !== undefined) result.subject = parseDescriptor(json.subject, 'subject')
  if (json.artifactType !== undefined) {
    if (typeof json.artifactType !== 'string') throw new ManifestInvalidError('artifactType must be a string')
    result.artifactType = json.artifactType
  }
  if (json.annotations !== undefined) {
    if (!isObject(json.annotations)) throw new ManifestInvalidError('annotations must be an object')
    result.annotations = json.annotations as Record<string, string>
  }
  return result
}
