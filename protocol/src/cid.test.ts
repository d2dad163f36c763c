import { CID } from 'multiformats/cid'
import { describe, expect, it } from 'vitest'
import { blobCid, digestFromBlobCid, pieceMapCid } from './cid.js'
import { digestOf } from './digest.js'
import { pieceMapFixture } from './testing/fixtures.js'

describe('cid', () => {
  it('wraps a sha256 digest in a raw CIDv1 and back', () => {
    const digest = digestOf('hello')
    const cid = blobCid(digest)
    expect(cid.version).toBe(1)
    expect(cid.code).toBe(0x55)
    expect(cid.multihash.code).toBe(0x12)
    expect(Buffer.from(cid.multihash.digest).toString('hex')).toBe(digest.slice(7))
    expect(digestFromBlobCid(CID.parse(cid.toString()))).toBe(digest)
  })
  it('uses sha2-512 for sha512 digests', () => {
    const digest = digestOf('hello', 'sha512')
    const cid = blobCid(digest)
    expect(cid.multihash.code).toBe(0x13)
    expect(digestFromBlobCid(cid)).toBe(digest)
  })
  it('rejects bad digests and foreign CIDs', () => {
    expect(() => blobCid('sha256:abc')).toThrow(expect.objectContaining({ name: 'DigestInvalidError' }))
    const dagPb = CID.createV1(0x70, blobCid(digestOf('x')).multihash)
    expect(() => digestFromBlobCid(dagPb)).toThrow(expect.objectContaining({ name: 'DecodeError' }))
  })
  it('gives piece maps a stable CID that differs from the blob CID', async () => {
    const { map, digest } = await pieceMapFixture(40 * 1024, { pieceSize: 16 * 1024 })
    expect(pieceMapCid(map).equals(pieceMapCid({ ...map }))).toBe(true)
    expect(pieceMapCid(map).equals(blobCid(digest))).toBe(false)
  })
})
