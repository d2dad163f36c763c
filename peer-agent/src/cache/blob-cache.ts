/**
 * A content-addressed blob cache on local disk: complete blobs by digest, and partial
 * downloads (a sparse data file plus a persisted bitfield of verified pieces) that
 * survive a restart. Space is accounted against a quota; unpinned blobs are evicted
 * by least-recent use before new data is written. See paths.ts for the on-disk tree.
 */
import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm, stat, utimes } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import type { Logger } from 'pino'
import {
  BlobUnknownError,
  BlobUploadInvalidError,
  type Digest,
  DigestMismatchError,
  InsufficientStorageError,
  isDigest,
  RangeInvalidError,
  SizeInvalidError,
} from '../../../protocol/src/index.js'
import { followSignal } from '../../../protocol/src/abort.js'
import { suppliedOrNew } from '../../../protocol/src/p2p/piece-buffers.js'
import { choosePieceSize } from '../../../protocol/src/piece-map.js'
import { bitBytes, countBits, getBit, withBit } from './bits.js'
import {
  createMutex,
  hashFile,
  isNoSpace,
  isNotFound,
  syncDir,
  writeAll,
  writeFileDurably,
} from './fs-util.js'
import { type BlobPaths, blobPaths, blobsDir, partialDir, tmpDir } from './paths.js'

/** How a blob is cut into pieces: every piece is `pieceSize` bytes except the last. */
export interface PieceLayout {
  /** Blob size in bytes. */
  size: number
  /** Piece size in bytes (a positive integer; a power of two in practice). */
  pieceSize: number
}

/** What the cache knows about one blob. */
export interface BlobStat {
  digest: Digest
  size: number
  complete: boolean
  /** Undefined only when `pieceSizeFor` gives nothing for a complete blob without a stored layout. */
  pieceSize: number | undefined
  pieceCount: number
  piecesHeld: number
}

/** A blob the cache holds, as listed for announces. */
export interface HeldBlob extends BlobStat {
  /** Bitfield of held pieces (MSB first); all ones for a complete blob. */
  bitfield: Uint8Array
}

/** Events emitted on `cache.events`. */
export interface BlobCacheEvents {
  /** A verified piece was stored (readable at once; on disk by the next flush). */
  piece: [{ digest: Digest; index: number; piecesHeld: number; pieceCount: number }]
  /** A blob passed its whole-digest check and is now complete. */
  complete: [{ digest: Digest; size: number }]
  /** A blob (complete or partial) was evicted to make room. */
  evicted: [{ digest: Digest; bytes: number }]
  /** A partial download was thrown away (digest mismatch or explicit delete). */
  discarded: [{ digest: Digest; reason: string }]
}

/** Options for `createBlobCache`. */
export interface BlobCacheInit {
  /** Directory owning every cache file. */
  root: string
  /** Disk budget in bytes for complete blobs plus the full size of partial ones. */
  quotaBytes: number
  /**
   * The piece size to assume for a complete blob stored without a layout (putBlob).
   * @default choosePieceSize from protocol/src/piece-map.ts
   */
  pieceSizeFor?: (size: number) => number
  /**
   * fsync piece data before its bit is written, and small files and renames, so a
   * crash never leaves a bit set for bytes that were not written. Only tests that
   * measure speed turn it off.
   * @default true
   */
  durable?: boolean
  /**
   * Stored pieces are served at once, but their bits reach the disk in batches: at most
   * this long after a piece is stored, the partial file is synced once and the whole
   * bitfield written (and at complete and stop). One sync per batch rather than one per
   * piece; a crash costs at most this window's pieces, which are fetched again.
   * @default 1000
   */
  flushIntervalMs?: number
  /** Size of the chunks readRange yields. @default 1 MiB */
  readChunkBytes?: number
  /**
   * How long a blob's read handle stays open after its last reader finished, for the
   * next one (see Entry.reader). @default READ_HANDLE_IDLE_MS
   */
  readHandleIdleMs?: number
}

/** The collaborators the cache uses. */
export interface BlobCacheComponents {
  logger?: Logger
}

/** Options for readRange. */
export interface ReadRangeOptions {
  signal?: AbortSignal
  /**
   * Wait for missing pieces of a partial blob to arrive instead of failing with
   * BlobUnknownError; the stream fails if the download is discarded.
   * @default false
   */
  wait?: boolean
  /**
   * Called with the offset of the next byte the stream reads, before it waits for that
   * byte's piece, so a downloader can steer its streaming window by the reader.
   */
  onPosition?: (position: number) => void
  /**
   * Supplies the memory each chunk is read into (called with the chunk's length), so a
   * caller that knows when it is done with a chunk can reuse it (the piece server's send
   * buffers); a Buffer is yielded as the very object returned (the stream turns another
   * Uint8Array into a Buffer over the same memory). Memory of another length is not
   * used: the reader allocates that chunk itself.
   * @default a new buffer per chunk
   */
  allocate?: (length: number) => Uint8Array
}

