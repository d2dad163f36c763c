/**
 * Generated blob content for the registry benchmark. One file of random bytes is
 * written once; each push uses a "variant" of it whose last 32 bytes differ, so every
 * push stores a blob the server has not seen (no dedupe shortcut) without writing
 * another file. The digest of each variant comes from a copy of the hash of the
 * shared prefix, so preparing a variant costs no re-read.
 */
import { createHash, type Hash, randomFill, randomUUID } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

const randomFillAsync = promisify(randomFill)

/** Bytes at the end of a blob that differ between variants. */
const SUFFIX_BYTES = 32
const WRITE_CHUNK_BYTES = 8 * 1024 * 1024
const READ_CHUNK_BYTES = 1024 * 1024

/** One concrete blob: its digest, its size and a reader for any byte range of it. */
export interface BlobVariant {
  label: string
  digest: string
  size: number
  /** Yields bytes [start, endExclusive) of the blob. */
  read(start: number, endExclusive: number): AsyncGenerator<Buffer>
}

/** A generated file from which blob variants of one size are made. */
export interface BlobSource {
  size: number
  path: string
  /** The variant named `label`; the same label always gives the same bytes. */
  variant(label: string): BlobVariant
}

/**
 * Writes `sizeBytes - 32` random bytes to a new file in `dir` and returns a source
 * of blob variants of exactly `sizeBytes`.
 * @throws {RangeError} when `sizeBytes` is smaller than 64
 */
export async function createBlobSource(init: { dir: string; sizeBytes: number }): Promise<BlobSource> {
  const { sizeBytes } = init
  if (sizeBytes < 2 * SUFFIX_BYTES) throw new RangeError(`blob size ${sizeBytes} is too small`)
  const prefixBytes = sizeBytes - SUFFIX_BYTES
  // A unique name: two sources of the same size in one folder must not share a file.
  const path = join(init.dir, `blob-${sizeBytes}-${randomUUID()}.bin`)
  const prefixHash: Hash = createHash('sha256')
  const file = await open(path, 'w')
  try {
    const buffer = Buffer.allocUnsafe(WRITE_CHUNK_BYTES)
    for (let written = 0; written < prefixBytes; ) {
      const length = Math.min(WRITE_CHUNK_BYTES, prefixBytes - written)
      const chunk = buffer.subarray(0, length)
      await randomFillAsync(chunk)
      prefixHash.update(chunk)
      await file.write(chunk, 0, length)
      written += length
    }
  } finally {
    await file.close()
  }

  return {
    size: sizeBytes,
    path,
    variant(label) {
      const suffix = createHash('sha256').update(`shoal-bench:${label}`).digest()
      const digest = 'sha256:' + prefixHash.copy().update(suffix).digest('hex')
      return {
        label,
        digest,
        size: sizeBytes,
        async *read(start, endExclusive) {
          if (start < 0 || endExclusive > sizeBytes || start > endExclusive) {
            throw new RangeError(`range ${start}-${endExclusive} outside blob of ${sizeBytes}`)
          }
          if (start < prefixBytes) {
            const end = Math.min(endExclusive, prefixBytes)
            if (end > start) {
              const stream = createReadStream(path, { start, end: end - 1, highWaterMark: READ_CHUNK_BYTES })
              for await (const chunk of stream) yield chunk as Buffer
            }
          }
          if (endExclusive > prefixBytes) {
            yield suffix.subarray(Math.max(0, start - prefixBytes), endExclusive - prefixBytes)
          }
        },
      }
    },
  }
}
