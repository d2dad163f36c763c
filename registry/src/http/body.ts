/**
 * Request bodies as the routes hand them to the service: streamed chunk by chunk with
 * byte counting, or (manifests only) read whole under a size limit. Neither destroys the
 * request when the consumer stops early, so an error can still be answered on the same
 * connection.
 */
import type { IncomingMessage } from 'node:http'
import type { Counter } from 'prom-client'
import { type ShoalError, SizeInvalidError } from '../../../protocol/src/index.js'

/** The declared Content-Length, undefined when absent (chunked); SizeInvalidError when malformed. */
export function declaredLength(req: IncomingMessage): number | undefined {
  const header = req.headers['content-length']
  if (header === undefined) return undefined
  if (!/^\d{1,16}$/.test(header)) throw new SizeInvalidError(`invalid Content-Length: ${header.slice(0, 50)}`)
  return Number(header)
}

/** True when the request carries a body (a positive Content-Length, or chunked encoding). */
export function hasBody(req: IncomingMessage): boolean {
  const length = declaredLength(req)
  if (length !== undefined) return length > 0
  return req.headers['transfer-encoding'] !== undefined
}

/**
 * Streams the request body, counting each chunk into `received` as it arrives. When the
 * request breaks off (the client aborts, or closes before sending Content-Length bytes)
 * the iteration throws SizeInvalidError (detail `{ received, expected }`, the transport
 * error as cause), so the consumer can keep its state as it was before the request.
 */
export async function* streamBody(
  req: IncomingMessage,
  received?: Counter,
): AsyncGenerator<Uint8Array, void, undefined> {
  const expected = declaredLength(req)
  let count = 0
  // destroyOnReturn: false keeps the socket usable when the consumer stops early (a
  // service error), so that error can still be answered.
  const chunks = req.iterator({ destroyOnReturn: false })
  try {
    while (true) {
      let next: IteratorResult<Buffer>
      try {
        next = await chunks.next()
      } catch (err) {
        throw truncated(count, expected, err)
      }
      if (next.done === true) break
      count += next.value.byteLength
      received?.inc(next.value.byteLength)
      yield next.value
    }
  } finally {
    // Detaches the iterator's listeners so Node can drain what the consumer left unread.
    await chunks.return?.()
  }
  // Node ends a Content-Length body exactly at its length or fails; this guards against
  // a transport that ends early without an error.
  if (expected !== undefined && count !== expected) throw truncated(count, expected, undefined)
}

/**
 * Reads the whole request body into memory. Throws `tooLarge(limit)` as soon as the body
 * passes `limit` bytes (or up front when Content-Length says it will), so never more than
 * `limit` bytes plus one chunk are held; SizeInvalidError when the body breaks off.
 */
export async function readBodyLimited(
  req: IncomingMessage,
  limit: number,
  tooLarge: (limit: number) => ShoalError,
): Promise<Uint8Array> {
  const expected = declaredLength(req)
  if (expected !== undefined && expected > limit) throw tooLarge(limit)
  const chunks: Buffer[] = []
  let total = 0
  const iterator = req.iterator({ destroyOnReturn: false })
  try {
    while (true) {
      let next: IteratorResult<Buffer>
      try {
        next = await iterator.next()
      } catch (err) {
        throw truncated(total, expected, err)
      }
      if (next.done === true) break
      total += next.value.byteLength
      if (total > limit) throw tooLarge(limit)
      chunks.push(next.value)
    }
  } finally {
    await iterator.return?.()
  }
  if (expected !== undefined && total !== expected) throw truncated(total, expected, undefined)
  return Buffer.concat(chunks, total)
}

function truncated(received: number, expected: number | undefined, cause: unknown): SizeInvalidError {
  const of = expected === undefined ? '' : ` of ${expected}`
  return new SizeInvalidError(
    `request body broke off after ${received}${of} bytes`,
    { received, expected },
    { cause },
  )
}