/** The blob cache. */
export interface BlobCache {
  /** Creates the directories and loads what is on disk (trusting only persisted bitfields). */
  start(): Promise<void>
  /** Stops accepting work; safe to call twice. */
  stop(): Promise<void>
  /** The cache's events (piece, complete, evicted, discarded). */
  readonly events: EventEmitter<BlobCacheEvents>
  /** What the cache holds of `digest`, or undefined. */
  stat(digest: Digest): BlobStat | undefined
  /** True when `digest` is held complete. */
  has(digest: Digest): boolean
  /** True when piece `index` of `digest` is held (verified). */
  hasPiece(digest: Digest, index: number): boolean
  /** Bitfield of held pieces, or undefined when nothing of the blob is held. */
  bitfield(digest: Digest): Uint8Array | undefined
  /**
   * Begins, or resumes, a partial download with the given layout and returns what is
   * held. A partial with a different layout is discarded and restarted. Reserves the
   * full size against the quota, evicting least-recently-used unpinned blobs first;
   * throws InsufficientStorageError (evicting nothing) when that cannot make room.
   */
  open(digest: Digest, layout: PieceLayout, options?: { signal?: AbortSignal }): Promise<BlobStat>
  /**
   * Persists piece `index` (whose sha256 the caller has verified), then its bitfield
   * bit, then emits `piece`. A held piece is a no-op. Throws BlobUnknownError when no
   * download is open, RangeInvalidError / SizeInvalidError for a wrong index or length,
   * InsufficientStorageError when the disk is full (the piece is then not held).
   * `bytes` is written to the data file before the promise settles and is not kept,
   * handed on or read again afterwards (readers and events read the file), so the
   * caller may reuse the buffer once it settled, resolved or rejected (the download
   * scheduler reads the next piece into it). A cache that kept it (a write-behind queue,
   * a memory tier) would have to copy it.
   */
  writePiece(
    digest: Digest,
    index: number,
    bytes: Uint8Array,
    options?: { signal?: AbortSignal },
  ): Promise<BlobStat>
  /**
   * Checks the whole partial blob against its digest and marks it complete. Throws
   * BlobUploadInvalidError when pieces are missing; on a mismatch the download is
   * discarded and DigestMismatchError thrown. A complete blob is a no-op.
   */
  complete(digest: Digest, options?: { signal?: AbortSignal }): Promise<void>
  /**
   * Stores a whole blob read from `source` (e.g. straight from an upstream), checking
   * its size and digest before it becomes visible. Throws SizeInvalidError,
   * DigestMismatchError or InsufficientStorageError; nothing is kept on failure.
   */
  putBlob(
    digest: Digest,
    size: number,
    source: AsyncIterable<Uint8Array>,
    options?: { signal?: AbortSignal; layout?: PieceLayout },
  ): Promise<void>
  /**
   * Streams bytes [start, end) of the blob. The blob is pinned until the stream ends
   * or is destroyed (destroy a stream you stop reading; that also ends a wait). Throws BlobUnknownError when the blob is not held and RangeInvalidError for
   * a range outside it; a missing piece fails the stream unless `wait` is set.
   */
  readRange(digest: Digest, start: number, end: number, options?: ReadRangeOptions): Readable
  /** Resolves once piece `index` is held; rejects when the download is discarded or aborted. */
  waitForPiece(digest: Digest, index: number, options?: { signal?: AbortSignal }): Promise<void>
  /** Protects `digest` from eviction (reference counted); may precede `open`. */
  pin(digest: Digest): void
  /** Releases one pin. */
  unpin(digest: Digest): void
  /** Removes the blob (complete or partial) regardless of pins. */
  delete(digest: Digest): Promise<void>
  /** Every held blob with its piece counts, for announces. */
  list(): HeldBlob[]
  /** Bytes accounted against the quota. */
  usage(): { usedBytes: number; quotaBytes: number }
}

interface Entry {
  digest: Digest
  paths: BlobPaths
  complete: boolean
  size: number
  pieceSize: number | undefined
  pieceCount: number
  /** In-memory bitfield (partial only); ahead of the persisted one until the next flush. */
  bits: Uint8Array
  held: number
  lastAccess: number
  /** Breaks ties between accesses in the same millisecond. */
  accessSeq: number
  lastTouchPersisted: number
  /** Serialises bitfield flushes. */
  bitsChain: Promise<void>
  /** Pieces stored whose bits are not yet on disk. */
  dirty: boolean
  flushTimer: ReturnType<typeof setTimeout> | undefined
  /** The partial data file, open for piece writes while the download runs. */
  writer: Promise<FileHandle> | undefined
  /** Pieces being written now, to fold duplicate writes into one. */
  writing: Map<number, Promise<BlobStat>>
  completing: Promise<void> | undefined
  removed: boolean
  /** The data file open for reading, shared by every reader of the blob (see acquireReader). */
  reader: SharedReadHandle | undefined
}

/** One read-only handle on a blob's data file and the readers using it. */
interface SharedReadHandle {
  handle: Promise<FileHandle>
  users: number
  idleTimer: ReturnType<typeof setTimeout> | undefined
}

