/**
 * Byte-range grammar of the registry API: the `Range` request header of blob GETs
 * (RFC 9110 single byte ranges, shared with the agent's mirror through protocol/) and
 * the `Content-Range` header of chunked upload PATCHes (the distribution spec's
 * `start-end`). Parsing only; no I/O.
 */
import { RangeInvalidError } from '../../../protocol/src/index.js'

export { contentRange, type ResolvedRange, resolveRange } from '../../../protocol/src/byte-range.js'

const UPLOAD_RANGE = /^(?:bytes[ =])?(\d+)-(\d+)$/

/**
 * Parses the `Content-Range` of an upload chunk (`start-end`, inclusive; a `bytes `
 * prefix is tolerated). Throws RangeInvalidError for anything else, including an end
 * before its start, so that malformed and out-of-order chunks answer alike (416).
 */
export function parseUploadRange(header: string): { start: number; length: number } {
  const match = UPLOAD_RANGE.exec(header.trim())
  const start = match ? toSafeInteger(match[1] ?? '') : undefined
  const end = match ? toSafeInteger(match[2] ?? '') : undefined
  if (start === undefined || end === undefined || end < start) {
    throw new RangeInvalidError(`invalid Content-Range: ${header.slice(0, 100)}`)
  }
  return { start, length: end - start + 1 }
}

/** The `Range` header of an upload answer: `0-<offset-1>`, and `0-0` before any byte. */
export function uploadRangeHeader(offset: number): string {
  return `0-${Math.max(0, offset - 1)}`
}

function toSafeInteger(s: string): number | undefined {
  if (s.length === 0 || s.length > 16) return undefined
  const n = Number(s)
  return Number.isSafeInteger(n) ? n : undefined
}
