import { describe, expect, it } from 'vitest'
import { digestOf } from '../digest.js'
import { encodeMessage, expectMessage } from './codec.js'
import { createMessageReader } from './reader.js'

async function* chunked(data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size)
}

describe('MessageReader.readInto', () => {
  const digest = digestOf('reader')
  const piece = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7) & 0xff)
  const all = Buffer.concat([
    encodeMessage({ type: 'piece-header', index: 1, length: piece.length, status: 'ok' }),
    piece,
    encodeMessage({ type: 'have-request', digest }),
  ])

  it('fills the target across arbitrary chunking and leaves what follows', async () => {
    for (const size of [1, 7, 4096, all.length]) {
      const reader = createMessageReader(chunked(all, size))
      const header = expectMessage((await reader.read())!, 'piece-header')
      const target = new Uint8Array(header.length)
      await reader.readInto(target)
      expect(Buffer.from(target).equals(Buffer.from(piece))).toBe(true)
      expect(expectMessage((await reader.read())!, 'have-request').digest).toBe(digest)
      expect(await reader.read()).toBeUndefined()
    }
  })

  it('says when bytes came in and how many, once per arrival, until the target is full', async () => {
    const counts: number[] = []
    const reader = createMessageReader(chunked(all, 1000))
    const header = expectMessage((await reader.read())!, 'piece-header')
    await reader.readInto(new Uint8Array(header.length), { onProgress: (bytes) => counts.push(bytes) })
    // 5000 piece bytes over 1000-byte chunks after the header: one call per chunk read.
    expect(counts.length).toBeGreaterThanOrEqual(5)
    expect(counts.length).toBeLessThanOrEqual(6)
    expect(counts.every((n) => n > 0)).toBe(true)
    expect(counts.reduce((a, b) => a + b, 0)).toBe(header.length)
  })

  it('hands each run of copied bytes to onCopied, in order, covering the target once', async () => {
    for (const size of [1, 7, 1000, all.length]) {
      const reader = createMessageReader(chunked(all, size))
      const header = expectMessage((await reader.read())!, 'piece-header')
      const target = new Uint8Array(header.length)
      const parts: Uint8Array[] = []
      let progressed = 0
      await reader.readInto(target, {
        onCopied: (part) => {
          // Already in place when it is handed out, and before onProgress.
          expect(part.buffer).toBe(target.buffer)
          expect(progressed).toBe(parts.length)
          parts.push(Uint8Array.from(part))
        },
        onProgress: () => progressed++,
      })
      expect(parts.every((p) => p.byteLength > 0)).toBe(true)
      expect(Buffer.concat(parts).equals(Buffer.from(piece))).toBe(true)
      expect(progressed).toBe(parts.length)
    }
  })

  it('throws DecodeError when the stream ends first, RangeError for an oversized target', async () => {
    const reader = createMessageReader(chunked(piece.subarray(0, 100), 30))
    await expect(reader.readInto(new Uint8Array(101))).rejects.toMatchObject({ name: 'DecodeError' })
    await expect(createMessageReader(chunked(piece, 10)).readInto(new Uint8Array(17 << 20))).rejects.toThrow(
      RangeError,
    )
  })
})
