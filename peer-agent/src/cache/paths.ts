/**
 * Where the blob cache keeps things on disk. Everything lives under one root:
 *
 * ```
 * <root>/
 *   blobs/<alg>/<hex>          a complete blob, checked against its digest
 *   blobs/<alg>/<hex>.json     its piece layout ({ size, pieceSize }), when known
 *   partial/<alg>/<hex>.data   a download in progress: sparse file of the full size
 *   partial/<alg>/<hex>.json   its layout, written once (temp file + rename)
 *   partial/<alg>/<hex>.bits   bitfield of verified pieces, ceil(pieceCount / 8)
 *                              bytes, bit i = 0x80 >> (i % 8) of byte i / 8;
 *                              a bit is set only after the piece's bytes are fsync'd
 *   tmp/                       staging for whole blobs being written; emptied at start
 * ```
 */
import { join } from 'node:path'
import { type Digest, parseDigest } from '../../../protocol/src/index.js'

/** The paths of one blob's files under the cache root. */
export interface BlobPaths {
  blob: string
  blobLayout: string
  partialData: string
  partialLayout: string
  partialBits: string
}

/** The directory holding complete blobs of one algorithm. */
export function blobsDir(root: string, algorithm: string): string {
  return join(root, 'blobs', algorithm)
}

/** The directory holding partial downloads of one algorithm. */
export function partialDir(root: string, algorithm: string): string {
  return join(root, 'partial', algorithm)
}

/** The staging directory for whole-blob writes. */
export function tmpDir(root: string): string {
  return join(root, 'tmp')
}

/** Every path belonging to `digest`; throws DigestInvalidError for a malformed digest. */
export function blobPaths(root: string, digest: Digest): BlobPaths {
  const { algorithm, hex } = parseDigest(digest)
  const blobs = blobsDir(root, algorithm)
  const partial = partialDir(root, algorithm)
  return {
    blob: join(blobs, hex),
    blobLayout: join(blobs, `${hex}.json`),
    partialData: join(partial, `${hex}.data`),
    partialLayout: join(partial, `${hex}.json`),
    partialBits: join(partial, `${hex}.bits`),
  }
}
