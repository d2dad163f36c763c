/**
 * Blob content and per-repository blob links. Content is stored once under blobs/ and
 * made visible to a repository by a link file; a blob is readable through a
 * repository only when both the link and the content exist. Inputs are validated by
 * the caller (registry.ts).
 */
import type { Readable } from 'node:stream'
import type { Digest } from '../../../protocol/src/index.js'
import { BlobUnknownError, RangeInvalidError } from '../../../protocol/src/index.js'
import type { AbortOptions, BlobInfo, BlobReader, ByteRange } from '../service.js'
import { protectBlob, type StorageContext } from './context.js'
import { readableFromFile } from './driver/file-readable.js'
import { StoragePathNotFoundError } from './driver/index.js'
import { blobDataPath, blobDir, layerLinkPath } from './paths.js'

/** Content-addressed blobs and their repository links. */
export interface BlobStore {
  /** Info of the content, wherever it is linked, or undefined. */
  content(digest: Digest, options?: AbortOptions): Promise<BlobInfo | undefined>
  /** Info of a blob linked into `repository` whose content exists, or undefined. */
  linked(repository: string, digest: Digest, options?: AbortOptions): Promise<BlobInfo | undefined>
  /** Writes (or refreshes) the link of a blob into `repository`. */
  link(repository: string, digest: Digest, options?: AbortOptions): Promise<void>
  /** Removes the link; BlobUnknownError when it did not exist. */
  unlink(repository: string, digest: Digest, options?: AbortOptions): Promise<void>
  /** Opens linked content for reading; BlobUnknownError, RangeInvalidError. */
  open(repository: string, digest: Digest, range?: ByteRange, options?: AbortOptions): Promise<BlobReader>
  /** Reads small content (a manifest body) whole; undefined when missing. */
  readSmall(digest: Digest, options?: AbortOptions): Promise<Uint8Array | undefined>
  /** Stores small, already verified content atomically unless it is already there. */
  putSmall(digest: Digest, data: Uint8Array, options?: AbortOptions): Promise<void>
  /**
   * Publishes a verified, fsynced file as the content of `digest` by renaming it into
   * place; when the content already exists (same size) the file is deleted instead.
   * Resolves true when new content was stored.
   */
  commitFile(file: string, info: BlobInfo, options?: AbortOptions): Promise<boolean>
  /** Deletes content (GC only, under the exclusive lock). */
  deleteContent(digest: Digest, options?: AbortOptions): Promise<void>
}

/** Creates the blob store over a storage context. */
export function createBlobStore(ctx: StorageContext): BlobStore {
  const { driver } = ctx

  const store: BlobStore = {
    async content(digest, options) {
      const st = await driver.stat(blobDataPath(digest), options)
      if (!st || st.isDirectory) return undefined
      return { digest, size: st.size }
    },

    async linked(repository, digest, options) {
      const link = await driver.stat(layerLinkPath(repository, digest), options)
      if (!link || link.isDirectory) return undefined
      return store.content(digest, options)
    },

    async link(repository, digest, options) {
      await driver.putContent(layerLinkPath(repository, digest), Buffer.from(digest), options)
      protectBlob(ctx, digest)
    },

    async unlink(repository, digest, options) {
      const path = layerLinkPath(repository, digest)
      const st = await driver.stat(path, options)
      if (!st) throw new BlobUnknownError(undefined, { digest })
      await driver.delete(path.slice(0, -'/link'.length), options)
    },

    async open(repository, digest, range, options) {
      const info = await store.linked(repository, digest, options)
      if (!info) throw new BlobUnknownError(undefined, { digest })
      let start = 0
      let end = info.size - 1
      if (range) {
        if (!Number.isSafeInteger(range.start) || range.start < 0 || range.start >= info.size) {
          throw new RangeInvalidError(undefined, { size: info.size, range })
        }
        if (range.end !== undefined && (!Number.isSafeInteger(range.end) || range.end < range.start)) {
          throw new RangeInvalidError(undefined, { size: info.size, range })
        }
        start = range.start
        end = Math.min(range.end ?? info.size - 1, info.size - 1)
      }
      try {
        if (driver.openFile !== undefined) {
          // The HTTP layer sends the file through buffers it reuses; the stream is only
          // opened for callers that ask for it.
          const file = await driver.openFile(blobDataPath(digest), options)
          let stream: Readable | undefined
          return {
            info,
            range: { start, end },
            file,
            get stream() {
              stream ??= readableFromFile(file, start, end + 1, options)
              return stream
            },
          }
        }
        const stream = await driver.reader(
          blobDataPath(digest),
          { offset: start, length: end - start + 1 },
          options,
        )
        return { info, range: { start, end }, stream }
      } catch (err) {
        if (err instanceof StoragePathNotFoundError) throw new BlobUnknownError(undefined, { digest })
        throw err
      }
    },

    async readSmall(digest, options) {
      try {
        return await driver.getContent(blobDataPath(digest), options)
      } catch (err) {
        if (err instanceof StoragePathNotFoundError) return undefined
        throw err
      }
    },

    async putSmall(digest, data, options) {
      const existing = await store.content(digest, options)
      if (existing && existing.size === data.byteLength) return
      await driver.putContent(blobDataPath(digest), data, options)
      protectBlob(ctx, digest)
    },

    async commitFile(file, info, options) {
      const existing = await store.content(info.digest, options)
      protectBlob(ctx, info.digest)
      if (existing && existing.size === info.size) {
        await driver.delete(file, options)
        return false
      }
      await driver.move(file, blobDataPath(info.digest), options)
      return true
    },

    async deleteContent(digest, options) {
      const dir = blobDir(digest)
      await driver.delete(dir, options)
      // Drop the two-character prefix directory once it is empty, so the tree does not
      // accumulate empty directories (callers hold the GC lock, so nothing is adding to it).
      const prefix = dir.slice(0, dir.lastIndexOf('/'))
      if ((await driver.list(prefix, options)).length === 0) await driver.delete(prefix, options)
    },
  }
  return store
}
