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
 *
 * With `shared`, new buffers lie in SharedArrayBuffers, so a worker thread can read them
 * (piece-hasher.ts). V8 does not count that memory towards its next collection, so a
 * shared buffer nobody gives back is freed only when something else makes V8 collect;
 * the pool therefore bounds the shared memory it has created and that is not yet
 * collected (`maxSharedBytes`), and beyond it hands out ordinary buffers, which V8 counts.
 */

/** Options for createPieceBufferPool. */
export interface PieceBufferPoolInit {
  /** Idle buffers kept at most; the oldest is dropped for a newer one. */
  maxBuffers: number
  /** Bytes of idle buffers kept at most. @default unbounded (maxBuffers bounds it) */
  maxBytes?: number
  /** New buffers in shared memory (SharedArrayBuffer), for a hashing worker. @default false */
  shared?: boolean
  /**
   * With `shared`: shared bytes the pool keeps alive at most, handed out, idle, or
   * dropped and not yet collected; take() beyond it returns an ordinary buffer.
   * @default 64 MiB
   */
  maxSharedBytes?: number
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
  stats(): {
    idle: number
    idleBytes: number
    reused: number
    allocated: number
    /** Shared bytes created and not yet collected (0 without `shared`). */
    sharedBytes: number
  }
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
  const shared = init.shared === true && typeof SharedArrayBuffer !== 'undefined'
  const maxSharedBytes = init.maxSharedBytes ?? 64 * 1024 * 1024
  if (!(maxSharedBytes >= 0)) throw new RangeError(`invalid maxSharedBytes ${maxSharedBytes}`)
  /** Shared bytes created whose buffers V8 has not collected yet. */
  let sharedBytes = 0
  const collected = shared
    ? new FinalizationRegistry<number>((length) => {
        sharedBytes -= length
      })
    : undefined
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
      let buffer: Uint8Array
      if (collected !== undefined && length > 0 && sharedBytes + length <= maxSharedBytes) {
        buffer = Buffer.from(new SharedArrayBuffer(length))
        sharedBytes += length
        collected.register(buffer, length)
      } else {
        // Not from Node's shared slab: a pooled buffer owns all of its memory.
        buffer = Buffer.allocUnsafeSlow(length)
      }
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
      return { idle: idle.length, idleBytes, reused, allocated, sharedBytes }
    },
  }
}
