/**
 * Read access to the registry's blob content by digest alone, for the seed: peers ask
 * for a blob, never for a repository, so this reads the content-addressed store under
 * the storage driver (the same files the storage's ranged getBlob streams) rather than
 * going through a repository link. Every blob there is complete and verified: content
 * is only renamed into place after its digest was checked.
 */
import type { Readable } from 'node:stream'
import type { Digest } from '../../../protocol/src/index.js'
import { reusedBufferChunks } from '../storage/driver/file-readable.js'
import { type StorageDriver, StoragePathNotFoundError } from '../storage/index.js'
import { BLOBS_ROOT, blobDataPath, digestFromParts } from '../storage/paths.js'

/** The held blobs, by digest. */
export interface BlobContent {
  /** The size of a held blob, or undefined when it is not held. */
  size(digest: Digest, options?: { signal?: AbortSignal }): Promise<number | undefined>
  /**
   * Opens bytes `[start, end)` of a held blob; undefined when it is not held (or went
   * away, e.g. collected as garbage).
   */
  read(
    digest: Digest,
    start: number,
    end: number,
    options?: { signal?: AbortSignal },
  ): Promise<Readable | undefined>
  /**
   * Reads a whole held blob in chunks for a consumer that is done with each chunk before
   * it asks for the next (hashing): with a driver that offers files, the chunks are
   * views of one reused buffer, so a pass over a large blob allocates nothing per chunk.
   * Undefined when the blob is not held.
   */
  scan(
    digest: Digest,
    size: number,
    options?: { signal?: AbortSignal },
  ): Promise<AsyncIterable<Uint8Array> | undefined>
  /** Every held blob (walks the store; content that arrives meanwhile may be missed). */
  list(options?: { signal?: AbortSignal }): AsyncGenerator<Digest>
}

/** Creates blob content access over a storage driver. */
export function createBlobContent(components: { driver: StorageDriver }): BlobContent {
  const { driver } = components
  return {
    async size(digest, options) {
      const st = await driver.stat(blobDataPath(digest), options)
      return st && !st.isDirectory ? st.size : undefined
    },

    async read(digest, start, end, options) {
      try {
        return await driver.reader(blobDataPath(digest), { offset: start, length: end - start }, options)
      } catch (err) {
        if (err instanceof StoragePathNotFoundError) return undefined
        throw err
      }
    },

    async scan(digest, size, options) {
      try {
        if (driver.openFile === undefined) {
          return await driver.reader(blobDataPath(digest), { offset: 0, length: size }, options)
        }
        const file = await driver.openFile(blobDataPath(digest), options)
        return reusedBufferChunks(file, 0, Math.min(size, file.size), options)
      } catch (err) {
        if (err instanceof StoragePathNotFoundError) return undefined
        throw err
      }
    },

    async *list(options) {
      for (const alg of await driver.list(BLOBS_ROOT, options)) {
        for (const prefix of await driver.list(`${BLOBS_ROOT}/${alg}`, options)) {
          for (const hex of await driver.list(`${BLOBS_ROOT}/${alg}/${prefix}`, options)) {
            options?.signal?.throwIfAborted()
            const digest = digestFromParts(alg, hex)
            if (digest === undefined) continue
            const st = await driver.stat(blobDataPath(digest), options)
            if (st && !st.isDirectory) yield digest
          }
        }
      }
    },
  }
}
