import { describe, expect, it } from 'vitest'
import { Bitfield } from '../bitfield.js'
import { digestOf } from '../digest.js'
import { signPieceMap } from '../piece-map.js'
import { chunked, peerKeyFixture, pieceMapFixture, pseudoRandomBytes } from '../testing/fixtures.js'
import {
  decodeMessage,
  encodeMessage,
  expectMessage,
  MAX_HAVE_UPDATE_INDEXES,
  MAX_PIECES_PER_REQUEST,
  type Message,
} from './codec.js'
import { createMessageReader } from './reader.js'

const digest = digestOf('blob')

function body(frame: Uint8Array): Uint8Array {
  return frame.subarray(4)
}

describe('message codec', () => {
  it('round-trips every message type', async () => {
    const bits = new Bitfield(20)
    bits.set(3)
    bits.set(19)
    const key = await peerKeyFixture()
    const { map } = await pieceMapFixture(40 * 1024, { pieceSize: 16 * 1024 })
    const signed = await signPieceMap(map, key.privateKey)
    const messages: Message[] = [
      { type: 'piece-request', digest, indexes: [0, 5, 65535] },
      { type: 'piece-request', digest: digestOf('x', 'sha512'), indexes: [1] },
      { type: 'have-request', digest },
      { type: 'have-reply', status: 'ok', bitfield: bits },
      { type: 'have-reply', status: 'not-found' },
      { type: 'piece-header', index: 7, length: 1 << 20, status: 'ok' },
      { type: 'piece-header', index: 7, length: 0, status: 'busy' },
      { type: 'error', code: 'forbidden', message: 'no thanks é' },
      { type: 'piece-map-request', digest },
      { type: 'piece-map-reply', status: 'ok', signed },
      { type: 'piece-map-reply', status: 'not-found' },
      { type: 'have-update', indexes: [0, 9, 65535] },
    ]
    for (const m of messages) {
      const frame = encodeMessage(m)
      expect(new DataView(frame.buffer).getUint32(0)).toBe(frame.length - 4)
      const back = decodeMessage(body(frame))
      if (m.type === 'have-reply' && m.bitfield !== undefined) {
        const r = expectMessage(back, 'have-reply')
        expect([...r.bitfield!.indexes()]).toEqual([3, 19])
      } else {
        expect(back).toEqual(m)
      }
    }
  })
  it('refuses to encode out-of-bound messages', () => {
    const many = Array.from({ length: MAX_PIECES_PER_REQUEST + 1 }, (_, i) => i)
    expect(() => encodeMessage({ type: 'piece-request', digest, indexes: many })).toThrow(RangeError)
    expect(() => encodeMessage({ type: 'piece-request', digest, indexes: [] })).toThrow(RangeError)
    expect(() => encodeMessage({ type: 'piece-header', index: 0, length: 64 << 20, status: 'ok' })).toThrow(
      RangeError,
    )
    expect(() => encodeMessage({ type: 'have-update', indexes: [] })).toThrow(RangeError)
    const tooMany = Array.from({ length: MAX_HAVE_UPDATE_INDEXES + 1 }, (_, i) => i)
    expect(() => encodeMessage({ type: 'have-update', indexes: tooMany })).toThrow(RangeError)
    expect(() => encodeMessage({ type: 'have-update', indexes: [65536] })).toThrow(RangeError)
    const long = encodeMessage({ type: 'error', code: 'internal', message: 'é'.repeat(5000) })
    expect(long.length).toBeLessThanOrEqual(4 + 5 + 1024)
  })
  it('rejects crafted bad bodies with DecodeError', () => {
    const cases = [
      new Uint8Array(0),
      Uint8Array.of(99),
      Uint8Array.of(1, 3),
      Uint8Array.of(2, 1, 1, 2),
      // piece-request with count 0
      Uint8Array.of(1, 1, ...new Uint8Array(32), 0, 0),
      // piece-request with count 65535 but no indexes
      Uint8Array.of(1, 1, ...new Uint8Array(32), 0xff, 0xff),
      // have-reply claiming 4 billion bits
      Uint8Array.of(3, 0, 0xff, 0xff, 0xff, 0xff),
      // piece-header with a 4 GiB length
      Uint8Array.of(4, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0),
      // piece-header, busy but with a length
      Uint8Array.of(4, 0, 0, 0, 0, 0, 0, 0, 1, 2),
      // error with unknown code
      Uint8Array.of(5, 0, 99, 0, 0),
      // trailing bytes
      Uint8Array.of(2, 1, ...new Uint8Array(32), 0),
      Uint8Array.of(7, 0, 1, 2, 3),
      // have-update with count 0, with more indexes than allowed, short of its indexes,
      // with an index past the largest piece count
      Uint8Array.of(8, 0, 0),
      Uint8Array.of(8, 0x10, 0x01, ...new Uint8Array(4 * 4097)),
      Uint8Array.of(8, 0, 2, 0, 0, 0, 1),
      Uint8Array.of(8, 0, 1, 0, 1, 0, 0),
    ]
    for (const c of cases)
      expect(() => decodeMessage(c), `${c}`).toThrow(expect.objectContaining({ name: 'DecodeError' }))
  })
  it('never throws anything but DecodeError on random bytes', () => {
    let decoded = 0
    for (let seed = 1; seed < 3000; seed++) {
      const bytes = pseudoRandomBytes(1 + (seed % 80), seed)
      bytes[0] = 1 + (seed % 8)
      try {
        decodeMessage(bytes)
        decoded++
      } catch (err) {
        expect((err as Error).name).toBe('DecodeError')
      }
    }
    expect(decoded).toBeLessThan(3000)
  })
})

