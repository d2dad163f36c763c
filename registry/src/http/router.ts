/**
 * Maps a request path to one of the OCI Distribution API endpoints. Repository names
 * contain slashes, so a path is matched from the right: the fixed trailing components
 * (`manifests/<ref>`, `blobs/<digest>`, `blobs/uploads/<id>`, `tags/list`,
 * `referrers/<digest>`) decide the endpoint and everything before them is the name.
 *
 * Matching only splits the path; the parts are validated by params.ts. The name is kept
 * exactly as sent (not percent-decoded) so that an encoded '/' or '.' can never form a
 * valid name; the other parts are percent-decoded.
 */

/** One matched endpoint with its raw path parameters. */
export type RouteMatch =
  | { route: 'base' }
  | { route: 'catalog' }
  | { route: 'manifest'; name: string; reference: string }
  | { route: 'blob'; name: string; digest: string }
  | { route: 'uploads'; name: string }
  | { route: 'upload'; name: string; id: string }
  | { route: 'tags'; name: string }
  | { route: 'referrers'; name: string; digest: string }

/** Endpoint names. */
export type RouteName = RouteMatch['route']

/** The route template of each endpoint, used as the metrics `route` label. */
export const ROUTE_TEMPLATES: Readonly<Record<RouteName, string>> = {
  base: '/v2/',
  catalog: '/v2/_catalog',
  manifest: '/v2/<name>/manifests/<reference>',
  blob: '/v2/<name>/blobs/<digest>',
  uploads: '/v2/<name>/blobs/uploads/',
  upload: '/v2/<name>/blobs/uploads/<id>',
  tags: '/v2/<name>/tags/list',
  referrers: '/v2/<name>/referrers/<digest>',
}

const PREFIX = '/v2/'

/**
 * Matches a raw (not percent-decoded) URL path; undefined when it is no API endpoint.
 * A percent-decoding failure in a decoded part leaves the raw text, which then fails
 * validation.
 */
export function matchRoute(path: string): RouteMatch | undefined {
  if (path === '/v2' || path === PREFIX) return { route: 'base' }
  if (!path.startsWith(PREFIX)) return undefined
  if (path === '/v2/_catalog') return { route: 'catalog' }
  const parts = path.slice(PREFIX.length).split('/')
  const n = parts.length
  const last = parts[n - 1] ?? ''
  const secondLast = parts[n - 2]
  const thirdLast = parts[n - 3]
  const nameBefore = (count: number) => parts.slice(0, n - count).join('/')
  if (n >= 4 && thirdLast === 'blobs' && secondLast === 'uploads') {
    if (last === '') return { route: 'uploads', name: nameBefore(3) }
    return { route: 'upload', name: nameBefore(3), id: decode(last) }
  }
  if (n >= 3 && secondLast === 'blobs' && last === 'uploads') return { route: 'uploads', name: nameBefore(2) }
  if (n < 3) return undefined
  switch (secondLast) {
    case 'manifests':
      return { route: 'manifest', name: nameBefore(2), reference: decode(last) }
    case 'blobs':
      return { route: 'blob', name: nameBefore(2), digest: decode(last) }
    case 'referrers':
      return { route: 'referrers', name: nameBefore(2), digest: decode(last) }
    case 'tags':
      return last === 'list' ? { route: 'tags', name: nameBefore(2) } : undefined
    default:
      return undefined
  }
}

function decode(part: string): string {
  try {
    return decodeURIComponent(part)
  } catch {
    return part
  }
}
