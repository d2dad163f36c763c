/**
 * The piece map of a blob: its digest and size, the piece size, and the sha256 of every
 * piece. The seed registry builds it and signs it with its libp2p key, so that the map
 * can travel through any peer and still be checked against the seed's peer id.
 *
 * Canonical binary encoding (all integers big-endian), used for signing, hashing (the
 * piece map CID) and the libp2p wire:
 *
 * ```
 * offset  size        field
 * 0       8           magic "SHOALPM1"
 * 8       1           digest algorithm: 1 = sha256, 2 = sha512
 * 9       32 | 64     digest bytes
 * +0      8           blob size in bytes (u64, at most MAX_BLOB_SIZE)
 * +8      4           piece size in bytes (u32, power of two in [MIN_PIECE_SIZE_ALLOWED, MAX_PIECE_SIZE])
 * +12     4           piece count (u32, must equal pieceCountFor(size, pieceSize))
 * +16     32 * count  sha256 of each piece, in order
 * ```
 *
 * A blob smaller than one piece is one piece; the empty blob is one empty piece.
 */
import { createHash } from 'node:crypto'
import { peerIdFromPublicKey, peerIdFromString } from '@libp2p/peer-id'
import { publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { z } from 'zod'
import { type Digest, Digester, parseDigest } from './digest.js'
import { DecodeError, DigestMismatchError, SignatureInvalidError, SizeInvalidError } from './errors.js'

/** Smallest piece size choosePieceSize picks (256 KiB). */
export const MIN_PIECE_SIZE = 256 * 1024
/** Largest piece size any piece map may use (16 MiB); also bounds piece transfers on the wire. */
export const MAX_PIECE_SIZE = 16 * 1024 * 1024
/** Smallest piece size a piece map may use (16 KiB); smaller than the default so tests can use small blobs. */
export const MIN_PIECE_SIZE_ALLOWED = 16 * 1024
/** choosePieceSize aims at about this many pieces per blob. */
export const TARGET_PIECE_COUNT = 256
/** Largest number of pieces in one piece map (1 TiB at 16 MiB pieces). */
export const MAX_PIECE_COUNT = 65536
/** Largest blob a piece map can describe (1 TiB). */
export const MAX_BLOB_SIZE = 2 ** 40
/** Media type of the JSON form of a signed piece map (served over HTTP by the seed). */
export const SIGNED_PIECE_MAP_MEDIA_TYPE = 'application/vnd.shoal.piece-map.v1+json'

const MAGIC = new TextEncoder().encode('SHOALPM1')
const SIGNING_DOMAIN = new TextEncoder().encode('shoal piece map signature v1\n')
const ALGORITHM_CODES = { sha256: 1, sha512: 2 } as const
const PIECE_HASH_BYTES = 32
const HEX64 = /^[a-f0-9]{64}$/
/** Bounds on the signed envelope's key and signature (RSA-4096 keys fit). */
const MAX_PUBLIC_KEY_BYTES = 1024
const MAX_SIGNATURE_BYTES = 1024
const MAX_PEER_ID_LENGTH = 128

/** The piece map of one blob. `pieces[i]` is the lowercase hex sha256 of piece i. */
export interface PieceMap {
  digest: Digest
  size: number
  pieceSize: number
  pieces: string[]
}

/** A piece's byte range in the blob: `[offset, offset + length)`. */
export interface PieceRange {
  offset: number
  length: number
}

/** A piece map with the seed's signature over its canonical encoding. */
export interface SignedPieceMap {
  map: PieceMap
  /** Peer id (string form) of the signer. */
  signer: string
  /** The signer's public key, protobuf-encoded (libp2p form), base64. */
  publicKey: string
  /** Signature over the signing domain followed by the canonical encoding, base64. */
  signature: string
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0
}

/**
 * Whether `bytes` is a piece size a piece map may use: a power of two in
 * [MIN_PIECE_SIZE_ALLOWED, MAX_PIECE_SIZE].
 */
export function pieceSizeAllowed(bytes: number): boolean {
  return isPowerOfTwo(bytes) && bytes >= MIN_PIECE_SIZE_ALLOWED && bytes <= MAX_PIECE_SIZE
}

/**
 * The piece size for a blob of `blobSize` bytes: clamp(nextPow2(size / 256), 256 KiB, 16 MiB).
 * Throws SizeInvalidError for a negative, fractional or too large size.
 */
export function choosePieceSize(blobSize: number): number {
  if (!Number.isSafeInteger(blobSize) || blobSize < 0 || blobSize > MAX_BLOB_SIZE) {
    throw new SizeInvalidError(`invalid blob size: ${blobSize}`)
  }
  const target = blobSize / TARGET_PIECE_COUNT
  let p = MIN_PIECE_SIZE
  while (p < target && p < MAX_PIECE_SIZE) p *= 2
  return p
}

/** Number of pieces of a blob of `size` bytes cut into `pieceSize` pieces (at least one). */
export function pieceCountFor(size: number, pieceSize: number): number {
  return Math.max(1, Math.ceil(size / pieceSize))
}

/** Number of pieces in `map`. */
export function pieceCount(map: PieceMap): number {
  return map.pieces.length
}

/** The byte range of piece `index`. Throws RangeError for an index outside the map. */
export function pieceRange(map: Pick<PieceMap, 'size' | 'pieceSize'>, index: number): PieceRange {
  const count = pieceCountFor(map.size, map.pieceSize)
  if (!Number.isInteger(index) || index < 0 || index >= count) {
    throw new RangeError(`piece index ${index} out of range [0, ${count})`)
  }
  const offset = index * map.pieceSize
  return { offset, length: Math.min(map.pieceSize, map.size - offset) }
}

/** The index of the piece holding byte `offset` (offset must be in `[0, size)`, or 0 for the empty blob). */
export function pieceIndexAt(map: Pick<PieceMap, 'size' | 'pieceSize'>, offset: number): number {
  if (!Number.isInteger(offset) || offset < 0 || (offset >= map.size && !(offset === 0 && map.size === 0))) {
    throw new RangeError(`offset ${offset} out of range [0, ${map.size})`)
  }
  return Math.floor(offset / map.pieceSize)
}

/**
 * The inclusive range of piece indexes covering bytes `[start, endExclusive)`. An empty
 * byte range yields `{ first: x, last: x - 1 }` (no pieces).
 */
export function piecesForByteRange(
  map: Pick<PieceMap, 'size' | 'pieceSize'>,
  start: number,
  endExclusive: number,
): { first: number; last: number } {
  if (!Number.isInteger(start) || !Number.isInteger(endExclusive) || start < 0 || endExclusive > map.size) {
    throw new RangeError(`byte range [${start}, ${endExclusive}) outside [0, ${map.size})`)
  }
  const first = Math.floor(start / map.pieceSize)
  if (endExclusive <= start) return { first, last: first - 1 }
  return { first, last: Math.floor((endExclusive - 1) / map.pieceSize) }
}

/** The lowercase hex sha256 of `data` (the piece hash used in piece maps). */
export function pieceHash(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** True when `data` is exactly piece `index` of `map` (right length and sha256). */
export function pieceMatches(map: PieceMap, index: number, data: Uint8Array): boolean {
  const expected = map.pieces[index]
  if (expected === undefined) return false
  if (data.byteLength !== pieceRange(map, index).length) return false
  return pieceHash(data) === expected
}

/**
 * Checks every field of a piece map: a valid digest, a size within bounds, a power-of-two
 * piece size within bounds, a piece count consistent with size and piece size, and 64
 * lowercase hex characters per piece. Throws DecodeError naming the first problem.
 */
export function validatePieceMap(value: unknown): PieceMap {
  if (typeof value !== 'object' || value === null) throw new DecodeError('piece map: not an object')
  const m = value as Record<string, unknown>
  if (typeof m.digest !== 'string') throw new DecodeError('piece map: digest missing')
  try {
    parseDigest(m.digest)
  } catch (err) {
    throw new DecodeError(`piece map: invalid digest`, undefined, { cause: err })
  }
  const size = m.size
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0 || size > MAX_BLOB_SIZE) {
    throw new DecodeError('piece map: invalid size')
  }
  const pieceSize = m.pieceSize
  if (typeof pieceSize !== 'number' || !pieceSizeAllowed(pieceSize)) {
    throw new DecodeError('piece map: invalid piece size')
  }
  const pieces = m.pieces
  if (!Array.isArray(pieces)) throw new DecodeError('piece map: pieces missing')
  const expected = pieceCountFor(size, pieceSize)
  if (expected > MAX_PIECE_COUNT) throw new DecodeError('piece map: too many pieces')
  if (pieces.length !== expected) {
    throw new DecodeError(`piece map: ${pieces.length} pieces, expected ${expected}`)
  }
  for (const p of pieces) {
    if (typeof p !== 'string' || !HEX64.test(p)) throw new DecodeError('piece map: invalid piece hash')
  }
  return { digest: m.digest as Digest, size, pieceSize, pieces: [...(pieces as string[])] }
}

/**
 * Computes the piece map of a blob from its bytes, streaming: memory stays at one chunk.
 * Also checks the whole blob: throws SizeInvalidError when the source does not hold
 * exactly `size` bytes, DigestMismatchError when it does not hash to `digest`, and
 * DigestInvalidError for a malformed digest. `pieceSize` defaults to choosePieceSize(size).
 */
export async function computePieceMap(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  digest: Digest,
  size: number,
  options: {
    pieceSize?: number
    signal?: AbortSignal
    /**
     * Check the whole blob against `digest` (DigestMismatchError). Callers that read a
     * blob their own store verified at commit may skip this second pass over the bytes.
     * @default true
     */
    verifyDigest?: boolean
  } = {},
): Promise<PieceMap> {
  const { algorithm } = parseDigest(digest)
  const pieceSize = options.pieceSize ?? choosePieceSize(size)
  if (!pieceSizeAllowed(pieceSize)) {
    throw new RangeError(`invalid piece size: ${pieceSize}`)
  }
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_BLOB_SIZE) {
    throw new SizeInvalidError(`invalid blob size: ${size}`)
  }
  if (pieceCountFor(size, pieceSize) > MAX_PIECE_COUNT) throw new RangeError('too many pieces')
  const whole = options.verifyDigest === false ? undefined : new Digester(algorithm)
  const pieces: string[] = []
  let piece = createHash('sha256')
  let inPiece = 0
  let total = 0
  for await (const chunk of source) {
    options.signal?.throwIfAborted()
    total += chunk.byteLength
    if (total > size) throw new SizeInvalidError(`blob is larger than ${size} bytes`, { expected: size })
    whole?.update(chunk)
    let off = 0
    while (off < chunk.byteLength) {
      const n = Math.min(pieceSize - inPiece, chunk.byteLength - off)
      piece.update(chunk.subarray(off, off + n))
      inPiece += n
      off += n
      if (inPiece === pieceSize) {
        pieces.push(piece.digest('hex'))
        piece = createHash('sha256')
        inPiece = 0
      }
    }
  }
  if (total !== size)
    throw new SizeInvalidError(`blob has ${total} bytes, expected ${size}`, { expected: size, actual: total })
  if (inPiece > 0 || pieces.length === 0) pieces.push(piece.digest('hex'))
  const actual = whole?.digest() ?? digest
  if (actual !== digest) throw new DigestMismatchError(undefined, { expected: digest, actual })
  return { digest, size, pieceSize, pieces }
}

