/**
 * Upload sessions: bytes are appended to uploads/<id>/data and fsynced, then the
 * offset is recorded in uploads/<id>/state.json, so the persisted offset never
 * counts bytes that are not durable. A chunk that fails half-way is cut off again, so
 * the offset always sits at the end of the last complete chunk. On completion the
 * data is verified against the digest and renamed into blobs/ (see blob-store.ts).
 *
 * A session's sha256 is computed while chunks arrive and kept in memory; after a
 * restart (or for sha512) the data is hashed again from storage at completion.
 */
import { createHash, type Hash, randomUUID } from 'node:crypto'
import {
  BlobUploadInvalidError,
  BlobUploadUnknownError,
  type Digest,
  DigestMismatchError,
  InsufficientStorageError,
  parseDigest,
  RangeInvalidError,
  ShoalError,
  SizeInvalidError,
} from '../../../protocol/src/index.js'
import { createPieceBufferPool } from '../../../protocol/src/p2p/piece-buffers.js'
import type { AbortOptions, BlobInfo, UploadState } from '../service.js'
import type { BlobStore } from './blob-store.js'
import type { StorageContext } from './context.js'
import { StoragePathNotFoundError } from './driver/index.js'
import { KeyedMutex } from './lock.js'
import { UPLOADS_ROOT, uploadDataPath, uploadDir, uploadStatePath } from './paths.js'
import { createWriteBehind } from './write-behind.js'

/** What state.json holds. */
export interface PersistedUpload extends UploadState {
  /** Last time a chunk was accepted (ms); the session expires uploadTtlMs after it. */
  updatedAt: number
}

/** A chunk's constraints, as sent with Content-Range / Content-Length. */
export interface ChunkSpec {
  start?: number
  length?: number
}

/** Options of the upload store. */
export interface UploadStoreInit {
  /** Idle time after which a session is unknown and GC removes it. */
  uploadTtlMs: number
  /** Refuse new sessions when the driver reports less free space than this. */
  minFreeBytes?: number
  /** Called after new content is committed. */
  onCommitted?: (info: BlobInfo) => void
}

/** Upload sessions of every repository. */
export interface UploadStore {
  start(repository: string, options?: AbortOptions): Promise<UploadState>
  get(repository: string, id: string, options?: AbortOptions): Promise<UploadState>
  append(
    repository: string,
    id: string,
    body: AsyncIterable<Uint8Array>,
    chunk?: ChunkSpec,
    options?: AbortOptions,
  ): Promise<UploadState>
  complete(
    repository: string,
    id: string,
    digest: Digest,
    body?: AsyncIterable<Uint8Array>,
    chunk?: ChunkSpec,
    options?: AbortOptions,
  ): Promise<BlobInfo>
  cancel(repository: string, id: string, options?: AbortOptions): Promise<void>
  /** Ids of every session on storage (for GC). */
  ids(options?: AbortOptions): Promise<string[]>
  /**
   * Removes the session when it has been idle longer than `ttlMs` (or has no readable
   * state and its directory is that old). Resolves true when it was (or would be) removed.
   */
  expire(id: string, ttlMs: number, dryRun: boolean, options?: AbortOptions): Promise<boolean>
}

const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

interface RunningHash {
  hash: Hash
  /** The number of bytes fed to `hash`; valid only while it equals the session offset. */
  offset: number
}

function publicState(s: PersistedUpload): UploadState {
  return { id: s.id, repository: s.repository, offset: s.offset, startedAt: s.startedAt }
}

function toBuffer(chunk: unknown): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk
  if (typeof chunk === 'string') return Buffer.from(chunk)
  throw new BlobUploadInvalidError('upload body yielded a non-binary chunk')
}

