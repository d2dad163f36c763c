/**
 * The `Range` request header of blob GETs (RFC 9110 single byte ranges) as registries
 * and mirrors answer it. Parsing only; no I/O. Shared by the registry API and the
 * agent's mirror endpoint.
 */
import { RangeInvalidError } from './errors.js'

/** An inclusive, satisfiable byte range within a blob. */
export interface ResolvedRange {
  start: number
  end: number
}

const BYTE_RANGE = /^bytes=(\d*)-(\d*)$/

/**
 * Resolves a `Range` header against a blob of `size` bytes. Returns undefined when the
 * header should be ignored and the whole blob served (not a single `bytes=` range, or
 * syntactically invalid, as RFC 9110 allows), the inclusive range otherwise. Throws
 * RangeInvalidError (detail `{ size }`) when the range is well formed but unsatisfiable:
 * a start at or past the end, or an empty suffix.
 */
export function resolveRange(header: string, size: number): ResolvedRange | undefined {
  const match = BYTE_RANGE.exec(header.trim())
  if (match === null) return undefined
  const [, first = '', last = ''] = match
  if (first === '' && last === '') return undefined
  if (first === '') {
    // Suffix range: the last K bytes.
    const suffix = toSafeInteger(last)
    if (suffix === undefined) return undefined
    if (suffix === 0 || size === 0) throw unsatisfiable(header, size)
    return { start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = toSafeInteger(first)
  if (start === undefined) return undefined
  let end = size - 1
  if (last !== '') {
    const parsed = toSafeInteger(last)
    if (parsed === undefined || parsed < start) return undefined
    end = Math.min(parsed, size - 1)
  }
  if (start >= size) throw unsatisfiable(header, size)
  return { start, end }
}

/** The `Content-Range` value of a 206 answer. */
export function contentRange(range: ResolvedRange, size: number): string {
  return `bytes ${range.start}-${range.end}/${size}`
}

function toSafeInteger(s: string): number | undefined {
  if (s.length === 0 || s.length > 16) return undefined
  const n = Number(s)
  return Number.isSafeInteger(n) ? n : undefined
}

function unsatisfiable(header: string, size: number): RangeInvalidError {
  return new RangeInvalidError(`range ${header.slice(0, 100)} not satisfiable for ${size} bytes`, { size })
}
