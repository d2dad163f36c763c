import { Readable } from 'node:stream'
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

  it('starts the first-copy hold when a piece was read to its end, and frees the piece when the send broke off', async () => {
    const events: string[] = []
    const rule = createFirstCopyRule({ repeatAfterMs: 60_000 })
    const content = {
      async read(_digest: Digest, start: number, end: number) {
        // Two chunks per piece, so a consumer can stop between them.
        const half = (end - start) / 2
        return Readable.from([Buffer.alloc(half), Buffer.alloc(end - start - half)])
      },
    } as unknown as BlobContent
    const source = createStorePieceSource({
      content,
      pieceMaps,
      firstCopy: {
        ...rule,
        admit: rule.admit,
        delivered: (digest, index) => {
          events.push(`delivered ${index}`)
          rule.delivered(digest, index)
        },
        failed: (digest, index) => {
          events.push(`failed ${index}`)
          rule.failed(digest, index)
        },
      },
    })
    expect(await source.hasPiece(BIG, 1, 'p1')).toBe(true)
    let bytes = 0
    for await (const chunk of source.readRange(BIG, MiB, 2 * MiB)) bytes += chunk.byteLength
    expect(bytes).toBe(MiB)
    expect(await source.hasPiece(BIG, 2, 'p1')).toBe(true)
    const reading = source.readRange(BIG, 2 * MiB, 3 * MiB)[Symbol.asyncIterator]()
    await reading.next()
    await reading.return?.()
    expect(events).toEqual(['delivered 1', 'failed 2'])
    // Piece 2 never arrived, so another peer gets it; piece 1 is held.
    expect(await source.hasPiece(BIG, 2, 'p2')).toBe(true)
    expect(await source.hasPiece(BIG, 1, 'p2')).toBe(false)
  })
})
