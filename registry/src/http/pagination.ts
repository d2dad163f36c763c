/**
 * Pagination of tag lists and the catalog (`?n=<count>&last=<name>`) and the `Link`
 * header that points at the next page.
 */
import type { ParsedUrlQuery } from 'node:querystring'
import { ParameterInvalidError } from '../../../protocol/src/index.js'
import type { Page, PageRequest } from '../service.js'
import { queryParam } from './params.js'

/** Largest accepted `n`; a bigger page is refused rather than silently cut. */
export const MAX_PAGE_SIZE = 100_000

/**
 * Reads `n` and `last` from the query. Throws ParameterInvalidError (400) when `n` is
 * not a whole number in [0, MAX_PAGE_SIZE].
 */
export function parsePageRequest(query: ParsedUrlQuery): PageRequest {
  const page: PageRequest = {}
  const n = queryParam(query, 'n')
  if (n !== undefined) {
    const value = /^\d{1,9}$/.test(n) ? Number(n) : Number.NaN
    if (!(value >= 0 && value <= MAX_PAGE_SIZE)) {
      throw new ParameterInvalidError(`invalid page size n=${n.slice(0, 50)}`, { n: n.slice(0, 50) })
    }
    page.n = value
  }
  const last = queryParam(query, 'last')
  if (last !== undefined && last !== '') page.last = last
  return page
}

/** The RFC 8288 `Link` value for the page after `page`, undefined when it is the last. */
export function nextPageLink(path: string, page: Page): string | undefined {
  if (page.next === undefined) return undefined
  const { n, last } = page.next
  return `<${path}?n=${n}&last=${encodeURIComponent(last)}>; rel="next"`
}