/** Accepts sync iterables too (arrays of chunks in tests and callers with buffered bodies). */
function iteratorOf(body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncIterator<Uint8Array> {
  if (typeof (body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === 'function') {
    return (body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
  }
  if (typeof (body as Iterable<Uint8Array>)[Symbol.iterator] === 'function') {
    const sync = (body as Iterable<Uint8Array>)[Symbol.iterator]()
    return {
      next: async () => sync.next(),
      return: async () => sync.return?.() ?? { done: true, value: undefined },
    }
  }
  throw new BlobUploadInvalidError('upload body is not iterable')
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code
}

/** Creates the upload store. */
export function createUploadStore(ctx: StorageContext, blobs: BlobStore, init: UploadStoreInit): UploadStore {
  const { driver } = ctx
  const mutex = new KeyedMutex()
  const hashes = new Map<string, RunningHash>()
  /** The write-behind buffers of every upload of this store, reused from one to the next. */
  const writeBuffers = createPieceBufferPool({ maxBuffers: 16 })

  async function load(repository: string, id: string, options?: AbortOptions): Promise<PersistedUpload> {
    if (typeof id !== 'string' || !UPLOAD_ID.test(id)) throw new BlobUploadUnknownError(undefined, { id })
    let raw: Uint8Array
    try {
      raw = await driver.getContent(uploadStatePath(id), options)
    } catch (err) {
      if (err instanceof StoragePathNotFoundError) throw new BlobUploadUnknownError(undefined, { id })
      throw err
    }
    let state: PersistedUpload
    try {
      state = JSON.parse(Buffer.from(raw).toString('utf8')) as PersistedUpload
    } catch {
      throw new BlobUploadUnknownError('upload state is unreadable', { id })
    }
    if (state.id !== id || state.repository !== repository)
      throw new BlobUploadUnknownError(undefined, { id })
    if (ctx.now() - state.updatedAt > init.uploadTtlMs)
      throw new BlobUploadUnknownError('upload expired', { id })
    return state
  }

  async function save(state: PersistedUpload, options?: AbortOptions): Promise<void> {
    await driver.putContent(uploadStatePath(state.id), Buffer.from(JSON.stringify(state)), options)
  }

  /** Makes the data file exactly `state.offset` long, cutting off bytes of a chunk that never completed. */
  async function reconcile(state: PersistedUpload, options?: AbortOptions): Promise<void> {
    const path = uploadDataPath(state.id)
    const st = await driver.stat(path, options)
    const size = st?.size ?? 0
    if (!st && state.offset === 0) return
    if (size < state.offset) {
      throw new BlobUploadInvalidError('upload data is shorter than its recorded offset', { id: state.id })
    }
    if (size > state.offset) await driver.truncate(path, state.offset, options)
  }

  async function appendLocked(
    state: PersistedUpload,
    body: AsyncIterable<Uint8Array>,
    chunk: ChunkSpec | undefined,
    options?: AbortOptions,
  ): Promise<PersistedUpload> {
    if (chunk?.start !== undefined && chunk.start !== state.offset) {
      throw new RangeInvalidError(`chunk must start at offset ${state.offset}`, {
        offset: state.offset,
        start: chunk.start,
      })
    }
    const declared = chunk?.length
    if (declared !== undefined && (!Number.isSafeInteger(declared) || declared < 0)) {
      throw new SizeInvalidError('invalid chunk length', { length: declared })
    }
    await reconcile(state, options)
    const path = uploadDataPath(state.id)
    let running = hashes.get(state.id)
    if (running && running.offset !== state.offset) running = undefined
    if (!running && state.offset === 0) running = { hash: createHash('sha256'), offset: 0 }
    const backup = running?.hash.copy()
    const writer = await driver.writer(path, { append: true }, options)
    const behind = createWriteBehind(
      writer,
      { pool: writeBuffers },
      options?.signal ? { signal: options.signal } : {},
    )
    let written = 0
    try {
      const it = iteratorOf(body)
      while (true) {
        options?.signal?.throwIfAborted()
        let next: IteratorResult<Uint8Array>
        try {
          next = await it.next()
        } catch (err) {
          if (err instanceof ShoalError || options?.signal?.aborted) throw err
          throw new BlobUploadInvalidError(
            'upload body ended early',
            { offset: state.offset },
            { cause: err },
          )
        }
        if (next.done) break
        const buf = toBuffer(next.value)
        if (declared !== undefined && written + buf.byteLength > declared) {
          // The rest of the body is left to the caller (an HTTP layer may still answer on its socket).
          throw new SizeInvalidError(undefined, { declared, received: written + buf.byteLength })
        }
        // Hashed while earlier chunks are still on their way to the file.
        const queued = behind.write(buf)
        running?.hash.update(buf)
        written += buf.byteLength
        await queued
      }
      if (declared !== undefined && written !== declared) {
        throw new SizeInvalidError(undefined, { declared, received: written })
      }
      await behind.flush()
      await writer.commit(options)
    } catch (err) {
      await behind.settle()
      await writer.close().catch(() => undefined)
      await driver.truncate(path, state.offset).catch((e) => {
        ctx.logger?.error({ err: e, upload: state.id }, 'could not cut a failed chunk off an upload')
      })
      if (running && backup) hashes.set(state.id, { hash: backup, offset: state.offset })
      else hashes.delete(state.id)
      if (isErrno(err, 'ENOSPC') || isErrno(err, 'EDQUOT')) {
        throw new InsufficientStorageError(undefined, undefined, { cause: err })
      }
      throw err
    }
    await writer.close()
    const next: PersistedUpload = { ...state, offset: state.offset + written, updatedAt: ctx.now() }
    await save(next)
    if (running) hashes.set(state.id, { hash: running.hash, offset: next.offset })
    return next
  }

  async function hashFromStorage(
    state: PersistedUpload,
    algorithm: string,
    options?: AbortOptions,
  ): Promise<string> {
    const hash = createHash(algorithm)
    if (state.offset === 0) return hash.digest('hex')
    const stream = await driver.reader(uploadDataPath(state.id), { offset: 0, length: state.offset }, options)
    for await (const chunk of stream) hash.update(chunk as Uint8Array)
    return hash.digest('hex')
  }

  async function remove(id: string): Promise<void> {
    hashes.delete(id)
    await driver.delete(uploadDir(id))
  }

  const store: UploadStore = {
    async start(repository, options) {
      if (init.minFreeBytes !== undefined && driver.freeSpace) {
        const free = await driver.freeSpace(options)
        if (free !== undefined && free < init.minFreeBytes) {
          throw new InsufficientStorageError(undefined, { free, required: init.minFreeBytes })
        }
      }
      const now = ctx.now()
      const state: PersistedUpload = {
        id: randomUUID(),
        repository,
        offset: 0,
        startedAt: now,
        updatedAt: now,
      }
      await driver.putContent(uploadDataPath(state.id), new Uint8Array(0), options)
      await save(state, options)
      return publicState(state)
    },

    async get(repository, id, options) {
      return publicState(await load(repository, id, options))
    },

    async append(repository, id, body, chunk, options) {
      return mutex.run(id, async () => {
        const state = await load(repository, id, options)
        return publicState(await appendLocked(state, body, chunk, options))
      })
    },

    async complete(repository, id, digest, body, chunk, options) {
      const { algorithm, hex } = parseDigest(digest)
      return mutex.run(id, async () => {
        let state = await load(repository, id, options)
        if (body) state = await appendLocked(state, body, chunk, options)
        else if (chunk?.start !== undefined && chunk.start !== state.offset) {
          throw new RangeInvalidError(`chunk must start at offset ${state.offset}`, { offset: state.offset })
        }
        await reconcile(state, options)
        const running = hashes.get(id)
        const actualHex =
          algorithm === 'sha256' && running && running.offset === state.offset
            ? running.hash.copy().digest('hex')
            : await hashFromStorage(state, algorithm, options)
        if (actualHex !== hex) {
          // A session with the wrong content cannot become right by appending more.
          await remove(id)
          throw new DigestMismatchError(undefined, { expected: digest, actual: `${algorithm}:${actualHex}` })
        }
        const info: BlobInfo = { digest, size: state.offset }
        let stored = false
        await ctx.lock.shared(async () => {
          if (state.offset === 0) {
            // The data file may legitimately be absent for an empty session after a crash.
            await driver.putContent(uploadDataPath(id), new Uint8Array(0), options)
          }
          stored = await blobs.commitFile(uploadDataPath(id), info, options)
          await blobs.link(repository, digest, options)
        })
        await remove(id)
        if (stored) {
          try {
            const r = init.onCommitted?.(info) as unknown
            if (r instanceof Promise) {
              r.catch((err) => ctx.logger?.error({ err, digest }, 'onBlobCommitted failed'))
            }
          } catch (err) {
            ctx.logger?.error({ err, digest }, 'onBlobCommitted failed')
          }
        }
        return info
      })
    },

    async cancel(repository, id, options) {
      return mutex.run(id, async () => {
        await load(repository, id, options)
        await remove(id)
      })
    },

    async ids(options) {
      return (await driver.list(UPLOADS_ROOT, options)).filter((id) => UPLOAD_ID.test(id))
    },

    async expire(id, ttlMs, dryRun, options) {
      return mutex.run(id, async () => {
        const cutoff = ctx.now() - ttlMs
        let last: number | undefined
        try {
          const raw = await driver.getContent(uploadStatePath(id), options)
          last = (JSON.parse(Buffer.from(raw).toString('utf8')) as PersistedUpload).updatedAt
        } catch {
          last = undefined
        }
        if (typeof last !== 'number') {
          const st = await driver.stat(uploadDir(id), options)
          if (!st) return false
          last = st.modifiedAt
        }
        if (last >= cutoff) return false
        if (!dryRun) await remove(id)
        return true
      })
    },
  }
  return store
}
