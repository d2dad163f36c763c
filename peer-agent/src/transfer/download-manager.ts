/**
 * One download per blob, however many clients want it: the first caller starts it, the
 * others join. Readers stream the blob from the cache as verified pieces land, and the
 * download's streaming window follows the reader furthest behind. When a download
 * fails, every reader waiting on it fails with the same error (so the mirror can fall
 * back to the seed or upstream from the byte it reached).
 */
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { Digest } from '../../../protocol/src/index.js'
import { createPieceBufferPool } from '../../../protocol/src/p2p/piece-buffers.js'
import type { PieceMap } from '../../../protocol/src/piece-map.js'
import type { BlobCache } from '../cache/index.js'
import { type DownloadComponents, type DownloadInit, type DownloadResult, downloadBlob } from './scheduler.js'

/**
 * Idle piece buffers the manager keeps for its downloads by default (shared by all of
 * them, dropped when none runs): a few requests' worth at the usual 4 MiB pieces. They
 * lie in shared memory, so a piece client with a hasher (piece-hasher.ts) hashes them on
 * its worker thread; at most 64 MiB of it (every request in flight at 4 MiB pieces, and
 * the idle ones), ordinary buffers beyond that.
 */
export const PIECE_BUFFERS = {
  maxBuffers: 8,
  maxBytes: 32 * 1024 * 1024,
  shared: true,
  maxSharedBytes: 64 * 1024 * 1024,
}

/** Per-download options the manager passes through to downloadBlob. */
export type DownloadOptions = Omit<DownloadInit, 'map' | 'readPosition'>

/** The collaborators of the manager. */
export interface DownloadManagerComponents extends DownloadComponents {
  cache: DownloadComponents['cache'] & Pick<BlobCache, 'stat' | 'readRange' | 'open'>
  logger?: Logger
}

/** Starts, joins and streams blob downloads. */
export interface DownloadManager {
  /**
   * Starts the download of `map`'s blob, or joins the one running, and resolves when it
   * is complete in the cache. Throws what downloadBlob throws.
   */
  fetch(map: PieceMap, options: DownloadOptions): Promise<DownloadResult | undefined>
  /**
   * Streams bytes [start, end) of the blob, starting or joining its download unless the
   * cache holds it complete. The stream fails when the download fails. Throws
   * InsufficientStorageError when the cache cannot make room for the blob.
   */
  read(
    map: PieceMap,
    start: number,
    end: number,
    options: DownloadOptions & { signal?: AbortSignal },
  ): Promise<Readable>
  /** Digests being downloaded now. */
  active(): Digest[]
  /** Aborts every download; safe to call twice. */
  stop(): Promise<void>
}

interface Running {
  done: Promise<DownloadResult | undefined>
  readers: Set<{ position: number; stream?: Readable }>
}

/** Creates a download manager over the cache and a piece client. */
export function createDownloadManager(components: DownloadManagerComponents): DownloadManager {
  const { cache } = components
  const ownBuffers = components.pieceBuffers === undefined ? createPieceBufferPool(PIECE_BUFFERS) : undefined
  const downloadComponents: DownloadComponents =
    ownBuffers === undefined ? components : { ...components, pieceBuffers: ownBuffers }
  const running = new Map<Digest, Running>()
  let lifetime = new AbortController()

  function ensure(map: PieceMap, options: DownloadOptions): Running {
    const existing = running.get(map.digest)
    if (existing) return existing
    const run: Running = { done: Promise.resolve(undefined), readers: new Set() }
    const readPosition = (): number | undefined => {
      let min: number | undefined
      for (const r of run.readers) min = min === undefined ? r.position : Math.min(min, r.position)
      return min === undefined ? undefined : Math.floor(min / map.pieceSize)
    }
    run.done = (async () => {
      try {
        if (cache.stat(map.digest)?.complete) return undefined
        return await downloadBlob(
          downloadComponents,
          { ...options, map, readPosition },
          { signal: lifetime.signal },
        )
      } catch (err) {
        for (const r of run.readers) r.stream?.destroy(err as Error)
        throw err
      } finally {
        running.delete(map.digest)
        // No download left to reuse them: the idle buffers go back to the heap.
        if (running.size === 0) ownBuffers?.clear()
      }
    })()
    // Readers and fetch callers observe the outcome; nobody may be listening yet.
    run.done.catch(() => {})
    running.set(map.digest, run)
    return run
  }

  return {
    fetch(map, options) {
      return ensure(map, options).done
    },

    async read(map, start, end, options) {
      const { signal, ...download } = options
      if (cache.stat(map.digest)?.complete)
        return cache.readRange(map.digest, start, end, signal ? { signal } : {})
      // Opening is idempotent: the download opens the same partial blob.
      await cache.open(map.digest, { size: map.size, pieceSize: map.pieceSize }, signal ? { signal } : {})
      const run = ensure(map, download)
      const reader: { position: number; stream?: Readable } = { position: start }
      run.readers.add(reader)
      const stream = cache.readRange(map.digest, start, end, {
        wait: true,
        onPosition: (p) => {
          reader.position = p
        },
        ...(signal ? { signal } : {}),
      })
      reader.stream = stream
      stream.once('close', () => run.readers.delete(reader))
      return stream
    },

    active() {
      return [...running.keys()]
    },

    async stop() {
      lifetime.abort(new Error('download manager stopped'))
      await Promise.allSettled([...running.values()].map((r) => r.done))
      lifetime = new AbortController()
    },
  }
}