/** The canonical binary encoding of a piece map (see the module comment). Validates first. */
export function encodePieceMap(map: PieceMap): Uint8Array {
  const m = validatePieceMap(map)
  const { algorithm, hex } = parseDigest(m.digest)
  const digestBytes = Buffer.from(hex, 'hex')
  const out = new Uint8Array(MAGIC.length + 1 + digestBytes.length + 16 + m.pieces.length * PIECE_HASH_BYTES)
  const view = new DataView(out.buffer)
  out.set(MAGIC, 0)
  let o = MAGIC.length
  out[o++] = ALGORITHM_CODES[algorithm]
  out.set(digestBytes, o)
  o += digestBytes.length
  view.setBigUint64(o, BigInt(m.size))
  view.setUint32(o + 8, m.pieceSize)
  view.setUint32(o + 12, m.pieces.length)
  o += 16
  for (const p of m.pieces) {
    out.set(Buffer.from(p, 'hex'), o)
    o += PIECE_HASH_BYTES
  }
  return out
}

/**
 * Decodes the canonical binary encoding. Throws DecodeError for anything malformed:
 * bad magic, unknown algorithm, a piece count that disagrees with the size, trailing or
 * missing bytes. Never allocates more than the input's size.
 */
export function decodePieceMap(bytes: Uint8Array): PieceMap {
  if (!(bytes instanceof Uint8Array)) throw new DecodeError('piece map: not bytes')
  const header = MAGIC.length + 1
  if (bytes.byteLength < header) throw new DecodeError('piece map: truncated')
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) throw new DecodeError('piece map: bad magic')
  }
  const code = bytes[MAGIC.length]
  const algorithm = code === 1 ? 'sha256' : code === 2 ? 'sha512' : undefined
  if (algorithm === undefined) throw new DecodeError('piece map: unknown digest algorithm')
  const digestLength = algorithm === 'sha256' ? 32 : 64
  let o = header
  if (bytes.byteLength < o + digestLength + 16) throw new DecodeError('piece map: truncated')
  const digest = `${algorithm}:${Buffer.from(bytes.subarray(o, o + digestLength)).toString('hex')}` as Digest
  o += digestLength
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const bigSize = view.getBigUint64(o)
  if (bigSize > BigInt(MAX_BLOB_SIZE)) throw new DecodeError('piece map: invalid size')
  const size = Number(bigSize)
  const pieceSize = view.getUint32(o + 8)
  const count = view.getUint32(o + 12)
  o += 16
  if (count > MAX_PIECE_COUNT) throw new DecodeError('piece map: too many pieces')
  if (bytes.byteLength !== o + count * PIECE_HASH_BYTES)
    throw new DecodeError('piece map: length does not match piece count')
  const pieces: string[] = []
  for (let i = 0; i < count; i++) {
    pieces.push(Buffer.from(bytes.subarray(o, o + PIECE_HASH_BYTES)).toString('hex'))
    o += PIECE_HASH_BYTES
  }
  return validatePieceMap({ digest, size, pieceSize, pieces })
}

