/**
 * The private-repository gate. The agent holds content that any client on the node
 * could ask for by digest, through any repository name, and may fetch with credentials
 * of its own; so a client gets a manifest or blob from the cache or the swarm only if
 * the upstream would serve THAT object from THAT repository to the client itself.
 *
 * - Verdicts are per object: (host, repository, kind, reference, hash of the client's
 *   Authorization or "anonymous"), kept `ttlMs`. The header itself is never kept.
 * - An anonymous HEAD of the object (after an anonymous token, for bearer upstreams)
 *   decides for every client: 2xx lets anyone read it, 404 means the repository does
 *   not hold it (the client gets BLOB_UNKNOWN / MANIFEST_UNKNOWN, not cached bytes),
 *   401/403 marks the repository private.
 * - In a repository known private, the anonymous HEAD is skipped and one HEAD carrying
 *   the client's Authorization decides for that client and object.
 * - While the upstream cannot be asked (unreachable, 5xx, 429), a verdict about the
 *   same object and credential still decides for `staleIfErrorMs` past its TTL;
 *   otherwise a repository last seen private stays closed (401 without credentials,
 *   502 with), and one never seen refused is treated as public.
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
  /**
   * How long past its TTL a verdict about one object still decides while the upstream
   * cannot be asked, in milliseconds. @default 600000
   */
  staleIfErrorMs?: number
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

/** What the upstream said about one object for one credential (or none). */
interface Verdict {
  /** 200 readable, 404 not in the repository, 401 / 403 refused. */
  status: 200 | 401 | 403 | 404
  challenge: string | undefined
  expires: number
}

/** Thrown inside the gate when the upstream cannot give a verdict (unreachable, 5xx, 429, odd status). */
class Unavailable extends Error {
  constructor(readonly upstreamError: UpstreamError) {
    super(upstreamError.message)
  }
}

