/**
 * Small verified content (manifest bodies) kept in memory by digest, so that a manifest
 * GET need not open, stat, read and close its body file and hash it again each time.
 * Content is addressed by its digest and never changes, so an entry can only be missing,
 * never stale; the least recently used entries leave first once the byte budget is full.
 */
import type { Digest } from '../../../protocol/src/index.js'

/** An in-memory cache of content by digest within a byte budget. */
export interface ContentCache {
  /** The content of `digest` when cached (and marks it recently used). */
  get(digest: Digest): Uint8Array | undefined
  /** Caches content already verified against `digest`; ignored when larger than an entry may be. */
  set(digest: Digest, content: Uint8Array): void
  /** Forgets `digest`. */
  delete(digest: Digest): void
  /** Bytes held now. */
  readonly bytes: number
}

/** Creates an empty content cache. */
export function createContentCache(init: { maxBytes: number; maxEntryBytes: number }): ContentCache {
  // A Map iterates in insertion order: re-inserting on use keeps the least recently used first.
  const entries = new Map<Digest, Uint8Array>()
  let bytes = 0
  const remove = (digest: Digest): void => {
    const content = entries.get(digest)
    if (content === undefined) return
    entries.delete(digest)
    bytes -= content.byteLength
  }
  return {
    get(digest) {
      const content = entries.get(digest)
      if (content !== undefined) {
        entries.delete(digest)
        entries.set(digest, content)
      }
      return content
    },
    set(digest, content) {
      if (content.byteLength > init.maxEntryBytes || content.byteLength > init.maxBytes) return
      remove(digest)
      entries.set(digest, content)
      bytes += content.byteLength
      for (const [oldest, old] of entries) {
        if (bytes <= init.maxBytes) break
        entries.delete(oldest)
        bytes -= old.byteLength
      }
    },
    delete: remove,
    get bytes() {
      return bytes
    },
  }
}
