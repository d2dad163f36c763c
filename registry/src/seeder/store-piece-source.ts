/**
 * The registry's blob store as a PieceSource for the shared piece server: every held
 * blob is complete, so every piece of it is held; the layout is the blob's signed piece
 * map (computed on first need), and pieces are ranged reads of the blob's content.
 */
import { Bitfield } from '../../../protocol/src/bitfield.js'
import type { PieceSource, PieceSourceStat } from '../../../protocol/src/p2p/index.js'
import type { BlobContent } from './blob-content.js'
import type { FirstCopyRule } from './first-copy.js'
import type { PieceMapStore } from './piece-maps.js'

/** Size of the chunks handed to the piece server (reads are gathered up to it). */
const WRITE_BYTES = 1024 * 1024

/**
 * Creates the seed's PieceSource over the blob content and its piece maps. With
 * `firstCopy`, a piece request the rule refuses is answered not-held.
 */
export function createStorePieceSource(components: {
  content: BlobContent
  pieceMaps: PieceMapStore
  firstCopy?: FirstCopyRule
}): PieceSource {
  const { content, pieceMaps, firstCopy } = components

  async function stat(digest: Parameters<PieceSource['stat']>[0]): Promise<PieceSourceStat | undefined> {
    const signed = await pieceMaps.get(digest)
    if (signed === undefined) return undefined
    return { size: signed.map.size, pieceSize: signed.map.pieceSize, pieceCount: signed.map.pieces.length }
  }

  return {
    stat,

    async hasPiece(digest, index, peer) {
      const s = await stat(digest)
      const held = s !== undefined && Number.isInteger(index) && index >= 0 && index < s.pieceCount
      // A one-piece blob (a config, a small layer) is cheap to send twice and would
      // otherwise wait for another agent to pass it on.
      if (!held || peer === undefined || firstCopy === undefined || s.pieceCount < 2) return held
      return firstCopy.admit(digest, index, s.pieceCount, peer)
    },

    async bitfield(digest) {
      const s = await stat(digest)
      return s === undefined ? undefined : Bitfield.full(s.pieceCount).encode()
    },

    async *readRange(digest, start, end, options) {
      // The first-copy hold of a piece starts when its last byte went to the stream.
      let index: number | undefined
      if (firstCopy !== undefined) {
        const s = await stat(digest)
        if (s?.pieceSize !== undefined && start % s.pieceSize === 0) index = start / s.pieceSize
      }
      let finished = false
      try {
        yield* readBlobRange(digest, start, end, options)
        finished = true
      } finally {
        if (index !== undefined) {
          if (finished) firstCopy?.delivered(digest, index)
          else firstCopy?.failed(digest, index)
        }
      }
    },

    signedPieceMap(digest) {
      return pieceMaps.get(digest)
    },
  }

  async function* readBlobRange(
    digest: Parameters<PieceSource['stat']>[0],
    start: number,
    end: number,
    options: { signal?: AbortSignal } | undefined,
  ): AsyncGenerator<Uint8Array> {
    const body = await content.read(digest, start, end, options)
    if (body === undefined) throw new Error(`blob went away while being served: ${digest}`)
    try {
      // Fewer, larger writes are cheaper on a noise+yamux stream (LIBP2P.md).
      let parts: Uint8Array[] = []
      let held = 0
      for await (const chunk of body) {
        parts.push(chunk as Uint8Array)
        held += (chunk as Uint8Array).byteLength
        if (held >= WRITE_BYTES) {
          yield parts.length === 1 ? parts[0]! : Buffer.concat(parts)
          parts = []
          held = 0
        }
      }
      if (held > 0) yield parts.length === 1 ? parts[0]! : Buffer.concat(parts)
    } finally {
      body.destroy()
    }
  }
}
