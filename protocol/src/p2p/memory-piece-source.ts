/**
 * A PieceSource held in memory: whole blobs or single pieces, trusted as given (no hash
 * checks, so a test can make a peer serve a corrupted piece). For tests and tools.
 */
import { Bitfield } from '../bitfield.js'
import type { Digest } from '../digest.js'
import { pieceCountFor, type SignedPieceMap } from '../piece-map.js'
import { suppliedOrNew } from './piece-buffers.js'
import { createPieceWatchers, type PieceSource, type PieceSourceStat } from './piece-source.js'

/** A PieceSource whose contents the caller sets. */
export interface MemoryPieceSource extends PieceSource {
  /** Holds the whole of `bytes` as `digest`, cut into `pieceSize` pieces. */
  putBlob(digest: Digest, bytes: Uint8Array, pieceSize: number): void
  /** Holds piece `index` of a blob of `size` bytes (the rest of it stays missing). */
  putPiece(
    digest: Digest,
    layout: { size: number; pieceSize: number },
    index: number,
    bytes: Uint8Array,
  ): void
  /** Forgets `digest` (watchers are told it is gone). */
  deleteBlob(digest: Digest): void
  /** Watchers of `digest` now (to check that the server always lets go of them). */
  watchers(digest: Digest): number
  /** Sets the signed piece map handed out for its blob. */
  putPieceMap(signed: SignedPieceMap): void
  /** Piece reads begun and not yet ended (to check that the server always ends them). */
  openReads(): number
}

interface Held {
  stat: PieceSourceStat & { pieceSize: number }
  bytes: Uint8Array
  bits: Bitfield
}

/** Creates an empty in-memory piece source; `chunkBytes` is the size of each read chunk. */
export function createMemoryPieceSource(init: { chunkBytes?: number } = {}): MemoryPieceSource {
  const chunkBytes = init.chunkBytes ?? 256 * 1024
  const blobs = new Map<Digest, Held>()
  const maps = new Map<Digest, SignedPieceMap>()
  const watching = createPieceWatchers()
  let open = 0

  function layout(digest: Digest, size: number, pieceSize: number): Held {
    let held = blobs.get(digest)
    if (held === undefined) {
      const pieceCount = pieceCountFor(size, pieceSize)
      held = {
        stat: { size, pieceSize, pieceCount },
        bytes: new Uint8Array(size),
        bits: new Bitfield(pieceCount),
      }
      blobs.set(digest, held)
    }
    return held
  }

  return {
    putBlob(digest, bytes, pieceSize) {
      blobs.delete(digest)
      const held = layout(digest, bytes.byteLength, pieceSize)
      held.bytes.set(bytes)
      for (let i = 0; i < held.stat.pieceCount; i++) held.bits.set(i)
      for (let i = 0; i < held.stat.pieceCount; i++) watching.piece(digest, i)
    },

    putPiece(digest, { size, pieceSize }, index, bytes) {
      const held = layout(digest, size, pieceSize)
      held.bytes.set(bytes, index * pieceSize)
      held.bits.set(index)
      watching.piece(digest, index)
    },

    deleteBlob(digest) {
      blobs.delete(digest)
      watching.gone(digest)
    },

    watchers(digest) {
      return watching.count(digest)
    },

    watch(digest, watcher) {
      return watching.watch(digest, watcher)
    },

    putPieceMap(signed) {
      maps.set(signed.map.digest, signed)
    },

    openReads() {
      return open
    },

    stat(digest) {
      return blobs.get(digest)?.stat
    },

    hasPiece(digest, index) {
      const held = blobs.get(digest)
      return held !== undefined && index < held.bits.length && held.bits.get(index)
    },

    bitfield(digest) {
      return blobs.get(digest)?.bits.encode()
    },

    async *readRange(digest, start, end, options = {}) {
      const held = blobs.get(digest)
      if (held === undefined) throw new Error(`blob not held: ${digest}`)
      open++
      try {
        for (let off = start; off < end; off += chunkBytes) {
          const part = held.bytes.subarray(off, Math.min(end, off + chunkBytes))
          const chunk = suppliedOrNew(options.allocate, part.byteLength)
          chunk.set(part)
          yield chunk
        }
      } finally {
        open--
      }
    },

    signedPieceMap(digest) {
      return maps.get(digest)
    },
  }
}
