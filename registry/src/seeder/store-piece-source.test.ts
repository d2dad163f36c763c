import { describe, expect, it } from 'vitest'
import type { Digest } from '../../../protocol/src/index.js'
import type { BlobContent } from './blob-content.js'
import { createFirstCopyRule } from './first-copy.js'
import type { PieceMapStore } from './piece-maps.js'
import { createStorePieceSource } from './store-piece-source.js'

const BIG = `sha256:${'1'.repeat(64)}` as Digest
const SMALL = `sha256:${'2'.repeat(64)}` as Digest
const MiB = 1024 * 1024

/** Piece maps of a 3-piece and a 1-piece blob; nothing else is read by hasPiece. */
const pieceMaps = {
  async get(digest: Digest) {
    if (digest === BIG) return { map: { digest, size: 3 * MiB, pieceSize: MiB, pieces: ['a', 'b', 'c'] } }
    if (digest === SMALL) return { map: { digest, size: 600, pieceSize: MiB, pieces: ['a'] } }
    return undefined
  },
} as unknown as PieceMapStore

/** The seed's piece source over those maps, with the first-copy rule (a 60 s window). */
function sourceWithFirstCopy() {
  return createStorePieceSource({
    content: {} as BlobContent,
    pieceMaps,
    firstCopy: createFirstCopyRule({ repeatAfterMs: 60_000 }),
  })
}

describe('the seed piece source', () => {
  it('declines a piece of a multi-piece blob just sent to another peer, under the first-copy rule', async () => {
    const source = sourceWithFirstCopy()
    expect(await source.hasPiece(BIG, 1, 'p1')).toBe(true)
    expect(await source.hasPiece(BIG, 1, 'p2')).toBe(false)
    expect(await source.hasPiece(BIG, 2, 'p2')).toBe(true)
    // Without a peer (not a piece request) the answer is what is held.
    expect(await source.hasPiece(BIG, 1)).toBe(true)
    expect(await source.hasPiece(BIG, 3, 'p3')).toBe(false)
    expect(await source.hasPiece(`sha256:${'9'.repeat(64)}` as Digest, 0, 'p3')).toBe(false)
  })

  it('sends a one-piece blob to everyone', async () => {
    const source = sourceWithFirstCopy()
    expect(await source.hasPiece(SMALL, 0, 'p1')).toBe(true)
    expect(await source.hasPiece(SMALL, 0, 'p2')).toBe(true)
  })
})
