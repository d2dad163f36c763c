/**
 * Sends a range of an open blob file as a response body through a few buffers that are
 * reused, within the response and across responses, instead of a fresh buffer per chunk.
 *
 * A stream of the file allocates a new 1 MiB buffer for every read; at several hundred
 * MB/s that is hundreds of large allocations a second, each mapped and unmapped by the
 * allocator, and the registry benchmark saw the process fall into a state with about 5x
 * the minor page faults and 4x the CPU for the same bytes. Here one buffer is read from
 * the file while the socket writes the other, and a buffer is only read into again once
 * the socket has reported its write done (so at most DEPTH chunks are in flight per
 * response, which is also the backpressure).
 */
import type { ServerResponse } from 'node:http'
import type { BlobFile } from '../service.js'

/** Bytes per read and per socket write. */
export const SEND_CHUNK_BYTES = 512 * 1024
/** Buffers per response: one being read into while the other is written. */
const DEPTH = 2
/** Idle buffers kept for the next responses (4 concurrent downloads' worth). */
const MAX_POOLED = 8

const pool: Buffer[] = []

function takeBuffer(): Buffer {
  return pool.pop() ?? Buffer.allocUnsafeSlow(SEND_CHUNK_BYTES)
}

function giveBack(buffers: Buffer[]): void {
  for (const buffer of buffers) if (pool.length < MAX_POOLED) pool.push(buffer)
}

/** Buffers currently idle in the pool (for tests). */
export function pooledSendBuffers(): number {
  return pool.length
}

/** The response went away before the body was sent. */
class ResponseClosedError extends Error {
  constructor() {
    super('response closed before the body was sent')
    this.name = 'ResponseClosedError'
  }
}

/**
 * Writes bytes [range.start, range.end] (inclusive) of `file` to `res`, whose status and
 * headers (Content-Length among them) are already set, then ends it. `onSent` is called
 * with the size of each chunk as it is handed to the socket. Never throws: when reading
 * fails or the client goes away, the response is destroyed (the client sees the body cut
 * off). The file is closed in every case.
 */
export async function sendFile(
  res: ServerResponse,
  file: BlobFile,
  range: { start: number; end: number },
  onSent: (bytes: number) => void,
): Promise<void> {
  // Socket writes issued after the socket broke never call back, so every wait also
  // ends when the response closes early. Waits are sequential: one slot suffices.
  let closedEarly = false
  let abortWait: ((err: Error) => void) | undefined
  const onClose = () => {
    if (res.writableFinished) return
    closedEarly = true
    abortWait?.(new ResponseClosedError())
  }
  res.once('close', onClose)
  const whileOpen = <T>(promise: Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (closedEarly) return reject(new ResponseClosedError())
      abortWait = reject
      promise.then(resolve, reject)
    })

  const owned: Buffer[] = []
  /** Buffers whose socket write has not completed yet, oldest first. */
  const writing: { buffer: Buffer; done: Promise<void> }[] = []
  let clean = false
  try {
    if (res.destroyed) throw new ResponseClosedError()
    let position = range.start
    const stop = range.end + 1
    while (position < stop) {
      let buffer: Buffer
      if (owned.length < DEPTH) {
        buffer = takeBuffer()
        owned.push(buffer)
      } else {
        const oldest = writing.shift()!
        await whileOpen(oldest.done)
        buffer = oldest.buffer
      }
      const length = Math.min(buffer.byteLength, stop - position)
      const read = await whileOpen(file.read(buffer, length, position))
      if (read === 0) throw new Error(`blob file ended at ${position} bytes, before ${stop}`)
      position += read
      onSent(read)
      writing.push({ buffer, done: write(res, buffer.subarray(0, read)) })
    }
    for (const pending of writing.splice(0)) await whileOpen(pending.done)
    await whileOpen(new Promise<void>((resolve) => res.end(resolve)))
    clean = true
  } catch {
    res.destroy()
  } finally {
    res.off('close', onClose)
    // A buffer whose write did not complete may still be referenced by the socket.
    if (clean) giveBack(owned)
    await file.close().catch(() => {})
  }
}

function write(res: ServerResponse, chunk: Buffer): Promise<void> {
  const done = new Promise<void>((resolve, reject) => {
    res.write(chunk, (err) => (err ? reject(err) : resolve()))
  })
  done.catch(() => {})
  return done
}
