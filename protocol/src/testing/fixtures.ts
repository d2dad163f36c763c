/**
 * Test fixtures generated in code: deterministic blobs, piece maps and peer keys.
 * Test-only; never imported by production code.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { Ed25519PrivateKey, PeerId } from '@libp2p/interface'
import { type Digest, digestOf } from '../digest.js'
import { computePieceMap, type PieceMap } from '../piece-map.js'

/** Deterministic pseudo-random bytes (xorshift32) of `size` bytes from `seed`. */
export function pseudoRandomBytes(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size)
  let x = seed >>> 0 || 0x9e3779b9
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out[i] = x & 0xff
    if (i + 1 < size) out[i + 1] = (x >>> 8) & 0xff
    if (i + 2 < size) out[i + 2] = (x >>> 16) & 0xff
    if (i + 3 < size) out[i + 3] = (x >>> 24) & 0xff
  }
  return out
}

/** A blob of `size` deterministic bytes and its sha256 digest. */
export function blobFixture(size: number, seed = 1): { bytes: Uint8Array; digest: Digest; size: number } {
  const bytes = pseudoRandomBytes(size, seed)
  return { bytes, digest: digestOf(bytes), size }
}

/** Yields `bytes` in chunks of `chunkSize` (to exercise streaming code). */
export async function* chunked(bytes: Uint8Array, chunkSize = 64 * 1024): AsyncGenerator<Uint8Array> {
  for (let o = 0; o < bytes.byteLength; o += chunkSize) yield bytes.subarray(o, o + chunkSize)
}

/** A blob with its piece map; `pieceSize` defaults to the chosen one. */
export async function pieceMapFixture(
  size: number,
  options: { pieceSize?: number; seed?: number } = {},
): Promise<{ bytes: Uint8Array; digest: Digest; map: PieceMap }> {
  const { bytes, digest } = blobFixture(size, options.seed)
  const map = await computePieceMap(chunked(bytes), digest, size, { pieceSize: options.pieceSize })
  return { bytes, digest, map }
}

/** A fresh Ed25519 libp2p key and its peer id. */
export async function peerKeyFixture(): Promise<{ privateKey: Ed25519PrivateKey; peerId: PeerId }> {
  const privateKey = await generateKeyPair('Ed25519')
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey) }
}
