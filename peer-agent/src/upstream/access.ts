/**
 * The private-repository gate. The agent holds content that any client on the node
 * could ask for by digest, and may fetch with credentials of its own; so for a
 * repository the upstream does not serve anonymously, a client gets content only if
 * the upstream accepts the client's own Authorization for that repository.
 *
 * - A repository is private when an anonymous HEAD of the requested manifest or blob
 *   (after an anonymous token, for bearer upstreams) is refused with 401 or 403.
 * - A client's Authorization is checked with one HEAD to the upstream carrying it.
 * - Both verdicts are kept for `ttlMs`, the client's keyed by a hash of the header and
 *   the repository (never the header itself). A private verdict outlives its TTL while
 *   the upstream cannot be asked, so an outage never opens a private repository; a
 *   repository never seen refused is treated as public.
 */
import { createHash } from 'node:crypto'
import {
  BlobUnknownError,
  DeniedError,
  ManifestUnknownError,
  MANIFEST_MEDIA_TYPES,
  UnauthorizedError,
  UpstreamError,
} from '../../../protocol/src/index.js'
import { parseWwwAuthenticate } from '../../../protocol/src/registry-client/index.js'
import type { UpstreamResolver } from './resolver.js'

/** What a client asks for. */
export interface AccessRequest {
  host: string
  repository: string
  kind: 'manifest' | 'blob'
  /** Tag or digest of a manifest, digest of a blob. */
  reference: string
}

/** The gate. */
export interface AccessChecker {
  /**
   * Resolves when the client may read `request`. Throws UnauthorizedError (detail
   * `{ wwwAuthenticate }`, the upstream's challenge) when it must authenticate,
   * DeniedError when the upstream refuses its credentials for the repository,
   * BlobUnknownError / ManifestUnknownError when the upstream says the object is not
   * in the repository, and UpstreamError when a private repository cannot be checked.
   */
  check(
    request: AccessRequest,
    authorization: string | undefined,
    options?: { signal?: AbortSignal },
  ): Promise<void>
  /** Forgets every verdict. */
  clear(): void
}

/** Options of createAccessChecker. */
export interface AccessCheckerInit {
  /** How long verdicts are reused, in milliseconds. @default 60000 */
  ttlMs?: number
  /** Deadline of each upstream request, in milliseconds. @default 30000 */
  timeoutMs?: number
  /** Most verdicts of each kind kept; the oldest go first. @default 10000 */
  maxEntries?: number
  /** @default Date.now */
  now?: () => number
}

/** Collaborators of the gate. */
export interface AccessCheckerComponents {
  resolver: UpstreamResolver
  /** @default globalThis.fetch */
  fetch?: typeof fetch
}

interface Privacy {
  private: boolean
  challenge: string | undefined
  expires: number
}

interface Verdict {
  status: number
  challenge: string | undefined
  expires: number
}

