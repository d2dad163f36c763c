/**
 * Write-behind for streamed uploads. Chunks handed to `write` are copied into a few
 * buffers (256 KiB each by default); a full buffer goes to the file while the next one
 * fills. Receiving and hashing the next chunks thus overlaps the disk write before,
 * instead of waiting for a round trip to the thread pool after every 64 KiB socket read,
 * and a 512 MiB upload costs 2 048 write calls instead of 8 192.
 *
 * Why not larger writes: with 1 MiB writes, the kernel's copy into the page cache
 * (ext4, Linux 6.18, this project's 2-core VM) took 1.5–1.9 s of system CPU per
 * 512 MiB pushed in 16 MiB chunks, against 0.3–0.6 s with 256 KiB writes, and the
 * chunked push ran at 157 MB/s against 191–209 MB/s (docs/BENCHMARKS.md, registry,
 * session 17). The kernel sizes page-cache folios by the write, and the likely cause is
 * that large folios come from free memory the hypervisor has to fault back in.
 *
 * Buffers come from a pool that outlives the queue (protocol/src/p2p/piece-buffers.ts,
 * one per upload store), so a chunked upload's PATCHes reuse the same memory instead of
 * each mapping fresh pages (4 MiB and about a thousand page faults per PATCH before).
 *
 * The copy is what makes this safe for any body: a caller may reuse its chunk's memory
 * as soon as `write` resolves (as generators that fill one buffer do), and the socket's
 * buffers are free for the garbage collector at once instead of waiting in a queue.
 *
 * Order is kept (one write to the file at a time, buffers in the order filled). Memory
 * is bounded by `buffers` × `bufferBytes`: when every buffer is full or on its way,
 * `write` resolves only after the running write has finished and handed its buffer
 * back. The first failed write fails every later `write` and `flush`; nothing is
 * written after it.
 */
import { createPieceBufferPool, type PieceBufferPool } from '../../../protocol/src/p2p/piece-buffers.js'
import type { FileWriter } from './driver/index.js'

/** Options of a write-behind queue. */
export interface WriteBehindInit {
  /** Size of each buffer, and so of each write to the file. @default WRITE_BEHIND_BUFFER_BYTES */
  bufferBytes?: number
  /** Buffers (one filling, the rest full or being written). @default 4 */
  buffers?: number
  /**
   * Where the queue takes its buffers from and gives them back to once it is done.
   * @default a pool of the queue's own
   */
  pool?: PieceBufferPool
}

/** Size of each write-behind buffer, and so of each write to the file, by default. */
export const WRITE_BEHIND_BUFFER_BYTES = 256 * 1024

/** A queue of bytes on their way into one FileWriter. */
export interface WriteBehind {
  /**
   * Copies `chunk` into the queue, starting a write whenever a buffer is full and no
   * write is running. Resolves once the chunk is copied (the caller may then reuse its
   * memory); waits for the running write when no buffer is free. Rejects with the error
   * of an earlier write.
   */
  write(chunk: Uint8Array): Promise<void>
  /** Writes what is queued and resolves once all of it is written; rejects with the first write error. */
  flush(): Promise<void>
  /**
   * Drops what still waits and resolves once no write is running, whatever its outcome
   * (for error paths that cut the file back afterwards).
   */
  settle(): Promise<void>
}

const DEFAULT_BUFFERS = 4

/**
 * Creates a write-behind queue over `writer`; `options.signal` is passed to every write.
 * Its buffers go back to the pool once `flush` or `settle` has finished with them.
 */
export function createWriteBehind(
  writer: FileWriter,
  init: WriteBehindInit = {},
  options: { signal?: AbortSignal } = {},
): WriteBehind {
  const bufferBytes = init.bufferBytes ?? WRITE_BEHIND_BUFFER_BYTES
  const maxBuffers = Math.max(2, init.buffers ?? DEFAULT_BUFFERS)
  if (!Number.isSafeInteger(bufferBytes) || bufferBytes <= 0) {
    throw new RangeError(`invalid buffer size ${bufferBytes}`)
  }
  const pool = init.pool ?? createPieceBufferPool({ maxBuffers })
  const free: Uint8Array[] = []
  /** Every buffer taken from the pool, to give back when done. */
  const taken: Uint8Array[] = []
  /** Full buffers (or the last, partial one at flush) waiting for their write, in order. */
  const full: Uint8Array[] = []
  let current: Uint8Array | undefined
  let filled = 0
  /** The running write; it never rejects (its error goes to `failure`). */
  let running: Promise<void> | undefined
  let failed = false
  let failure: unknown

  function take(): Uint8Array | undefined {
    const reused = free.pop()
    if (reused !== undefined) return reused
    if (taken.length >= maxBuffers) return undefined
    const buf = pool.take(bufferBytes)
    taken.push(buf)
    return buf
  }

  /** Gives every buffer back to the pool; only when no write is running. */
  function giveBack(): void {
    for (const buf of taken) pool.give(buf)
    taken.length = 0
    free.length = 0
    full.length = 0
    current = undefined
  }

  function pump(): void {
    if (running !== undefined || failed) return
    const next = full.shift()
    if (next === undefined) return
    running = writer.write(next, options).then(
      () => {
        running = undefined
        // A partial last buffer is a view; only whole buffers go back for reuse.
        if (next.byteLength === bufferBytes) free.push(next)
        pump()
      },
      (err: unknown) => {
        running = undefined
        failed = true
        failure = err
        full.length = 0
      },
    )
  }

  function check(): void {
    if (failed) throw failure
  }

  return {
    async write(chunk) {
      check()
      let off = 0
      while (off < chunk.byteLength) {
        if (current === undefined) {
          current = take()
          while (current === undefined) {
            // Every buffer is full or being written: wait for the running write.
            pump()
            if (running === undefined) throw new Error('write-behind: no buffer and no write running')
            await running
            check()
            current = take()
          }
          filled = 0
        }
        const n = Math.min(bufferBytes - filled, chunk.byteLength - off)
        current.set(n === chunk.byteLength ? chunk : chunk.subarray(off, off + n), filled)
        filled += n
        off += n
        if (filled === bufferBytes) {
          full.push(current)
          current = undefined
          pump()
        }
      }
    },

    async flush() {
      if (!failed && current !== undefined && filled > 0) {
        full.push(current.subarray(0, filled))
        current = undefined
      }
      pump()
      while (running !== undefined) {
        await running
        pump()
      }
      // Nothing runs now (a failed queue starts no write): the buffers are free.
      giveBack()
      check()
    },

    async settle() {
      full.length = 0
      current = undefined
      while (running !== undefined) await running
      giveBack()
    },
  }
}
