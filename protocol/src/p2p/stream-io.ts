/**
 * Writing to libp2p 3 streams with real back-pressure: `send()` returning false means
 * the muxer's buffer is full, and the writer must wait for the `drain` event (not
 * `onDrain()`, which stops applying back-pressure after the first drain; LIBP2P.md
 * pitfall 3), giving up when the stream closes.
 */
import type { Stream } from '@libp2p/interface'

/** Resolves on the stream's next `drain`; rejects when it closes or `signal` aborts. */
export function waitDrain(stream: Stream, signal?: AbortSignal): Promise<void> {
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
  stream: Stream,
  data: Uint8Array,
  signal?: AbortSignal | (() => AbortSignal),
): Promise<void> {
  if (stream.send(data)) return
  await waitDrain(stream, typeof signal === 'function' ? signal() : signal)
}
