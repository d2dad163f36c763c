/**
 * The registry's service contract: every OCI Distribution operation the HTTP layer
 * needs, in domain terms. The storage-backed implementation lives in storage/, the
 * pull-through cache in proxy/ wraps it; routes in http/ call exactly one method each.
 *
 * All methods throw the domain errors of protocol/errors.ts (BlobUnknownError,
 * ManifestUnknownError, NameInvalidError, ...), never HTTP errors.
 */
import type { Readable } from 'node:stream'
import type { Descriptor, Digest } from '../../protocol/src/index.js'

/** Cancellation for every async operation. */
export interface AbortOptions {
  signal?: AbortSignal
}

/** What is known about a stored blob. */
export interface BlobInfo {
  digest: Digest
  size: number
}

/** An inclusive byte range; `end` omitted means to the end of the blob. */
export interface ByteRange {
  start: number
  end?: number
}

/** Positional reads of an open blob file into buffers the caller owns (see BlobReader.file). */
export interface BlobFile {
  /** Reads up to `length` bytes at file offset `position` into the start of `buffer`; 0 at the end. */
  read(buffer: Uint8Array, length: number, position: number): Promise<number>
  /** Releases the file. Safe to call twice. */
  close(): Promise<void>
}

/** An opened blob: its info, the range actually served, and the byte stream. */
export interface BlobReader {
  info: BlobInfo
  /** The inclusive range of bytes `stream` yields. Equals [0, size-1] for a full read. */
  range: { start: number; end: number }
  stream: Readable
  /**
   * The open file the bytes come from, when the storage keeps blobs in files: lets the
   * HTTP layer send `range` of it through buffers it reuses, instead of a fresh buffer
   * per chunk from `stream`. Whoever takes it reads by position, closes it, and leaves
   * `stream` alone (which, for such readers, is only opened when first touched).
   */
  file?: BlobFile
}

/** The state of an upload session. */
export interface UploadState {
  id: string
  repository: string
  /** Bytes received so far; the next chunk must start here. */
  offset: number
  startedAt: number
}

/** A stored manifest. */
export interface ManifestRecord {
  digest: Digest
  mediaType: string
  size: number
  body: Uint8Array
}

/** Result of a manifest PUT. */
export interface PutManifestResult {
  digest: Digest
  /** The subject digest, when the manifest has one (answered as OCI-Subject). */
  subject?: Digest
}

/** Pagination of tag list and catalog: at most `n` entries after `last`. */
export interface PageRequest {
  n?: number
  last?: string
}

/** A page of names; `next` is set when more entries follow. */
export interface Page {
  items: string[]
  next?: { n: number; last: string }
}

/** Result of a referrers query. */
export interface ReferrersResult {
  descriptors: Descriptor[]
  /** Filters that were applied (for OCI-Filters-Applied). */
  filtersApplied: string[]
}

/**
 * Everything the OCI Distribution v1.1 API does, in domain terms. Repository names
 * and references are validated by the implementation (NameInvalidError,
 * TagInvalidError, DigestInvalidError).
 */
export interface RegistryService {
  // Blobs
  /** Info of a blob linked into `repository`; BlobUnknownError otherwise. */
  statBlob(repository: string, digest: string, options?: AbortOptions): Promise<BlobInfo>
  /** Opens a blob for reading, optionally a range; RangeInvalidError when unsatisfiable. */
  getBlob(repository: string, digest: string, range?: ByteRange, options?: AbortOptions): Promise<BlobReader>
  /** Unlinks a blob from the repository (content goes at the next GC). */
  deleteBlob(repository: string, digest: string, options?: AbortOptions): Promise<void>
  /**
   * Links an existing blob into `repository`. With `from`, only if `from` holds it;
   * without `from`, if the blob exists anywhere. Returns undefined when it cannot mount.
   */
  mountBlob(
    repository: string,
    digest: string,
    from?: string,
    options?: AbortOptions,
  ): Promise<BlobInfo | undefined>

  // Uploads
  startUpload(repository: string, options?: AbortOptions): Promise<UploadState>
  getUpload(repository: string, id: string, options?: AbortOptions): Promise<UploadState>
  /**
   * Appends a chunk. With `start`, it must equal the current offset (RangeInvalidError
   * otherwise). With `length`, the body must be exactly that long (SizeInvalidError).
   */
  appendUpload(
    repository: string,
    id: string,
    body: AsyncIterable<Uint8Array>,
    chunk?: { start?: number; length?: number },
    options?: AbortOptions,
  ): Promise<UploadState>
  /**
   * Appends an optional final chunk and commits the upload as `digest`, verifying it
   * (DigestMismatchError leaves nothing behind). Links the blob into the repository.
   */
  completeUpload(
    repository: string,
    id: string,
    digest: string,
    body?: AsyncIterable<Uint8Array>,
    chunk?: { start?: number; length?: number },
    options?: AbortOptions,
  ): Promise<BlobInfo>
  cancelUpload(repository: string, id: string, options?: AbortOptions): Promise<void>

  // Manifests
  getManifest(repository: string, reference: string, options?: AbortOptions): Promise<ManifestRecord>
  /** Like getManifest without the body being needed; implementations may still read it. */
  statManifest(
    repository: string,
    reference: string,
    options?: AbortOptions,
  ): Promise<Omit<ManifestRecord, 'body'>>
  /**
   * Validates and stores a manifest under a tag or its digest. Throws
   * ManifestInvalidError, ManifestBlobUnknownError, ManifestTooLargeError,
   * DigestMismatchError (reference is a digest that does not match the body).
   */
  putManifest(
    repository: string,
    reference: string,
    mediaType: string | undefined,
    body: Uint8Array,
    options?: AbortOptions,
  ): Promise<PutManifestResult>
  /** Deletes a manifest by digest (and every tag pointing to it), or a tag by tag. */
  deleteManifest(repository: string, reference: string, options?: AbortOptions): Promise<void>

  // Listing
  listTags(repository: string, page: PageRequest, options?: AbortOptions): Promise<Page>
  catalog(page: PageRequest, options?: AbortOptions): Promise<Page>
  referrers(
    repository: string,
    digest: string,
    artifactType?: string,
    options?: AbortOptions,
  ): Promise<ReferrersResult>
}
