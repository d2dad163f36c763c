/**
 * A small pool of piece buffers, so a fetcher reads piece after piece into the same few
 * buffers instead of allocating a fresh one (of up to 16 MiB) per piece. Every fresh
 * buffer is external memory that V8 counts towards its next full collection; at
 * hundreds of pieces a second that is a collection every few dozen milliseconds.
 *
 * The pool trusts its caller on one point it cannot check: a buffer is given back only
 * when nothing reads or writes it any more. A buffer given back while still referenced
 * is handed to the next piece and overwritten, which corrupts whatever still holds it.
 * What it does check: it takes back only buffers it handed out, each once.
 */

/** Options for createPieceBufferPool. */
export interface PieceBufferPoolInit {
  /** Idle buffers kept at most; the oldest is dropped for a newer one. */
  maxBuffers: number
  /** Bytes of idle buffers kept at most. @default unbounded (maxBuffers bounds it) */
  maxBytes?: number
}

/** Buffers for piece bytes, reused by length. */
export interface PieceBufferPool {
  /**
   * A buffer of exactly `length` bytes (contents undefined): an idle one of that length,
   * or a new one. Fits PieceFetchOptions.allocate.
   */
  take(length: number): Uint8Array
  /**
   * Gives back a buffer from take() that nothing references any more. Buffers the pool
   * did not hand out, or already holds, are ignored.
   */
  give(buffer: Uint8Array): void
  /** Drops every idle buffer (handed-out ones can still be given back). */
  clear(): void
  /** Idle buffers and their bytes, and how many take() calls reused one. */
  stats(): { idle: number; idleBytes: number; reused: number; allocated: number }
}

/**
 * The memory for `length` bytes: what `allocate` (PieceFetchOptions.allocate, a
 * PieceSource's readRange option) supplies when it is a Uint8Array of exactly that
 * length, otherwise a new buffer.
 */
export function suppliedOrNew(
  allocate: ((length: number) => Uint8Array) | undefined,
  length: number,
): Uint8Array {
  if (allocate !== undefined) {
    const supplied = allocate(length)
    if (supplied instanceof Uint8Array && supplied.byteLength === length) return supplied
  }
  return Buffer.allocUnsafe(length)
}

/** Creates a bounded pool of piece buffers. */
export function createPieceBufferPool(init: PieceBufferPoolInit): PieceBufferPool {
  const maxBuffers = init.maxBuffers
  const maxBytes = init.maxBytes ?? Number.POSITIVE_INFINITY
  if (!Number.isInteger(maxBuffers) || maxBuffers < 0)
    throw new RangeError(`invalid maxBuffers ${maxBuffers}`)
  if (!(maxBytes >= 0)) throw new RangeError(`invalid maxBytes ${maxBytes}`)
  /** Idle buffers, oldest first. */
  const idle: Uint8Array[] = []
  let idleBytes = 0
  /** Buffers handed out and not yet given back. */
  const out = new WeakSet<Uint8Array>()
  let reused = 0
  let allocated = 0

  return {
    take(length) {
      if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`invalid length ${length}`)
      // Newest first: the buffer most likely still in the CPU's caches.
      for (let i = idle.length - 1; i >= 0; i--) {
        const buffer = idle[i] as Uint8Array
        if (buffer.byteLength !== length) continue
        idle.splice(i, 1)
        idleBytes -= length
        out.add(buffer)
        reused++
        return buffer
      }
      // Not from Node's shared slab: a pooled buffer owns all of its memory.
      const buffer = Buffer.allocUnsafeSlow(length)
      if (length > 0) out.add(buffer)
      allocated++
      return buffer
    },

    give(buffer) {
      if (!out.has(buffer)) return
      out.delete(buffer)
      const length = buffer.byteLength
      if (length > maxBytes || maxBuffers === 0) return
      idle.push(buffer)
      idleBytes += length
      while (idle.length > maxBuffers || idleBytes > maxBytes) {
        const dropped = idle.shift() as Uint8Array
        idleBytes -= dropped.byteLength
      }
    },

    clear() {
      idle.length = 0
      idleBytes = 0
    },

    stats() {
      return { idle: idle.length, idleBytes, reused, allocated }
    },
  }
}
