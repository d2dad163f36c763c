/**
 * Content identifiers (multiformats CIDv1) for DHT provider records. The CID of a blob
 * wraps the blob's own digest: raw codec, with the multihash of the digest's algorithm
 * (sha2-256 or sha2-512) holding the digest's bytes, so any peer can derive it from the
 * OCI digest without reading the blob. The CID of a piece map is the raw-codec sha2-256
 * CID of its canonical encoding.
 */
import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import * as multihash from 'multiformats/hashes/digest'
import { type Digest, parseDigest } from './digest.js'
import { DecodeError } from './errors.js'
import { encodePieceMap, type PieceMap } from './piece-map.js'

/** Multihash code of sha2-256. */
export const SHA2_256_CODE = 0x12
/** Multihash code of sha2-512. */
export const SHA2_512_CODE = 0x13

/** The CID of a blob digest. Throws DigestInvalidError for a malformed digest. */
export function blobCid(digest: Digest | string): CID {
  const { algorithm, hex } = parseDigest(digest)
  const code = algorithm === 'sha256' ? SHA2_256_CODE : SHA2_512_CODE
  return CID.createV1(raw.code, multihash.create(code, Buffer.from(hex, 'hex')))
}

/**
 * The blob digest a CID stands for (the inverse of blobCid). Throws DecodeError for a
 * CID that is not a raw-codec sha2-256/sha2-512 CID.
 */
export function digestFromBlobCid(cid: CID): Digest {
  if (cid.version !== 1 || cid.code !== raw.code) throw new DecodeError('not a raw CIDv1')
  const { code, digest } = cid.multihash
  if (code === SHA2_256_CODE && digest.byteLength === 32) {
    return `sha256:${Buffer.from(digest).toString('hex')}` as Digest
  }
  if (code === SHA2_512_CODE && digest.byteLength === 64) {
    return `sha512:${Buffer.from(digest).toString('hex')}` as Digest
  }
  throw new DecodeError('CID does not carry a sha256 or sha512 digest')
}

/** The CID of a piece map: raw codec, sha2-256 of its canonical encoding. Throws DecodeError for an invalid map. */
export function pieceMapCid(map: PieceMap): CID {
  const hash = createHash('sha256').update(encodePieceMap(map)).digest()
  return CID.createV1(raw.code, multihash.create(SHA2_256_CODE, hash))
}
