/**
 * Reads frames and raw piece bytes from a byte stream (a libp2p 3 stream is an async
 * iterable of Uint8Array | Uint8ArrayList). Buffers at most one frame or one read.
 */
import { Uint8ArrayList } from 'uint8arraylist'
import { DecodeError } from '../errors.js'
import { MAX_PIECE_SIZE } from '../piece-map.js'
import { decodeMessage, FRAME_HEADER_BYTES, MAX_MESSAGE_BYTES, type Message } from './codec.js'

/** Pulls messages and raw bytes, in order, from one byte stream. */
export interface MessageReader {
  /**
   * The next message, or undefined when the stream ends cleanly between frames. Throws
   * DecodeError for an oversized, truncated or malformed frame.
   */
  read(options?: { signal?: AbortSignal }): Promise<Message | undefined>
  /** Exactly `n` raw bytes (at most MAX_PIECE_SIZE). Throws DecodeError when the stream ends first. */
  readBytes(n: number, options?: { signal?: AbortSignal }): Promise<Uint8ArrayList>
  /** Exactly `n` raw bytes as they arrive, chunk by chunk. Throws DecodeError when the stream ends first. */
  readChunks(n: number, options?: { signal?: AbortSignal }): AsyncGenerator<Uint8Array>
  /**
   * Exactly `target.byteLength` raw bytes (at most MAX_PIECE_SIZE), copied into `target`
   * as they arrive, so no chunk is held longer than it takes to copy it. Throws
   * DecodeError when the stream ends first. After each run of chunks copied, `onCopied`
   * is called with the part of `target` just filled (in order, together covering all of
   * it: e.g. to hash a piece while it arrives, on bytes still in the CPU's cache), then
   * `onProgress` with the number of bytes that run added.
   */
  readInto(
    target: Uint8Array,
    options?: {
      signal?: AbortSignal
      onProgress?: (bytes: number) => void
      onCopied?: (part: Uint8Array) => void
    },
  ): Promise<void>
  /** Bytes taken from the stream so far. */
  received(): number
}

/**
 * A byte stream that can put raw bytes straight into the reader's target as they arrive
 * (a lane stream, lane.ts, has its TLS socket decrypt them there): readInto then copies
 * nothing once what the reader already holds is out.
 */
export interface LandingSource {
  /**
   * Puts the stream's next `target.byteLength` bytes into `target`, in order, calling
   * `onLanded(end)` as they come (target[0, end) filled). Resolves with the bytes put
   * there: fewer than asked when the stream ended first. Rejects when the stream fails,
   * or with the signal's reason (the stream is then reset: bytes must not land in
   * memory its caller has taken back).
   */
  landInto(
    target: Uint8Array,
    options: { signal?: AbortSignal; onLanded: (end: number) => void },
  ): Promise<number>
}

function isLandingSource(source: unknown): source is LandingSource {
  return typeof (source as Partial<LandingSource>).landInto === 'function'
}

/** Creates a reader over `source`. */
export function createMessageReader(
  source: AsyncIterable<Uint8Array | Uint8ArrayList>,
  init: { maxMessageBytes?: number } = {},
): MessageReader {
  const maxMessageBytes = Math.min(init.maxMessageBytes ?? MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES)
  const iterator = source[Symbol.asyncIterator]()
  const landing = isLandingSource(source) ? source : undefined
  const buffer = new Uint8ArrayList()
  let ended = false
  let received = 0

  /** Pulls one more chunk into the buffer; false at end of stream. */
  async function pull(signal?: AbortSignal): Promise<boolean> {
    if (ended) return false
    signal?.throwIfAborted()
    let result: IteratorResult<Uint8Array | Uint8ArrayList>
    if (signal === undefined) {
      result = await iterator.next()
    } else {
      let onAbort: (() => void) | undefined
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(signal.reason)
        signal.addEventListener('abort', onAbort, { once: true })
      })
      try {
        result = await Promise.race([iterator.next(), aborted])
      } finally {
        if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
      }
    }
    if (result.done === true) {
      ended = true
      return false
    }
    received += result.value.byteLength
    // Empty chunks carry nothing and would stall the chunk-by-chunk reader.
    if (result.value.byteLength > 0) buffer.append(result.value)
    return true
  }

  async function fill(n: number, signal?: AbortSignal): Promise<void> {
    while (buffer.byteLength < n) {
      if (!(await pull(signal)))
        throw new DecodeError(`stream ended: wanted ${n} bytes, got ${buffer.byteLength}`)
    }
  }

  function checkRaw(n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > MAX_PIECE_SIZE)
      throw new RangeError(`invalid raw read length ${n}`)
  }

  return {
    received() {
      return received
    },
    async read(options = {}) {
      while (buffer.byteLength < FRAME_HEADER_BYTES) {
        if (!(await pull(options.signal))) {
          if (buffer.byteLength === 0) return undefined
          throw new DecodeError('stream ended inside a frame header')
        }
      }
      const length = buffer.getUint32(0)
      if (length > maxMessageBytes)
        throw new DecodeError(`frame of ${length} bytes exceeds ${maxMessageBytes}`)
      if (length === 0) throw new DecodeError('empty frame')
      await fill(FRAME_HEADER_BYTES + length, options.signal)
      const body = buffer.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length)
      buffer.consume(FRAME_HEADER_BYTES + length)
      return decodeMessage(body)
    },
    async readBytes(n, options = {}) {
      checkRaw(n)
      await fill(n, options.signal)
      const out = buffer.sublist(0, n)
      buffer.consume(n)
      return out
    },
    async readInto(target, options = {}) {
      const n = target.byteLength
      checkRaw(n)
      let at = 0
      for (;;) {
        // Copy out whole buffered chunks, then drop them, before waiting for more.
        const take = Math.min(n - at, buffer.byteLength)
        if (take > 0) {
          const from = at
          for (const chunk of buffer.sublist(0, take)) {
            target.set(chunk, at)
            at += chunk.byteLength
          }
          buffer.consume(take)
          options.onCopied?.(target.subarray(from, at))
          options.onProgress?.(at - from)
        }
        if (at === n) return
        if (landing !== undefined && !ended) {
          // The buffer is empty: the rest goes straight into place.
          const base = at
          const got = await landing.landInto(target.subarray(base), {
            signal: options.signal,
            onLanded: (end) => {
              const from = at
              at = base + end
              received += at - from
              options.onCopied?.(target.subarray(from, at))
              options.onProgress?.(at - from)
            },
          })
          if (base + got === n) return
          ended = true
          throw new DecodeError(`stream ended: ${n - base - got} of ${n} bytes missing`)
        }
        if (!(await pull(options.signal)))
          throw new DecodeError(`stream ended: ${n - at} of ${n} bytes missing`)
      }
    },
    async *readChunks(n, options = {}) {
      checkRaw(n)
      let left = n
      while (left > 0) {
        while (buffer.byteLength === 0) {
          if (!(await pull(options.signal)))
            throw new DecodeError(`stream ended: ${left} of ${n} bytes missing`)
        }
        // Hand out the first buffered chunk as it is (no copy): pieces are large and hot.
        const first = buffer[Symbol.iterator]().next().value as Uint8Array
        const take = Math.min(left, first.byteLength)
        const chunk = first.subarray(0, take)
        buffer.consume(take)
        left -= take
        yield chunk
      }
    },
  }
}