function signingBytes(map: PieceMap): Uint8Array {
  const body = encodePieceMap(map)
  const out = new Uint8Array(SIGNING_DOMAIN.length + body.length)
  out.set(SIGNING_DOMAIN, 0)
  out.set(body, SIGNING_DOMAIN.length)
  return out
}

/**
 * Signs a piece map with a libp2p private key (Ed25519 in shoal). The envelope carries
 * the signer's peer id and public key. Throws DecodeError when the map is invalid.
 */
export async function signPieceMap(
  map: PieceMap,
  privateKey: PrivateKey,
  options: { signal?: AbortSignal } = {},
): Promise<SignedPieceMap> {
  const data = signingBytes(map)
  const signature = await privateKey.sign(data, options)
  return {
    map: validatePieceMap(map),
    signer: peerIdFromPublicKey(privateKey.publicKey).toString(),
    publicKey: Buffer.from(publicKeyToProtobuf(privateKey.publicKey)).toString('base64'),
    signature: Buffer.from(signature).toString('base64'),
  }
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

const signedPieceMapSchema = z.object({
  map: z.unknown(),
  signer: z.string().min(1).max(MAX_PEER_ID_LENGTH),
  publicKey: z
    .string()
    .max(Math.ceil(MAX_PUBLIC_KEY_BYTES / 3) * 4)
    .regex(BASE64),
  signature: z
    .string()
    .max(Math.ceil(MAX_SIGNATURE_BYTES / 3) * 4)
    .regex(BASE64),
})

/**
 * Checks the shape of a signed piece map received as JSON (bounded lengths, a valid
 * map) without checking the signature. Throws DecodeError.
 */
export function parseSignedPieceMap(value: unknown): SignedPieceMap {
  const r = signedPieceMapSchema.safeParse(value)
  if (!r.success) throw new DecodeError(`signed piece map: ${r.error.issues[0]?.message ?? 'invalid'}`)
  return { ...r.data, map: validatePieceMap(r.data.map) }
}

function expectedSet(expected: string | PeerId | Array<string | PeerId>): Set<string> {
  const list = Array.isArray(expected) ? expected : [expected]
  try {
    return new Set(list.map((p) => (typeof p === 'string' ? peerIdFromString(p).toString() : p.toString())))
  } catch (err) {
    throw new SignatureInvalidError('expected signer is not a valid peer id', undefined, { cause: err })
  }
}

/**
 * Verifies a signed piece map: the shape and every field of the map, that the public
 * key belongs to the claimed signer, that the signer is one of `expectedSigner`, and the
 * signature. Returns the map. Throws DecodeError for a malformed envelope and
 * SignatureInvalidError for a wrong signer or a bad signature.
 */
export async function verifyPieceMap(
  signed: unknown,
  expectedSigner: string | PeerId | Array<string | PeerId>,
  options: { signal?: AbortSignal } = {},
): Promise<PieceMap> {
  const s = parseSignedPieceMap(signed)
  const expected = expectedSet(expectedSigner)
  let signer: string
  let publicKey: ReturnType<typeof publicKeyFromProtobuf>
  try {
    publicKey = publicKeyFromProtobuf(Buffer.from(s.publicKey, 'base64'))
    signer = peerIdFromPublicKey(publicKey).toString()
  } catch (err) {
    throw new SignatureInvalidError('piece map: malformed public key', undefined, { cause: err })
  }
  if (signer !== s.signer) throw new SignatureInvalidError('piece map: public key does not match the signer')
  if (!expected.has(signer)) throw new SignatureInvalidError(`piece map: signed by unexpected peer ${signer}`)
  let ok = false
  try {
    ok = await publicKey.verify(signingBytes(s.map), Buffer.from(s.signature, 'base64'), options)
  } catch (err) {
    options.signal?.throwIfAborted()
    throw new SignatureInvalidError('piece map: signature check failed', undefined, { cause: err })
  }
  if (!ok) throw new SignatureInvalidError('piece map: bad signature')
  return s.map
}

/**
 * Binary form of a signed piece map (for libp2p): u32 map length, the canonical map,
 * u16 public key length, the protobuf public key, u16 signature length, the signature.
 */
export function encodeSignedPieceMap(signed: SignedPieceMap): Uint8Array {
  const map = encodePieceMap(signed.map)
  const pk = Buffer.from(signed.publicKey, 'base64')
  const sig = Buffer.from(signed.signature, 'base64')
  if (pk.length > MAX_PUBLIC_KEY_BYTES || sig.length > MAX_SIGNATURE_BYTES)
    throw new DecodeError('signed piece map: key or signature too long')
  const out = new Uint8Array(4 + map.length + 2 + pk.length + 2 + sig.length)
  const view = new DataView(out.buffer)
  let o = 0
  view.setUint32(o, map.length)
  out.set(map, o + 4)
  o += 4 + map.length
  view.setUint16(o, pk.length)
  out.set(pk, o + 2)
  o += 2 + pk.length
  view.setUint16(o, sig.length)
  out.set(sig, o + 2)
  return out
}

/**
 * Decodes the binary form of a signed piece map; the signer is derived from the public
 * key. Throws DecodeError for anything malformed. Does not check the signature: call
 * verifyPieceMap on the result.
 */
export function decodeSignedPieceMap(bytes: Uint8Array): SignedPieceMap {
  if (!(bytes instanceof Uint8Array) || bytes.byteLength < 8)
    throw new DecodeError('signed piece map: truncated')
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let o = 0
  const mapLength = view.getUint32(o)
  o += 4
  if (o + mapLength + 2 > bytes.byteLength) throw new DecodeError('signed piece map: truncated')
  const map = decodePieceMap(bytes.subarray(o, o + mapLength))
  o += mapLength
  const pkLength = view.getUint16(o)
  o += 2
  if (pkLength > MAX_PUBLIC_KEY_BYTES || o + pkLength + 2 > bytes.byteLength)
    throw new DecodeError('signed piece map: bad public key')
  const pk = bytes.subarray(o, o + pkLength)
  o += pkLength
  const sigLength = view.getUint16(o)
  o += 2
  if (sigLength > MAX_SIGNATURE_BYTES || o + sigLength !== bytes.byteLength)
    throw new DecodeError('signed piece map: bad signature length')
  const sig = bytes.subarray(o, o + sigLength)
  let signer: string
  try {
    signer = peerIdFromPublicKey(publicKeyFromProtobuf(pk)).toString()
  } catch (err) {
    throw new DecodeError('signed piece map: malformed public key', undefined, { cause: err })
  }
  return {
    map,
    signer,
    publicKey: Buffer.from(pk).toString('base64'),
    signature: Buffer.from(sig).toString('base64'),
  }
}
