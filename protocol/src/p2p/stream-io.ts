/**
 * Writing to libp2p 3 streams with real back-pressure: `send()` returning false means
 * the muxer's buffer is full, and the writer must wait for the `drain` event (not
 * `onDrain()`, which stops applying back-pressure after the first drain; LIBP2P.md
 * pitfall 3), giving up when the stream closes.
 */
import type { Uint8ArrayList } from 'uint8arraylist'

/**
 * What the piece client and server use of a stream: a libp2p stream, or a lane stream
 * (lane.ts) with the same behaviour.
 */
export interface PieceStream extends AsyncIterable<Uint8Array | Uint8ArrayList> {
  readonly status: string
  readonly writeStatus: string
  readonly readStatus: string
  readonly remoteWriteStatus: string
  readonly remoteReadStatus: string
  send(data: Uint8Array): boolean
  close(options?: { signal?: AbortSignal }): Promise<void>
  abort(err: Error): void
  addEventListener(type: 'drain' | 'close', listener: () => void, options?: { once?: boolean }): void
  removeEventListener(type: 'drain' | 'close', listener: () => void): void
}

/** Resolves on the stream's next `drain`; rejects when it closes or `signal` aborts. */
export function waitDrain(stream: PieceStream, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('close', onClose)
      signal?.removeEventListener('abort', onAbort)
    }
    const onDrain = (): void => {
      cleanup()
      resolve()
    }
    const onClose = (): void => {
      cleanup()
      reject(new Error('stream closed while waiting to send'))
    }
    const onAbort = (): void => {
      cleanup()
      reject(signal?.reason)
    }
    if (signal?.aborted) {
      reject(signal.reason)
      return
    }
    if (stream.status !== 'open') {
      reject(new Error('stream closed while waiting to send'))
      return
    }
    stream.addEventListener('drain', onDrain, { once: true })
    stream.addEventListener('close', onClose, { once: true })
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Sends `data`, then waits for `drain` if the stream's buffer is full. `signal` may be a
 * function, called only when the send must wait: most sends do not, and building a
 * deadline signal for every chunk is a measurable cost on a hot path.
 */
export async function sendWithBackpressure(
  stream: PieceStream,
  data: Uint8Array,
  signal?: AbortSignal | (() => AbortSignal),
): Promise<void> {
  if (stream.send(data)) return
  await waitDrain(stream, typeof signal === 'function' ? signal() : signal)
}
