import { describe, expect, it } from 'vitest'
import { digestOf } from './digest.js'
import {
  choosePieceSize,
  computePieceMap,
  decodePieceMap,
  decodeSignedPieceMap,
  encodePieceMap,
  encodeSignedPieceMap,
  MAX_PIECE_SIZE,
  MIN_PIECE_SIZE,
  pieceHash,
  pieceIndexAt,
  pieceMatches,
  pieceRange,
  piecesForByteRange,
  pieceSizeAllowed,
  signPieceMap,
  validatePieceMap,
  verifyPieceMap,
} from './piece-map.js'
import {
  blobFixture,
  chunked,
  peerKeyFixture,
  pieceMapFixture,
  pseudoRandomBytes,
} from './testing/fixtures.js'

const KiB = 1024
const MiB = 1024 * KiB

describe('choosePieceSize', () => {
  it('clamps nextPow2(size / 256) to [1 MiB, 16 MiB]', () => {
    expect(choosePieceSize(0)).toBe(MIN_PIECE_SIZE)
    expect(choosePieceSize(10)).toBe(MIN_PIECE_SIZE)
    expect(choosePieceSize(256 * MiB)).toBe(MiB)
    expect(choosePieceSize(256 * MiB + 1)).toBe(2 * MiB)
    expect(choosePieceSize(1024 * MiB)).toBe(4 * MiB)
    expect(choosePieceSize(100 * 1024 * MiB)).toBe(MAX_PIECE_SIZE)
  })
  it('rejects bad sizes', () => {
    expect(() => choosePieceSize(-1)).toThrow(expect.objectContaining({ name: 'SizeInvalidError' }))
    expect(() => choosePieceSize(1.5)).toThrow(expect.objectContaining({ name: 'SizeInvalidError' }))
  })
})

describe('pieceSizeAllowed', () => {
  it('takes the powers of two a piece map may use', () => {
    expect(pieceSizeAllowed(16 * 1024)).toBe(true)
    expect(pieceSizeAllowed(256 * 1024)).toBe(true)
    expect(pieceSizeAllowed(16 * 1024 * 1024)).toBe(true)
    expect(pieceSizeAllowed(8 * 1024)).toBe(false)
    expect(pieceSizeAllowed(32 * 1024 * 1024)).toBe(false)
    expect(pieceSizeAllowed(384 * 1024)).toBe(false)
    expect(pieceSizeAllowed(0)).toBe(false)
  })
})

describe('computePieceMap', () => {
  it('hashes each piece, streaming across chunk boundaries', async () => {
    const pieceSize = 16 * KiB
    const { bytes, digest } = blobFixture(3 * pieceSize + 100)
    const map = await computePieceMap(chunked(bytes, 5000), digest, bytes.length, { pieceSize })
    expect(map.pieces).toHaveLength(4)
    for (let i = 0; i < 4; i++) {
      const { offset, length } = pieceRange(map, i)
      expect(map.pieces[i]).toBe(pieceHash(bytes.subarray(offset, offset + length)))
      expect(pieceMatches(map, i, bytes.subarray(offset, offset + length))).toBe(true)
    }
    expect(pieceRange(map, 3)).toEqual({ offset: 3 * pieceSize, length: 100 })
    expect(pieceMatches(map, 0, bytes.subarray(1, pieceSize + 1))).toBe(false)
  })
  it('makes one piece of a small blob and of the empty blob', async () => {
    const small = await pieceMapFixture(1000)
    expect(small.map.pieceSize).toBe(MIN_PIECE_SIZE)
    expect(small.map.pieces).toEqual([pieceHash(small.bytes)])
    const empty = await computePieceMap(chunked(new Uint8Array(0)), digestOf(new Uint8Array(0)), 0)
    expect(empty.pieces).toEqual([pieceHash(new Uint8Array(0))])
    expect(pieceRange(empty, 0)).toEqual({ offset: 0, length: 0 })
  })
  it('handles an exact multiple of the piece size', async () => {
    const { map } = await pieceMapFixture(2 * 16 * KiB, { pieceSize: 16 * KiB })
    expect(map.pieces).toHaveLength(2)
    expect(pieceRange(map, 1).length).toBe(16 * KiB)
  })
  it('rejects wrong size and digest', async () => {
    const { bytes, digest } = blobFixture(1000)
    await expect(computePieceMap(chunked(bytes), digest, 999)).rejects.toMatchObject({
      name: 'SizeInvalidError',
    })
    await expect(computePieceMap(chunked(bytes), digest, 1001)).rejects.toMatchObject({
      name: 'SizeInvalidError',
    })
    await expect(computePieceMap(chunked(bytes), digestOf('x'), 1000)).rejects.toMatchObject({
      name: 'DigestMismatchError',
    })
  })
})

describe('piece range helpers', () => {
  const map = { size: 100 * KiB, pieceSize: 16 * KiB }
  it('maps offsets and byte ranges to pieces', () => {
    expect(pieceIndexAt(map, 0)).toBe(0)
    expect(pieceIndexAt(map, 16 * KiB)).toBe(1)
    expect(() => pieceIndexAt(map, 100 * KiB)).toThrow(RangeError)
    expect(piecesForByteRange(map, 0, 100 * KiB)).toEqual({ first: 0, last: 6 })
    expect(piecesForByteRange(map, 16 * KiB - 1, 16 * KiB + 1)).toEqual({ first: 0, last: 1 })
    expect(piecesForByteRange(map, 5, 5)).toEqual({ first: 0, last: -1 })
    expect(() => pieceRange(map, 7)).toThrow(RangeError)
  })
})