/** Creates the gate. */
export function createAccessChecker(
  components: AccessCheckerComponents,
  init: AccessCheckerInit = {},
): AccessChecker {
  const { resolver } = components
  const doFetch = components.fetch ?? globalThis.fetch
  const ttlMs = init.ttlMs ?? 60_000
  const staleIfErrorMs = init.staleIfErrorMs ?? 600_000
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

  /** The verdict a HEAD answer carries; throws Unavailable when it carries none. */
  function verdictOf(res: Response, url: string, fallbackChallenge: string | undefined): Verdict {
    const challenge = res.headers.get('www-authenticate') ?? fallbackChallenge
    const expires = now() + ttlMs
    if (res.ok) return { status: 200, challenge, expires }
    if (res.status === 404) return { status: 404, challenge, expires }
    if (res.status === 401 || res.status === 403) return { status: res.status, challenge, expires }
    throw new Unavailable(
      new UpstreamError(`HEAD ${url}: upstream answered ${res.status} while checking access`, res.status),
    )
  }

  /** Runs `probe`, turning an upstream that cannot be reached into Unavailable. */
  async function asking<T>(probe: () => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
    try {
      return await probe()
    } catch (err) {
      if (signal?.aborted) throw signal.reason ?? err
      if (err instanceof UpstreamError) throw new Unavailable(err)
      throw err
    }
  }

  /** Can anyone read the object? One HEAD, after an anonymous token for bearer upstreams. */
  async function probeAnonymous(request: AccessRequest, signal: AbortSignal | undefined): Promise<Verdict> {
    const { url, headers } = objectUrl(request)
    let res = await asking(() => send(url, 'HEAD', headers, signal), signal)
    // The first challenge is the one a client must answer, whatever the token's fate.
    const challenge = res.headers.get('www-authenticate') ?? undefined
    if (res.status === 401) {
      const upstream = resolver.resolve(request.host)
      const token = await asking(
        () => anonymousToken(challenge ?? null, upstream.repository(request.repository), signal),
        signal,
      )
      if (token !== undefined) {
        res = await asking(
          () => send(url, 'HEAD', { ...headers, authorization: `Bearer ${token}` }, signal),
          signal,
        )
      }
    }
    const verdict = verdictOf(res, url, challenge)
    return { ...verdict, challenge: challenge ?? verdict.challenge }
  }

  /** Can this client read the object? One HEAD carrying its Authorization. */
  async function probeClient(
    request: AccessRequest,
    authorization: string,
    fallbackChallenge: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Verdict> {
    const { url, headers } = objectUrl(request)
    const res = await asking(() => send(url, 'HEAD', { ...headers, authorization }, signal), signal)
    return verdictOf(res, url, fallbackChallenge)
  }

  function objectKey(request: AccessRequest, authorization: string | undefined): string {
    const who =
      authorization === undefined ? 'anonymous' : createHash('sha256').update(authorization).digest('hex')
    // Hashed so neither the header nor names that could collide across fields are kept.
    return createHash('sha256')
      .update(`${request.host}\n${request.repository}\n${request.kind}\n${request.reference}\n${who}`)
      .digest('hex')
  }

  function fresh(verdict: Verdict | undefined): verdict is Verdict {
    return verdict !== undefined && verdict.expires > now()
  }

  function usableInOutage(verdict: Verdict | undefined): verdict is Verdict {
    return verdict !== undefined && verdict.expires + staleIfErrorMs > now()
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

  /** Resolves when `verdict` lets the client read, throws the client's error otherwise. */
  function apply(verdict: Verdict, request: AccessRequest, challenge: string | undefined): void {
    if (verdict.status === 200) return
    if (verdict.status === 404) throw notFound(request)
    throw refusal(verdict.status, verdict.challenge ?? challenge, request)
  }

  /**
   * The upstream cannot be asked. A verdict about this very object for this very
   * credential decides for `staleIfErrorMs` past its TTL; otherwise a repository last
   * seen private stays closed, and one never seen refused is treated as public.
   */
  function decideInOutage(
    request: AccessRequest,
    authorization: string | undefined,
    error: UpstreamError,
  ): void {
    const repo = privacy.get(repoKey(request))
    const own = verdicts.get(objectKey(request, authorization))
    if (usableInOutage(own)) {
      apply(own, request, repo?.challenge)
      return
    }
    const anonymous = verdicts.get(objectKey(request, undefined))
    if (usableInOutage(anonymous) && (anonymous.status === 200 || anonymous.status === 404)) {
      apply(anonymous, request, repo?.challenge)
      return
    }
    if (repo?.private !== true) return
    if (authorization === undefined) throw refusal(401, repo.challenge, request)
    throw new UpstreamError(
      `cannot check access to private ${request.repository} while the upstream is unavailable`,
      error.status >= 500 ? error.status : 502,
      undefined,
      { cause: error },
    )
  }

  function repoKey(request: AccessRequest): string {
    return `${request.host}\n${request.repository}`
  }

  async function check(
    request: AccessRequest,
    authorization: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const rkey = repoKey(request)
    let repo = privacy.get(rkey)
    if (!(repo !== undefined && repo.expires > now() && repo.private)) {
      // Public or not known: one anonymous verdict per object, shared by every client.
      const akey = objectKey(request, undefined)
      let anonymous = verdicts.get(akey)
      if (!fresh(anonymous)) {
        anonymous = await probeAnonymous(request, signal)
        remember(verdicts, akey, anonymous)
        repo = {
          private: anonymous.status === 401 || anonymous.status === 403,
          challenge: anonymous.challenge,
          expires: anonymous.expires,
        }
        remember(privacy, rkey, repo)
      }
      if (anonymous.status === 200 || anonymous.status === 404) return apply(anonymous, request, undefined)
      repo = { private: true, challenge: anonymous.challenge ?? repo?.challenge, expires: repo?.expires ?? 0 }
    }
    // A private repository: the client's own credentials must open this very object.
    if (authorization === undefined) throw refusal(401, repo.challenge, request)
    const ckey = objectKey(request, authorization)
    let own = verdicts.get(ckey)
    if (!fresh(own)) {
      own = await probeClient(request, authorization, repo.challenge, signal)
      remember(verdicts, ckey, own)
    }
    apply(own, request, repo.challenge)
  }

  return {
    async check(request, authorization, options = {}) {
      const { signal } = options
      const auth = authorization === '' ? undefined : authorization
      try {
        await check(request, auth, signal)
      } catch (err) {
        if (!(err instanceof Unavailable)) throw err
        decideInOutage(request, auth, err.upstreamError)
      }
    },
    clear() {
      privacy.clear()
      verdicts.clear()
    },
  }
}