const TOUCH_PERSIST_INTERVAL_MS = 60_000

/**
 * How long a blob's read handle is kept open after its last reader. A swarm peer sends
 * a piece every second or so, each through a reader of its own: opening and closing the
 * file for every one of them was about 3% of an agent's CPU while it served (N = 50 testbed
 * profile, docs/BENCHMARKS.md, cluster, twenty-fourth round).
 */
export const READ_HANDLE_IDLE_MS = 5_000

function pieceCountOf(size: number, pieceSize: number | undefined): number {
  if (pieceSize === undefined) return 0
  return size === 0 ? 1 : Math.ceil(size / pieceSize)
}

function validLayout(layout: unknown): layout is PieceLayout {
  const l = layout as PieceLayout | undefined
  return (
    typeof l === 'object' &&
    l !== null &&
    Number.isSafeInteger(l.size) &&
    l.size >= 0 &&
    Number.isSafeInteger(l.pieceSize) &&
    l.pieceSize > 0
  )
}

/**
 * Creates a blob cache rooted at `init.root` with a `quotaBytes` budget. Call start()
 * before use.
 */
export function createBlobCache(components: BlobCacheComponents, init: BlobCacheInit): BlobCache {
  const { root, quotaBytes } = init
  const durable = init.durable ?? true
  const flushIntervalMs = init.flushIntervalMs ?? 1_000
  const chunkBytes = init.readChunkBytes ?? 1 << 20
  const readHandleIdleMs = init.readHandleIdleMs ?? READ_HANDLE_IDLE_MS
  const pieceSizeFor = init.pieceSizeFor ?? choosePieceSize
  const log = components.logger
  const events = new EventEmitter<BlobCacheEvents>()
  events.setMaxListeners(0)
  const entries = new Map<Digest, Entry>()
  const pins = new Map<Digest, number>()
  const exclusive = createMutex()
  let usedBytes = 0
  let accessCounter = 0
  let started = false

  function pinned(digest: Digest): boolean {
    return (pins.get(digest) ?? 0) > 0
  }

  function touch(entry: Entry): void {
    const now = Date.now()
    entry.lastAccess = now
    entry.accessSeq = ++accessCounter
    if (now - entry.lastTouchPersisted > TOUCH_PERSIST_INTERVAL_MS) {
      entry.lastTouchPersisted = now
      const t = new Date(now)
      // The access time survives a restart through the file's mtime; best effort.
      utimes(entry.complete ? entry.paths.blob : entry.paths.partialLayout, t, t).catch(() => {})
    }
  }

  function statOf(entry: Entry): BlobStat {
    return {
      digest: entry.digest,
      size: entry.size,
      complete: entry.complete,
      pieceSize: entry.pieceSize,
      pieceCount: entry.pieceCount,
      piecesHeld: entry.complete ? entry.pieceCount : entry.held,
    }
  }

  function entryHasPiece(entry: Entry, index: number): boolean {
    if (!Number.isInteger(index) || index < 0) return false
    if (entry.complete) return entry.pieceSize !== undefined && index < entry.pieceCount
    return index < entry.pieceCount && getBit(entry.bits, index)
  }

  function newEntry(
    digest: Digest,
    complete: boolean,
    layout: { size: number; pieceSize: number | undefined },
  ) {
    const pieceCount = pieceCountOf(layout.size, layout.pieceSize)
    const entry: Entry = {
      digest,
      paths: blobPaths(root, digest),
      complete,
      size: layout.size,
      pieceSize: layout.pieceSize,
      pieceCount,
      bits: new Uint8Array(complete ? 0 : bitBytes(pieceCount)),
      held: 0,
      lastAccess: Date.now(),
      accessSeq: ++accessCounter,
      lastTouchPersisted: Date.now(),
      bitsChain: Promise.resolve(),
      dirty: false,
      flushTimer: undefined,
      writer: undefined,
      writing: new Map(),
      completing: undefined,
      removed: false,
      reader: undefined,
    }
    return entry
  }

  async function removeFiles(entry: Entry): Promise<void> {
    const p = entry.paths
    const files = entry.complete ? [p.blob, p.blobLayout] : [p.partialData, p.partialLayout, p.partialBits]
    await Promise.all(files.map((f) => rm(f, { force: true })))
  }

  /** Drops an entry from memory and disk (caller holds the mutex or owns the entry). */
  async function dropEntry(entry: Entry): Promise<void> {
    if (entry.removed) return
    entry.removed = true
    if (entries.get(entry.digest) === entry) entries.delete(entry.digest)
    usedBytes -= entry.size
    clearTimeout(entry.flushTimer)
    await closeWriter(entry)
    // A reader still running closes the handle when it finishes (releaseReader).
    closeReader(entry)
    await removeFiles(entry)
  }

  /**
   * Makes room for `bytes` more, evicting least-recently-used unpinned blobs (never
   * `except`). Evicts nothing when eviction cannot make enough room. Mutex held.
   */
  async function reserve(bytes: number, except: Digest): Promise<void> {
    const need = usedBytes + bytes - quotaBytes
    if (need > 0) {
      const candidates = [...entries.values()]
        .filter(
          (e) =>
            e.digest !== except && !pinned(e.digest) && e.completing === undefined && e.writing.size === 0,
        )
        .sort((a, b) => a.lastAccess - b.lastAccess || a.accessSeq - b.accessSeq)
      let freeable = 0
      const victims: Entry[] = []
      for (const e of candidates) {
        if (freeable >= need) break
        victims.push(e)
        freeable += e.size
      }
      if (freeable < need) {
        throw new InsufficientStorageError(
          `cache quota exceeded: need ${bytes} bytes, ${quotaBytes - usedBytes} free and ${freeable} evictable`,
          { quotaBytes, usedBytes, requested: bytes },
        )
      }
      for (const v of victims) {
        await dropEntry(v)
        log?.info({ digest: v.digest, bytes: v.size }, 'evicted blob from cache')
        events.emit('evicted', { digest: v.digest, bytes: v.size })
      }
    }
    usedBytes += bytes
  }

  async function loadPartial(digest: Digest, paths: BlobPaths): Promise<Entry | undefined> {
    let layout: unknown
    try {
      layout = JSON.parse(await readFile(paths.partialLayout, 'utf8'))
    } catch {
      return undefined
    }
    if (!validLayout(layout)) return undefined
    const entry = newEntry(digest, false, layout)
    let bits: Uint8Array
    try {
      bits = new Uint8Array(await readFile(paths.partialBits))
    } catch {
      bits = new Uint8Array(0)
    }
    if (bits.byteLength === entry.bits.byteLength) {
      entry.bits = bits
      // Bits past the last piece mean nothing; keep them clear for the wire encoding.
      const spare = entry.pieceCount % 8
      if (spare !== 0) bits[bits.byteLength - 1]! &= 0xff << (8 - spare)
    } else {
      // A bitfield that does not fit the layout is not trusted: start from nothing.
      await writeFileDurably(paths.partialBits, entry.bits, durable)
    }
    entry.held = countBits(entry.bits, entry.pieceCount)
    try {
      const st = await stat(paths.partialData)
      if (st.size !== entry.size) {
        const fh = await open(paths.partialData, 'r+')
        try {
          await fh.truncate(entry.size)
        } finally {
          await fh.close()
        }
      }
      const st2 = await stat(paths.partialLayout)
      entry.lastAccess = entry.lastTouchPersisted = st2.mtimeMs
    } catch {
      return undefined
    }
    return entry
  }

  async function loadComplete(digest: Digest, paths: BlobPaths): Promise<Entry | undefined> {
    let size: number
    let mtime: number
    try {
      const st = await stat(paths.blob)
      size = st.size
      mtime = st.mtimeMs
    } catch {
      return undefined
    }
    let pieceSize: number | undefined
    try {
      const layout: unknown = JSON.parse(await readFile(paths.blobLayout, 'utf8'))
      if (validLayout(layout) && layout.size === size) pieceSize = layout.pieceSize
    } catch {
      // No layout stored beside the blob.
    }
    pieceSize ??= pieceSizeFor(size)
    const entry = newEntry(digest, true, { size, pieceSize })
    entry.lastAccess = entry.lastTouchPersisted = mtime
    return entry
  }

  async function scan(): Promise<void> {
    for (const algorithm of ['sha256', 'sha512']) {
      const bdir = blobsDir(root, algorithm)
      const pdir = partialDir(root, algorithm)
      await mkdir(bdir, { recursive: true })
      await mkdir(pdir, { recursive: true })
      for (const name of await readdir(bdir)) {
        const digest = `${algorithm}:${name}`
        if (!isDigest(digest)) {
          // Leftover temp files, and layouts whose blob is gone, are removed.
          const owner = name.split('.')[0] ?? ''
          const orphanLayout =
            name === `${owner}.json` && !(await stat(join(bdir, owner)).catch(() => undefined))
          if (name.includes('.tmp-') || orphanLayout) await rm(join(bdir, name), { force: true })
          continue
        }
        const entry = await loadComplete(digest, blobPaths(root, digest))
        if (entry) {
          entries.set(digest, entry)
          usedBytes += entry.size
        }
      }
      const partialNames = new Set<string>()
      for (const name of await readdir(pdir)) {
        const hex = name.split('.')[0] ?? ''
        partialNames.add(hex)
      }
      for (const hex of partialNames) {
        const digest = `${algorithm}:${hex}`
        if (!isDigest(digest)) {
          continue
        }
        const paths = blobPaths(root, digest)
        if (entries.has(digest)) {
          // Completed while the leftovers were being removed: the blob wins.
          await Promise.all(
            [paths.partialData, paths.partialLayout, paths.partialBits].map((f) => rm(f, { force: true })),
          )
          continue
        }
        const entry = await loadPartial(digest, paths)
        if (entry) {
          entries.set(digest, entry)
          usedBytes += entry.size
        } else {
          await Promise.all(
            [paths.partialData, paths.partialLayout, paths.partialBits].map((f) => rm(f, { force: true })),
          )
        }
      }
      for (const name of await readdir(pdir)) {
        if (name.includes('.tmp-')) await rm(join(pdir, name), { force: true })
      }
    }
  }

  function requireStarted(): void {
    if (!started) throw new Error('blob cache is not started')
  }

  function requireEntry(digest: Digest): Entry {
    const entry = entries.get(digest)
    if (!entry) throw new BlobUnknownError(`blob not in cache: ${digest}`, { digest })
    return entry
  }

  /** The partial data file of `entry`, opened once for all its piece writes. */
  function writerOf(entry: Entry): Promise<FileHandle> {
    if (entry.writer === undefined) {
      const opening = open(entry.paths.partialData, 'r+')
      entry.writer = opening
      opening.catch(() => {
        if (entry.writer === opening) entry.writer = undefined
      })
    }
    return entry.writer
  }

  /**
   * Opens `entry`'s data file for reading. The partial file is renamed into place on
   * completion, and an open handle keeps reading the same bytes either way; the entry is
   * marked complete only after the rename and the clean-up that follows it, so a partial
   * file that has gone means the blob file holds the bytes now.
   */
  async function openForReading(entry: Entry): Promise<FileHandle> {
    if (entry.complete) return open(entry.paths.blob, 'r')
    try {
      return await open(entry.paths.partialData, 'r')
    } catch (err) {
      if (!isNotFound(err)) throw err
      if (entry.removed)
        throw new BlobUnknownError(`blob ${entry.digest} was removed`, { digest: entry.digest })
      return open(entry.paths.blob, 'r')
    }
  }

  /**
   * The blob's read handle, opened by its first reader and shared with the readers that
   * come while it is open (positional reads do not disturb each other). Each call is
   * matched by one releaseReader.
   */
  function acquireReader(entry: Entry): SharedReadHandle {
    let shared = entry.reader
    if (shared === undefined) {
      const handle = openForReading(entry)
      const created: SharedReadHandle = { handle, users: 0, idleTimer: undefined }
      shared = created
      entry.reader = created
      handle.catch(() => {
        if (entry.reader === created) entry.reader = undefined
      })
    }
    shared.users++
    clearTimeout(shared.idleTimer)
    shared.idleTimer = undefined
    return shared
  }

  /** One reader is done with the handle: it closes after readHandleIdleMs unused, at once for a removed blob. */
  function releaseReader(entry: Entry, shared: SharedReadHandle): void {
    shared.users--
    if (shared.users > 0 || entry.reader !== shared) return
    if (entry.removed) {
      closeReader(entry)
      return
    }
    shared.idleTimer = setTimeout(() => closeReader(entry), readHandleIdleMs)
    shared.idleTimer.unref?.()
  }

  /** Closes `entry`'s read handle (no reader uses it); errors are of no interest. */
  function closeReader(entry: Entry): void {
    const shared = entry.reader
    if (shared === undefined || shared.users > 0) return
    entry.reader = undefined
    clearTimeout(shared.idleTimer)
    shared.handle.then(
      (fh) => fh.close().catch(() => {}),
      () => {},
    )
  }

  /** Closes the partial's writer after its pending writes; errors are of no interest. */
  async function closeWriter(entry: Entry): Promise<void> {
    const writer = entry.writer
    entry.writer = undefined
    if (writer === undefined) return
    try {
      await (await writer).close()
    } catch {
      // Never opened, or already closed.
    }
  }

  /**
   * Makes the pieces stored so far durable: syncs the partial file, then writes the
   * bitfield as it was before the sync (pieces stored during the sync wait for the next
   * flush). No sync for the bitfield itself: a bit that is lost costs a piece fetched
   * again, and a bit that lands always has its bytes on disk already.
   */
  function flushBits(entry: Entry): Promise<void> {
    clearTimeout(entry.flushTimer)
    entry.flushTimer = undefined
    const run = entry.bitsChain.then(async () => {
      if (entry.removed || entry.complete || !entry.dirty) return
      entry.dirty = false
      const snapshot = entry.bits.slice()
      try {
        if (durable) await (await writerOf(entry)).datasync()
        const fh = await open(entry.paths.partialBits, 'r+')
        try {
          await writeAll(fh, snapshot, 0)
        } finally {
          await fh.close()
        }
      } catch (err) {
        entry.dirty = true
        if (isNoSpace(err)) {
          throw new InsufficientStorageError(`disk full writing bitfield of ${entry.digest}`, undefined, {
            cause: err,
          })
        }
        throw err
      }
    })
    entry.bitsChain = run.catch(() => {})
    return run
  }

  function scheduleFlush(entry: Entry): void {
    entry.dirty = true
    if (entry.flushTimer !== undefined) return
    entry.flushTimer = setTimeout(() => {
      entry.flushTimer = undefined
      flushBits(entry).catch((err: unknown) => {
        if (!entry.removed) log?.warn({ err, digest: entry.digest }, 'persisting pieces failed')
        // Try again later; the pieces stay served from memory meanwhile.
        if (!entry.removed && !entry.complete) scheduleFlush(entry)
      })
    }, flushIntervalMs)
    entry.flushTimer.unref?.()
  }

  async function doWritePiece(entry: Entry, index: number, bytes: Uint8Array): Promise<BlobStat> {
    const pieceSize = entry.pieceSize as number
    try {
      const fh = await writerOf(entry)
      await writeAll(fh, bytes, index * pieceSize)
    } catch (err) {
      if (entry.removed || isNotFound(err)) {
        throw new BlobUnknownError(`download of ${entry.digest} was removed`)
      }
      if (isNoSpace(err)) {
        throw new InsufficientStorageError(`disk full writing piece ${index} of ${entry.digest}`, undefined, {
          cause: err,
        })
      }
      throw err
    }
    if (entry.removed) throw new BlobUnknownError(`download of ${entry.digest} was removed`)
    if (!getBit(entry.bits, index)) {
      entry.bits[index >> 3] = withBit(entry.bits, index)
      entry.held++
    }
    scheduleFlush(entry)
    touch(entry)
    events.emit('piece', {
      digest: entry.digest,
      index,
      piecesHeld: entry.held,
      pieceCount: entry.pieceCount,
    })
    return statOf(entry)
  }

  async function doComplete(entry: Entry, signal?: AbortSignal): Promise<void> {
    if (entry.held < entry.pieceCount) {
      throw new BlobUploadInvalidError(`blob incomplete: ${entry.held} of ${entry.pieceCount} pieces held`, {
        digest: entry.digest,
      })
    }
    const actual = await hashFile(
      entry.paths.partialData,
      entry.digest.startsWith('sha512:') ? 'sha512' : 'sha256',
      signal,
    )
    if (actual !== entry.digest) {
      await exclusive(() => dropEntry(entry))
      events.emit('discarded', { digest: entry.digest, reason: 'digest mismatch' })
      throw new DigestMismatchError(undefined, { expected: entry.digest, actual })
    }
    await exclusive(async () => {
      if (entry.removed) throw new BlobUnknownError(`download of ${entry.digest} was removed`)
      const p = entry.paths
      // Every piece is held, so no flush is scheduled again; let a running one end.
      clearTimeout(entry.flushTimer)
      entry.flushTimer = undefined
      await entry.bitsChain
      if (durable && entry.writer !== undefined) await (await entry.writer).datasync()
      await closeWriter(entry)
      await writeFileDurably(
        p.blobLayout,
        JSON.stringify({ size: entry.size, pieceSize: entry.pieceSize }),
        durable,
      )
      await rename(p.partialData, p.blob)
      if (durable) await syncDir(blobsDir(root, entry.digest.split(':')[0] as string))
      await Promise.all([rm(p.partialLayout, { force: true }), rm(p.partialBits, { force: true })])
      entry.complete = true
      entry.bits = new Uint8Array(0)
      touch(entry)
    })
    log?.debug({ digest: entry.digest, size: entry.size }, 'blob complete')
    events.emit('complete', { digest: entry.digest, size: entry.size })
  }

  const cache: BlobCache = {
    events,

    async start() {
      if (started) return
      await mkdir(tmpDir(root), { recursive: true })
      await rm(tmpDir(root), { recursive: true, force: true })
      await mkdir(tmpDir(root), { recursive: true })
      await scan()
      started = true
    },

    async stop() {
      started = false
      await exclusive(async () => {
        await Promise.all(
          [...entries.values()].map(async (e) => {
            try {
              await flushBits(e)
            } catch (err) {
              log?.warn({ err, digest: e.digest }, 'persisting pieces at stop failed')
            }
            await closeWriter(e)
            // A reader still running closes it when it finishes.
            closeReader(e)
          }),
        )
      })
    },

    stat(digest) {
      const entry = entries.get(digest)
      return entry ? statOf(entry) : undefined
    },

    has(digest) {
      return entries.get(digest)?.complete === true
    },

    hasPiece(digest, index) {
      const entry = entries.get(digest)
      return entry !== undefined && entryHasPiece(entry, index)
    },

    bitfield(digest) {
      const entry = entries.get(digest)
      if (!entry) return undefined
      if (!entry.complete) return entry.bits.slice()
      const bits = new Uint8Array(bitBytes(entry.pieceCount))
      for (let i = 0; i < entry.pieceCount; i++) bits[i >> 3] = withBit(bits, i)
      return bits
    },

    async open(digest, layout) {
      requireStarted()
      if (!validLayout(layout)) throw new RangeInvalidError('invalid piece layout', layout)
      return exclusive(async () => {
        let entry = entries.get(digest)
        if (entry?.complete) {
          if (entry.pieceSize === undefined && entry.size === layout.size) {
            entry.pieceSize = layout.pieceSize
            entry.pieceCount = pieceCountOf(entry.size, entry.pieceSize)
            await writeFileDurably(entry.paths.blobLayout, JSON.stringify(layout), durable)
          }
          touch(entry)
          return statOf(entry)
        }
        if (entry && (entry.size !== layout.size || entry.pieceSize !== layout.pieceSize)) {
          await dropEntry(entry)
          events.emit('discarded', { digest, reason: 'layout changed' })
          entry = undefined
        }
        if (entry) {
          touch(entry)
          return statOf(entry)
        }
        entry = newEntry(digest, false, layout)
        await reserve(layout.size, digest)
        try {
          const p = entry.paths
          const fh = await open(p.partialData, 'w')
          try {
            await fh.truncate(layout.size)
          } finally {
            await fh.close()
          }
          await writeFileDurably(p.partialBits, entry.bits, durable)
          // The layout file is written last: a partial without it is cleaned up at start.
          await writeFileDurably(
            p.partialLayout,
            JSON.stringify({ digest, size: layout.size, pieceSize: layout.pieceSize }),
            durable,
          )
        } catch (err) {
          usedBytes -= layout.size
          await removeFiles(entry)
          if (isNoSpace(err))
            throw new InsufficientStorageError(`disk full creating ${digest}`, undefined, { cause: err })
          throw err
        }
        entries.set(digest, entry)
        return statOf(entry)
      })
    },

    async writePiece(digest, index, bytes) {
      requireStarted()
      const entry = requireEntry(digest)
      if (!Number.isInteger(index) || index < 0 || index >= entry.pieceCount) {
        throw new RangeInvalidError(`piece index ${index} out of range`, { digest, index })
      }
      if (entry.complete) return statOf(entry)
      const pieceSize = entry.pieceSize as number
      const expected = Math.min(pieceSize, entry.size - index * pieceSize)
      if (bytes.byteLength !== expected) {
        throw new SizeInvalidError(`piece ${index} has ${bytes.byteLength} bytes, expected ${expected}`, {
          digest,
          index,
        })
      }
      if (getBit(entry.bits, index)) return statOf(entry)
      const inFlight = entry.writing.get(index)
      if (inFlight) return inFlight
      const run = doWritePiece(entry, index, bytes).finally(() => entry.writing.delete(index))
      entry.writing.set(index, run)
      return run
    },

    async complete(digest, options = {}) {
      requireStarted()
      const entry = requireEntry(digest)
      if (entry.complete) return
      if (!entry.completing) {
        entry.completing = doComplete(entry, options.signal).finally(() => {
          entry.completing = undefined
        })
      }
      await entry.completing
    },

    async putBlob(digest, size, source, options = {}) {
      requireStarted()
      if (!Number.isSafeInteger(size) || size < 0) throw new SizeInvalidError(`invalid size ${size}`)
      if (entries.get(digest)?.complete) {
        // Drain nothing: the caller still owns the source and may cancel it.
        return
      }
      const tmp = join(tmpDir(root), `${digest.replace(':', '-')}-${Math.random().toString(36).slice(2)}`)
      const reservedFor = `${digest}#put` as Digest
      await exclusive(() => reserve(size, reservedFor))
      let reserved = true
      try {
        const hash = createHash(digest.startsWith('sha512:') ? 'sha512' : 'sha256')
        const fh = await open(tmp, 'w')
        let written = 0
        try {
          for await (const chunk of source) {
            options.signal?.throwIfAborted()
            written += chunk.byteLength
            if (written > size) throw new SizeInvalidError(`blob larger than the declared ${size} bytes`)
            hash.update(chunk)
            await writeAll(fh, chunk, written - chunk.byteLength)
          }
          if (durable) await fh.sync()
        } finally {
          await fh.close()
        }
        if (written !== size) throw new SizeInvalidError(`blob has ${written} bytes, declared ${size}`)
        const actual = `${digest.split(':')[0]}:${hash.digest('hex')}` as Digest
        if (actual !== digest) throw new DigestMismatchError(undefined, { expected: digest, actual })
        await exclusive(async () => {
          const existing = entries.get(digest)
          if (existing?.complete) return
          if (existing) await dropEntry(existing)
          const layoutPieceSize = options.layout?.pieceSize ?? pieceSizeFor(size)
          const entry = newEntry(digest, true, { size, pieceSize: layoutPieceSize })
          if (layoutPieceSize !== undefined) {
            await writeFileDurably(
              entry.paths.blobLayout,
              JSON.stringify({ size, pieceSize: layoutPieceSize }),
              durable,
            )
          }
          await rename(tmp, entry.paths.blob)
          if (durable) await syncDir(blobsDir(root, digest.split(':')[0] as string))
          // The reservation moves to the new entry.
          reserved = false
          entries.set(digest, entry)
          touch(entry)
        })
        events.emit('complete', { digest, size })
      } catch (err) {
        if (isNoSpace(err))
          throw new InsufficientStorageError(`disk full storing ${digest}`, undefined, { cause: err })
        throw err
      } finally {
        if (reserved) usedBytes -= size
        await rm(tmp, { force: true })
      }
    },

    readRange(digest, start, end, options = {}) {
      requireStarted()
      const entry = requireEntry(digest)
      if (
        !Number.isSafeInteger(start) ||
        !Number.isSafeInteger(end) ||
        start < 0 ||
        end < start ||
        end > entry.size
      ) {
        throw new RangeInvalidError(`range ${start}-${end} outside blob of ${entry.size} bytes`, { digest })
      }
      const { wait = false } = options
      // Destroying the stream aborts a wait for a missing piece, so an abandoned reader
      // never keeps its pin.
      // The caller's signal is followed rather than combined through AbortSignal.any: the
      // piece server opens a reader per piece it sends.
      const closed = new AbortController()
      const unfollow = followSignal(closed, options.signal)
      const signal = closed.signal
      touch(entry)
      cache.pin(digest)
      let holdsPin = true
      const release = (): void => {
        unfollow()
        if (holdsPin) cache.unpin(digest)
        holdsPin = false
      }
      async function* generate(): AsyncGenerator<Uint8Array> {
        let fh: FileHandle | undefined
        let shared: SharedReadHandle | undefined
        try {
          let position = start
          while (position < end) {
            signal?.throwIfAborted()
            options.onPosition?.(position)
            let until = end
            if (!entry.complete) {
              const pieceSize = entry.pieceSize as number
              const index = Math.floor(position / pieceSize)
              if (!entryHasPiece(entry, index)) {
                if (!wait)
                  throw new BlobUnknownError(`piece ${index} of ${digest} is not held`, { digest, index })
                await cache.waitForPiece(digest, index, { signal })
              }
              if (!entry.complete) until = Math.min(end, (index + 1) * pieceSize)
            }
            if (entry.removed) throw new BlobUnknownError(`blob ${digest} was removed`, { digest })
            if (!fh) {
              shared = acquireReader(entry)
              fh = await shared.handle
            }
            while (position < until) {
              const len = Math.min(chunkBytes, until - position)
              const buf = suppliedOrNew(options.allocate, len)
              let filled = 0
              while (filled < len) {
                const { bytesRead } = await fh.read(buf, filled, len - filled, position + filled)
                if (bytesRead === 0) throw new BlobUnknownError(`blob ${digest} is shorter than expected`)
                filled += bytesRead
              }
              position += len
              yield buf
            }
          }
        } finally {
          if (shared !== undefined) releaseReader(entry, shared)
          release()
        }
      }
      const chunks = generate()
      return new Readable({
        highWaterMark: chunkBytes,
        read() {
          chunks.next().then(
            (r) => this.push(r.done ? null : r.value),
            (err: unknown) => this.destroy(err instanceof Error ? err : new Error(String(err))),
          )
        },
        destroy(err, callback) {
          // Abort first: a generator waiting for a piece only returns once the wait ends.
          closed.abort(err ?? new Error('reader closed'))
          // A generator that never started skips its finally block: release here too.
          chunks.return(undefined).then(
            () => {
              release()
              callback(err)
            },
            (returnErr: unknown) => {
              release()
              callback(err ?? (returnErr as Error))
            },
          )
        },
      })
    },

    waitForPiece(digest, index, options = {}) {
      const { signal } = options
      return new Promise<void>((resolve, reject) => {
        const check = (): boolean => {
          const entry = entries.get(digest)
          if (!entry) {
            cleanup()
            reject(new BlobUnknownError(`blob ${digest} is no longer in the cache`, { digest }))
            return true
          }
          if (entryHasPiece(entry, index) || entry.complete) {
            cleanup()
            resolve()
            return true
          }
          return false
        }
        const onPiece = (e: { digest: Digest }): void => {
          if (e.digest === digest) check()
        }
        const onGone = (e: { digest: Digest }): void => {
          if (e.digest !== digest) return
          cleanup()
          reject(new BlobUnknownError(`download of ${digest} was discarded`, { digest }))
        }
        const onAbort = (): void => {
          cleanup()
          reject(signal?.reason)
        }
        const cleanup = (): void => {
          events.off('piece', onPiece)
          events.off('complete', onPiece)
          events.off('discarded', onGone)
          events.off('evicted', onGone)
          signal?.removeEventListener('abort', onAbort)
        }
        if (signal?.aborted) {
          reject(signal.reason)
          return
        }
        events.on('piece', onPiece)
        events.on('complete', onPiece)
        events.on('discarded', onGone)
        events.on('evicted', onGone)
        signal?.addEventListener('abort', onAbort, { once: true })
        check()
      })
    },

    pin(digest) {
      pins.set(digest, (pins.get(digest) ?? 0) + 1)
    },

    unpin(digest) {
      const n = (pins.get(digest) ?? 0) - 1
      if (n > 0) pins.set(digest, n)
      else pins.delete(digest)
    },

    async delete(digest) {
      await exclusive(async () => {
        const entry = entries.get(digest)
        if (!entry) return
        const wasPartial = !entry.complete
        await dropEntry(entry)
        if (wasPartial) events.emit('discarded', { digest, reason: 'deleted' })
      })
    },

    list() {
      return [...entries.values()].map((entry) => ({
        ...statOf(entry),
        bitfield: cache.bitfield(entry.digest)!,
      }))
    },

    usage() {
      return { usedBytes, quotaBytes }
    },
  }
  return cache
}
