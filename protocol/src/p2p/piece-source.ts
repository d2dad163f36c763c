/**
 * What the piece server needs from whatever holds blobs: the agent's content-addressed
 * cache (partial blobs, pieces landing while they are served) and the seed registry's
 * blob store (complete blobs only) both satisfy it. No storage or HTTP lives here; each
 * service brings its own adapter.
 */
import type { Digest } from '../digest.js'
import type { SignedPieceMap } from '../piece-map.js'

/** A value or a promise of it: sources may answer from memory or from disk. */
export type MaybePromise<T> = T | Promise<T>

/** The piece layout of a blob held in whole or in part. */
export interface PieceSourceStat {
  /** Blob size in bytes. */
  size: number
  /** Piece size in bytes; undefined while the layout is unknown (nothing is served then). */
  pieceSize: number | undefined
  /** Number of pieces (0 while the layout is unknown). */
  pieceCount: number
}

/** Told of a blob's pieces as they are stored (PieceSource.watch). */
export interface PieceWatcher {
  piece(index: number): void
  gone(): void
}

/** Holds blobs, completely or piece by piece, and reads their bytes. */
export interface PieceSource {
  /** The layout of `digest`, or undefined when none of it is held. */
  stat(digest: Digest): MaybePromise<PieceSourceStat | undefined>
  /**
   * True when piece `index` of `digest` is held and can be read now. `peer` (the asking
   * peer's id) is given when the piece server asks on behalf of a piece request: a
   * source may then decline a piece it holds (the seed's first-copy rule), and the
   * peer is answered not-held.
   */
  hasPiece(digest: Digest, index: number, peer?: string): MaybePromise<boolean>
  /**
   * The held pieces of `digest`, encoded as protocol/src/bitfield.ts encodes
   * (`ceil(pieceCount / 8)` bytes, MSB first), or undefined when none of it is held.
   */
  bitfield(digest: Digest): MaybePromise<Uint8Array | undefined>
  /**
   * Reads bytes `[start, end)` of `digest` (a held piece's range) as chunks. The server
   * calls this before it sends the piece header (a source may pin the blob then), and
   * always ends the iteration through the iterator's `return()` (a node Readable is
   * destroyed by it), including when it never reads a chunk.
   *
   * `allocate`, when given, supplies the memory a chunk of `length` bytes is read into
   * (the piece server's reused send buffers); the source yields the chunk in it, as the
   * very object it returned (no view of it), or ignores the option and allocates its own.
   */
  readRange(
    digest: Digest,
    start: number,
    end: number,
    options?: { signal?: AbortSignal; allocate?: (length: number) => Uint8Array },
  ): AsyncIterable<Uint8Array>
  /**
   * Tells `listener` of every piece of `digest` stored from now on (`piece`), and when
   * what is held of it is gone (`gone`: evicted or thrown away), until the returned
   * function is called. The piece server keeps HAVE_WATCH_PROTOCOL watchers up to date
   * with it; a source without it (one whose blobs are complete, like the seed's) answers
   * watchers with its bitfield once.
   */
  watch?(digest: Digest, listener: PieceWatcher): () => void
  /**
   * The signed piece map of `digest`, handed out on PIECE_MAP_PROTOCOL; a source without
   * this method does not serve that protocol.
   */
  signedPieceMap?(digest: Digest): MaybePromise<SignedPieceMap | undefined>
}

/** Who watches which blob (PieceSource.watch), for a source to tell of stored pieces. */
export interface PieceWatchers {
  /** Adds `watcher` of `digest`; the returned function removes it. */
  watch(digest: Digest, watcher: PieceWatcher): () => void
  /** Tells the watchers of `digest` that piece `index` was stored. */
  piece(digest: Digest, index: number): void
  /** Tells the watchers of `digest` that what was held of it is gone. */
  gone(digest: Digest): void
  /** Watchers of `digest` now. */
  count(digest: Digest): number
}

/**
 * The watchers of a source's blobs. `onWatched(true)` is called when the first watcher
 * of any blob comes, `onWatched(false)` when the last one leaves (a source can listen to
 * its own events only while someone watches).
 */
export function createPieceWatchers(onWatched?: (watched: boolean) => void): PieceWatchers {
  const byDigest = new Map<Digest, Set<PieceWatcher>>()
  return {
    watch(digest, watcher) {
      if (byDigest.size === 0) onWatched?.(true)
      const set = byDigest.get(digest) ?? new Set()
      byDigest.set(digest, set)
      set.add(watcher)
      return () => {
        if (!set.delete(watcher) || set.size > 0) return
        byDigest.delete(digest)
        if (byDigest.size === 0) onWatched?.(false)
      }
    },
    piece(digest, index) {
      for (const w of byDigest.get(digest) ?? []) w.piece(index)
    },
    gone(digest) {
      for (const w of byDigest.get(digest) ?? []) w.gone()
    },
    count(digest) {
      return byDigest.get(digest)?.size ?? 0
    },
  }
}
