/**
 * Write-behind for streamed uploads. Chunks handed to `write` are copied into a few
 * large buffers of the queue's own (1 MiB each by default); a full buffer goes to the
 * file while the next one fills. Receiving and hashing the next chunks thus overlaps the
 * disk write before, instead of waiting for a round trip to the thread pool after every
 * 64 KiB socket read, and a 512 MiB upload costs 512 write calls instead of 8 192.
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
import type { FileWriter } from './driver/index.js'

/** Options of a write-behind queue. */
export interface WriteBehindInit {
  /** Size of each buffer, and so of each write to the file. @default 1 MiB */
  bufferBytes?: number
  /** Buffers (one filling, the rest full or being written). @default 4 */
  buffers?: number
}

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

const DEFAULT_BUFFER_BYTES = 1024 * 1024
const DEFAULT_BUFFERS = 4

/** Creates a write-behind queue over `writer`; `options.signal` is passed to every write. */
export function createWriteBehind(
  writer: FileWriter,
  init: WriteBehindInit = {},
  options: { signal?: AbortSignal } = {},
): WriteBehind {
  const bufferBytes = init.bufferBytes ?? DEFAULT_BUFFER_BYTES
  const maxBuffers = Math.max(2, init.buffers ?? DEFAULT_BUFFERS)
  if (!Number.isSafeInteger(bufferBytes) || bufferBytes <= 0) {
    throw new RangeError(`invalid buffer size ${bufferBytes}`)
  }
  const free: Uint8Array[] = []
  let allocated = 0
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
    if (allocated >= maxBuffers) return undefined
    allocated++
    // Outside Node's small-buffer pool: each buffer is long-lived and reused.
    return Buffer.allocUnsafeSlow(bufferBytes)
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
      check()
      if (current !== undefined && filled > 0) {
        full.push(current.subarray(0, filled))
        current = undefined
      }
      pump()
      while (running !== undefined) {
        await running
        pump()
      }
      check()
    },

    async settle() {
      full.length = 0
      current = undefined
      while (running !== undefined) await running
    },
  }
}