describe('message reader', () => {
  it('reads frames and raw bytes across arbitrary chunking', async () => {
    const piece = pseudoRandomBytes(5000, 3)
    const parts = [
      encodeMessage({ type: 'piece-request', digest, indexes: [1, 2] }),
      encodeMessage({ type: 'piece-header', index: 1, length: piece.length, status: 'ok' }),
      piece,
      encodeMessage({ type: 'piece-header', index: 2, length: piece.length, status: 'ok' }),
      piece,
    ]
    const all = Buffer.concat(parts)
    for (const size of [1, 7, 4096, all.length]) {
      const reader = createMessageReader(chunked(all, size))
      expect(expectMessage((await reader.read())!, 'piece-request').indexes).toEqual([1, 2])
      const h1 = expectMessage((await reader.read())!, 'piece-header')
      expect(Buffer.from((await reader.readBytes(h1.length)).subarray())).toEqual(Buffer.from(piece))
      const h2 = expectMessage((await reader.read())!, 'piece-header')
      const got: Uint8Array[] = []
      for await (const c of reader.readChunks(h2.length)) got.push(c)
      expect(Buffer.concat(got)).toEqual(Buffer.from(piece))
      expect(await reader.read()).toBeUndefined()
    }
  })
  it('skips empty chunks from the source', async () => {
    const frame = encodeMessage({ type: 'piece-header', index: 0, length: 3, status: 'ok' })
    async function* source(): AsyncGenerator<Uint8Array> {
      yield new Uint8Array(0)
      yield frame
      yield new Uint8Array(0)
      yield Uint8Array.of(1, 2)
      yield new Uint8Array(0)
      yield Uint8Array.of(3)
    }
    const reader = createMessageReader(source())
    const h = expectMessage((await reader.read())!, 'piece-header')
    const got: number[] = []
    for await (const c of reader.readChunks(h.length)) got.push(...c)
    expect(got).toEqual([1, 2, 3])
    expect(await reader.read()).toBeUndefined()
  })
  it('rejects oversized, empty and truncated frames', async () => {
    const huge = Uint8Array.of(0x7f, 0xff, 0xff, 0xff, 1)
    await expect(createMessageReader(chunked(huge)).read()).rejects.toMatchObject({ name: 'DecodeError' })
    await expect(createMessageReader(chunked(Uint8Array.of(0, 0, 0, 0))).read()).rejects.toMatchObject({
      name: 'DecodeError',
    })
    await expect(createMessageReader(chunked(Uint8Array.of(0, 0))).read()).rejects.toMatchObject({
      name: 'DecodeError',
    })
    const frame = encodeMessage({ type: 'have-request', digest })
    await expect(createMessageReader(chunked(frame.subarray(0, 10))).read()).rejects.toMatchObject({
      name: 'DecodeError',
    })
    await expect(createMessageReader(chunked(frame), { maxMessageBytes: 8 }).read()).rejects.toMatchObject({
      name: 'DecodeError',
    })
    await expect(createMessageReader(chunked(new Uint8Array(3))).readBytes(4)).rejects.toMatchObject({
      name: 'DecodeError',
    })
  })
  it('honours an abort signal while waiting', async () => {
    async function* never(): AsyncGenerator<Uint8Array> {
      await new Promise(() => {})
      yield new Uint8Array(0)
    }
    const reader = createMessageReader(never())
    const ac = new AbortController()
    const p = reader.read({ signal: ac.signal })
    ac.abort(new Error('stop'))
    await expect(p).rejects.toThrow('stop')
  })
})
