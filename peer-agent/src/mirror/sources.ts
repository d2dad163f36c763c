/**
 * The contracts between the mirror endpoint and whatever supplies its content: a
 * BlobSource (the local cache, the swarm of peers, the upstream registry, or a layering
 * of them) and a ManifestSource. Every reference names the upstream host the client
 * asked for, so that a source knows which registry, credentials and trust apply.
 */
import type { Readable } from 'node:stream'
import type { Digest } from '../../../protocol/src/index.js'

/** Where the bytes of a blob came from, as counted in shoal_agent_blob_bytes_total. */
export type BlobOrigin = 'peer' | 'seed' | 'upstream' | 'cache'

/** A blob as a client names it. */
export interface BlobRef {
  /** The upstream registry host the image is named after (`docker.io`, `127.0.0.1:5000`). */
  host: string
  /** The repository on that host, normalised (`library/busybox`). */
  repository: string
  digest: Digest
}

/** A manifest as a client names it. */
export interface ManifestRef {
  host: string
  repository: string
  /** A tag or a digest. */
  reference: string
}

/** Options of every source call. */
export interface SourceOptions {
  signal?: AbortSignal
  /**
   * The client's `Authorization` header, for sources that need to act as the client
   * upstream (private repositories without configured credentials).
   */
  authorization?: string
}

/** An inclusive byte range; no `end` means to the last byte. */
export interface ByteRange {
  start: number
  end?: number
}

/** An opened blob. */
export interface OpenedBlob {
  /** Total size of the blob in bytes. */
  size: number
  /** The bytes of the requested range (the whole blob when no range was asked for), in order. */
  stream: Readable
  /** The inclusive range `stream` yields. */
  range: { start: number; end: number }
  /** Where the first bytes come from (a layered source may switch mid-stream). */
  source: BlobOrigin
  /**
   * Where the byte at `position` (of the blob) came from, for sources whose bytes have
   * several origins (the swarm: pieces from peers, from the seed, or held before).
   */
  sourceAt?(position: number): BlobOrigin
}

/** Anything that can serve blobs by digest. */
export interface BlobSource {
  /**
   * The size of a blob. Throws BlobUnknownError when the source does not have it, or
   * the domain error of whatever failed (UpstreamError with the upstream's status).
   */
  stat(ref: BlobRef, options?: SourceOptions): Promise<{ digest: Digest; size: number }>
  /**
   * Opens a blob (or the inclusive `range` of it, which must lie within the blob).
   * Throws like stat; once open, a failure errors the stream instead of ending it, so
   * a reader never mistakes a cut-off blob for a whole one.
   */
  open(ref: BlobRef, range: ByteRange | undefined, options?: SourceOptions): Promise<OpenedBlob>
}

/** What a manifest HEAD tells. */
export interface ManifestInfo {
  digest: Digest
  mediaType: string
  size: number
}

/** A manifest with its exact bytes. */
export interface Manifest extends ManifestInfo {
  body: Uint8Array
}

/** Anything that can serve manifests by tag or digest. */
export interface ManifestSource {
  /** Describes a manifest. Throws ManifestUnknownError, or the upstream's error. */
  head(ref: ManifestRef, options?: SourceOptions): Promise<ManifestInfo>
  /** Fetches a manifest; by digest, its bytes are checked against the digest. Throws like head. */
  get(ref: ManifestRef, options?: SourceOptions): Promise<Manifest>
}