/** Creates the gate. */
export function createAccessChecker(
  components: AccessCheckerComponents,
  init: AccessCheckerInit = {},
): AccessChecker {
  const { resolver } = components
  const doFetch = components.fetch ?? globalThis.fetch
  const ttlMs = init.ttlMs ?? 60_000
  const timeoutMs = init.timeoutMs ?? 30_000
  const maxEntries = init.maxEntries ?? 10_000
  const now = init.now ?? Date.now
  const privacy = new Map<string, Privacy>()
  const verdicts = new Map<string, Verdict>()

  function remember<V>(map: Map<string, V>, key: string, value: V): void {
    map.delete(key)
    map.set(key, value)
    while (map.size > maxEntries) {
      const oldest = map.keys().next().value
      if (oldest === undefined) break
      map.delete(oldest)
    }
  }

  function objectUrl(request: AccessRequest): { url: string; headers: Record<string, string> } {
    const upstream = resolver.resolve(request.host)
    const path = request.kind === 'blob' ? 'blobs' : 'manifests'
    const url = `${upstream.url}/v2/${upstream.repository(request.repository)}/${path}/${request.reference}`
    const headers: Record<string, string> = { 'user-agent': 'shoal-agent' }
    if (request.kind === 'manifest') headers.accept = MANIFEST_MEDIA_TYPES.join(', ')
    return { url, headers }
  }

  async function send(
    url: string,
    method: string,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    const deadline = AbortSignal.timeout(timeoutMs)
    try {
      const res = await doFetch(url, {
        method,
        headers,
        signal: signal ? AbortSignal.any([signal, deadline]) : deadline,
      })
      if (method === 'HEAD' || !res.ok) await res.body?.cancel().catch(() => {})
      return res
    } catch (err) {
      if (signal?.aborted) throw signal.reason
      throw new UpstreamError(
        `${method} ${url}: upstream unreachable while checking access`,
        502,
        undefined,
        {
          cause: err,
        },
      )
    }
  }

  /** An anonymous bearer token for pulling `repository`, or undefined when the realm refuses. */
  async function anonymousToken(
    challenge: string | null,
    repository: string,
    signal: AbortSignal | undefined,
  ): Promise<string | undefined> {
    const bearer = parseWwwAuthenticate(challenge).find((c) => c.scheme === 'bearer')
    const realm = bearer?.params.realm
    if (bearer === undefined || realm === undefined) return undefined
    let url: URL
    try {
      url = new URL(realm)
    } catch {
      return undefined
    }
    if (bearer.params.service !== undefined) url.searchParams.set('service', bearer.params.service)
    url.searchParams.set('scope', `repository:${repository}:pull`)
    const res = await send(url.toString(), 'GET', { accept: 'application/json' }, signal)
    if (!res.ok) return undefined
    try {
      const json = (await res.json()) as { token?: unknown; access_token?: unknown }
      const token = typeof json.token === 'string' ? json.token : json.access_token
      return typeof token === 'string' && token !== '' ? token : undefined
    } catch {
      return undefined
    }
  }

  async function probePrivacy(request: AccessRequest, signal: AbortSignal | undefined): Promise<Privacy> {
    const { url, headers } = objectUrl(request)
    let res = await send(url, 'HEAD', headers, signal)
    const challenge = res.headers.get('www-authenticate') ?? undefined
    if (res.status === 401) {
      const upstream = resolver.resolve(request.host)
      const token = await anonymousToken(
        res.headers.get('www-authenticate'),
        upstream.repository(request.repository),
        signal,
      )
      if (token !== undefined)
        res = await send(url, 'HEAD', { ...headers, authorization: `Bearer ${token}` }, signal)
    }
    if (res.status >= 500 || res.status === 429) {
      throw new UpstreamError(
        `HEAD ${url}: upstream answered ${res.status} while checking access`,
        res.status,
      )
    }
    const isPrivate = res.status === 401 || res.status === 403
    return { private: isPrivate, challenge, expires: now() + ttlMs }
  }

  async function isPrivate(request: AccessRequest, signal: AbortSignal | undefined): Promise<Privacy> {
    const key = `${request.host}\n${request.repository}`
    const known = privacy.get(key)
    if (known !== undefined && known.expires > now()) return known
    try {
      const fresh = await probePrivacy(request, signal)
      remember(privacy, key, fresh)
      return fresh
    } catch (err) {
      if (signal?.aborted) throw err
      // The upstream cannot be asked: what was last seen holds, and a repository never
      // seen refused is public.
      if (known !== undefined) return known
      return { private: false, challenge: undefined, expires: 0 }
    }
  }

  function notFound(request: AccessRequest): Error {
    const detail = { repository: request.repository, reference: request.reference }
    return request.kind === 'blob'
      ? new BlobUnknownError(undefined, detail)
      : new ManifestUnknownError(undefined, detail)
  }

  function refusal(status: number, challenge: string | undefined, request: AccessRequest): Error {
    if (status === 401) {
      return new UnauthorizedError(`authentication required to read ${request.repository}`, {
        repository: request.repository,
        ...(challenge === undefined ? {} : { wwwAuthenticate: challenge }),
      })
    }
    return new DeniedError(`the upstream refuses these credentials for ${request.repository}`, {
      repository: request.repository,
    })
  }

  return {
    async check(request, authorization, options = {}) {
      const { signal } = options
      const repoPrivacy = await isPrivate(request, signal)
      if (!repoPrivacy.private) return
      if (authorization === undefined || authorization === '') {
        throw refusal(401, repoPrivacy.challenge, request)
      }
      const key = createHash('sha256')
        .update(`${request.host}\n${request.repository}\n${authorization}`)
        .digest('hex')
      const known = verdicts.get(key)
      if (known !== undefined && known.expires > now()) {
        if (known.status < 300) return
        throw refusal(known.status, known.challenge ?? repoPrivacy.challenge, request)
      }
      const { url, headers } = objectUrl(request)
      const res = await send(url, 'HEAD', { ...headers, authorization }, signal)
      if (res.status === 404) throw notFound(request)
      if (res.status >= 500 || res.status === 429) {
        throw new UpstreamError(
          `HEAD ${url}: upstream answered ${res.status} while checking access`,
          res.status,
        )
      }
      const status = res.ok ? 200 : res.status === 401 ? 401 : 403
      const challenge = res.headers.get('www-authenticate') ?? repoPrivacy.challenge
      remember(verdicts, key, { status, challenge, expires: now() + ttlMs })
      if (status !== 200) throw refusal(status, challenge, request)
    },
    clear() {
      privacy.clear()
      verdicts.clear()
    },
  }
}