describe('encoding', () => {
  it('round-trips and is canonical', async () => {
    const { map } = await pieceMapFixture(40 * KiB, { pieceSize: 16 * KiB })
    const bytes = encodePieceMap(map)
    expect(bytes.length).toBe(8 + 1 + 32 + 16 + 3 * 32)
    expect(decodePieceMap(bytes)).toEqual(map)
    expect(encodePieceMap(decodePieceMap(bytes))).toEqual(bytes)
  })
  it('rejects invalid fields', async () => {
    const { map } = await pieceMapFixture(40 * KiB, { pieceSize: 16 * KiB })
    const bad = [
      { ...map, digest: 'sha256:xyz' },
      { ...map, size: -1 },
      { ...map, size: 2 ** 41 },
      { ...map, pieceSize: 20000 },
      { ...map, pieceSize: 1024 },
      { ...map, pieceSize: 32 * MiB },
      { ...map, pieces: map.pieces.slice(1) },
      { ...map, pieces: [...map.pieces, map.pieces[0]] },
      { ...map, pieces: ['zz', ...map.pieces.slice(1)] },
      { ...map, pieces: 'nope' },
      null,
      'x',
    ]
    for (const b of bad)
      expect(() => validatePieceMap(b), JSON.stringify(b)).toThrow(
        expect.objectContaining({ name: 'DecodeError' }),
      )
  })
  it('rejects random and mutated bytes with DecodeError only', async () => {
    const { map } = await pieceMapFixture(40 * KiB, { pieceSize: 16 * KiB })
    const good = encodePieceMap(map)
    for (let seed = 1; seed < 300; seed++) {
      const junk = pseudoRandomBytes(seed % 200, seed)
      expect(() => decodePieceMap(junk)).toThrow(expect.objectContaining({ name: 'DecodeError' }))
      const mutated = good.slice(0, good.length - (seed % 40))
      if (seed % 40 !== 0)
        expect(() => decodePieceMap(mutated)).toThrow(expect.objectContaining({ name: 'DecodeError' }))
      const flipped = good.slice()
      const at = 8 + (seed % 49)
      flipped[at] = flipped[at]! ^ 0xff
      try {
        decodePieceMap(flipped)
      } catch (err) {
        expect((err as Error).name).toBe('DecodeError')
      }
    }
  })
})

describe('signatures', () => {
  it('signs and verifies against the expected peer id', async () => {
    const seed = await peerKeyFixture()
    const { map } = await pieceMapFixture(40 * KiB, { pieceSize: 16 * KiB })
    const signed = await signPieceMap(map, seed.privateKey)
    expect(signed.signer).toBe(seed.peerId.toString())
    expect(await verifyPieceMap(signed, seed.peerId)).toEqual(map)
    expect(await verifyPieceMap(JSON.parse(JSON.stringify(signed)), seed.peerId.toString())).toEqual(map)
    const binary = decodeSignedPieceMap(encodeSignedPieceMap(signed))
    expect(binary).toEqual(signed)
    expect(await verifyPieceMap(binary, [seed.peerId])).toEqual(map)
  })
  it('rejects another signer, a tampered map and a forged envelope', async () => {
    const seed = await peerKeyFixture()
    const other = await peerKeyFixture()
    const { map } = await pieceMapFixture(40 * KiB, { pieceSize: 16 * KiB })
    const signed = await signPieceMap(map, seed.privateKey)
    await expect(verifyPieceMap(signed, other.peerId)).rejects.toMatchObject({
      name: 'SignatureInvalidError',
    })
    const tampered = { ...signed, map: { ...map, pieces: [map.pieces[1]!, ...map.pieces.slice(1)] } }
    await expect(verifyPieceMap(tampered, seed.peerId)).rejects.toMatchObject({
      name: 'SignatureInvalidError',
    })
    // Signed by `other` but claiming to be the seed.
    const forged = { ...(await signPieceMap(map, other.privateKey)), signer: seed.peerId.toString() }
    await expect(verifyPieceMap(forged, seed.peerId)).rejects.toMatchObject({ name: 'SignatureInvalidError' })
    await expect(verifyPieceMap({ ...signed, publicKey: 'AAAA' }, seed.peerId)).rejects.toMatchObject({
      name: 'SignatureInvalidError',
    })
    await expect(verifyPieceMap({ ...signed, signature: '!!' }, seed.peerId)).rejects.toMatchObject({
      name: 'DecodeError',
    })
    await expect(verifyPieceMap({ ...signed, signature: 'AAAA' }, seed.peerId)).rejects.toMatchObject({
      name: 'SignatureInvalidError',
    })
    await expect(verifyPieceMap(null, seed.peerId)).rejects.toMatchObject({ name: 'DecodeError' })
    await expect(verifyPieceMap(signed, 'not-a-peer-id')).rejects.toMatchObject({
      name: 'SignatureInvalidError',
    })
  })
  it('rejects random binary envelopes with DecodeError', () => {
    for (let seed = 1; seed < 200; seed++) {
      expect(() => decodeSignedPieceMap(pseudoRandomBytes(seed, seed))).toThrow(
        expect.objectContaining({ name: 'DecodeError' }),
      )
    }
  })
})
