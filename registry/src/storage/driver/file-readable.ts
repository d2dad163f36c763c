/**
 * A Readable over a range of a ReadableFile, for consumers that want a stream of a file
 * opened with `StorageDriver.openFile` (the HTTP layer reads the file itself instead).
 */
import { addAbortSignal, Readable } from 'node:stream'
import type { ReadableFile } from './index.js'

/** Bytes per read: 1 MiB, as the filesystem driver's `reader` uses. */
const CHUNK_BYTES = 1024 * 1024

/**
 * Streams bytes [start, end) of `file` in fresh 1 MiB buffers and closes the file when
 * the stream ends or is destroyed. The stream fails when the file turns out shorter
 * than `end`. An aborted `signal` destroys it.
 */
export function readableFromFile(
  file: ReadableFile,
  start: number,
  end: number,
  options: { signal?: AbortSignal } = {},
): Readable {
  let position = start
  const stream = new Readable({
    // One chunk read ahead is enough: reads are large and the consumer paces them.
    highWaterMark: 1,
    read() {
      const length = Math.min(CHUNK_BYTES, end - position)
      if (length <= 0) {
        this.push(null)
        return
      }
      const buffer = Buffer.allocUnsafe(length)
      file.read(buffer, length, position).then(
        (read) => {
          if (read === 0) {
            this.destroy(new Error(`file ended at ${position} bytes, before ${end}`))
            return
          }
          position += read
          this.push(read === length ? buffer : buffer.subarray(0, read))
        },
        (err: unknown) => this.destroy(err as Error),
      )
    },
    destroy(err, callback) {
      file.close().then(
        () => callback(err),
        (closeErr: unknown) => callback(err ?? (closeErr as Error)),
      )
    },
  })
  if (options.signal) addAbortSignal(options.signal, stream)
  return stream
}

/**
 * Yields bytes [start, end) of `file` read into one buffer of `chunkBytes` (default
 * 1 MiB) that is reused for every chunk: each yielded chunk is a view of that buffer
 * and only valid until the consumer asks for the next one, so a consumer that keeps
 * chunks must copy them (a hash that takes each chunk synchronously need not). Fails
 * when the file turns out shorter than `end`; closes the file when the iteration ends,
 * fails or is stopped.
 */
export async function* reusedBufferChunks(
  file: ReadableFile,
  start: number,
  end: number,
  options: { chunkBytes?: number; signal?: AbortSignal } = {},
): AsyncGenerator<Uint8Array, void, undefined> {
  try {
    const buffer = Buffer.allocUnsafeSlow(
      Math.max(1, Math.min(options.chunkBytes ?? CHUNK_BYTES, end - start)),
    )
    let position = start
    while (position < end) {
      options.signal?.throwIfAborted()
      const length = Math.min(buffer.byteLength, end - position)
      const read = await file.read(buffer, length, position)
      if (read === 0) throw new Error(`file ended at ${position} bytes, before ${end}`)
      position += read
      yield buffer.subarray(0, read)
    }
  } finally {
    await file.close()
  }
}
