/**
 * A client of an OCI Distribution v2 registry over Node's global fetch, with basic
 * auth and the Docker bearer token flow. Every method throws shoal domain errors
 * (see response-error.ts); an aborted signal rejects with the signal's reason.
 */
import { Readable, Transform } from 'node:stream'
import type { ReadableStream as NodeWebReadableStream } from 'node:stream/web'
import { assertDigest, type Digest, Digester, digestOf, parseDigest } from '../digest.js'
import { ManifestTooLargeError, RangeInvalidError, UnauthorizedError, UpstreamError } from '../errors.js'
import { assertRepositoryName, MANIFEST_MEDIA_TYPES, parseReference } from '../oci.js'
import { errorForStatus, type ResourceKind, readErrorEntries } from './response-error.js'
import { createTokenCache, type TokenCache } from './token-cache.js'
import { type AuthChallenge, parseWwwAuthenticate } from './www-authenticate.js'

/** Cancellation for every client call. */
export interface ClientOptions {
  signal?: AbortSignal
}

/** Options of createRegistryClient. */
export interface RegistryClientInit {
  /** Base URL of the registry, e.g. `https://registry-1.docker.io` (any path is ignored). */
  url: string
  /** Basic credentials, sent as Basic auth or to the token endpoint. */
  username?: string
  password?: string
  /** A fixed bearer token sent with every request (no token flow). */
  token?: string
  /** The fetch to use. @default globalThis.fetch */
  fetch?: typeof fetch
  /** User-Agent header. @default 'shoal-registry-client' */
  userAgent?: string
  /** Largest manifest accepted, in bytes. @default 4 MiB */
  maxManifestBytes?: number
  /** Token cache; one per client by default. */
  tokenCache?: TokenCache
}

/** A fetched manifest. */
export interface FetchedManifest {
  body: Uint8Array
  mediaType: string
  /** The digest of `body` (verified when the manifest was asked for by digest). */
  digest: Digest
  size: number
}

/** What a HEAD of a manifest tells. */
export interface ManifestHead {
  mediaType: string
  /** Docker-Content-Digest; undefined when the registry did not send it for a tag. */
  digest: Digest | undefined
  size: number
}

/** An inclusive byte range; no `end` means to the end of the blob. */
export interface BlobRange {
  start: number
  end?: number
}

/** An open blob download. */
export interface BlobDownload {
  /** The blob's bytes (or the requested range of them). */
  stream: Readable
  /** Total size of the blob; -1 when the registry did not say. */
  size: number
  /** The inclusive range `stream` yields. */
  range: { start: number; end: number }
}

/** A page of tags. */
export interface TagList {
  name: string
  tags: string[]
  /** Set when the registry announced a next page (Link header). */
  next?: { n?: number; last: string }
}

/** Options of uploadBlob. */
export interface UploadBlobOptions extends ClientOptions {
  /** Expected digest; required for an iterable source unless chunked (then it is checked). */
  digest?: string
  /** Upload in PATCH chunks of at most this many bytes instead of one PUT. */
  chunkSize?: number
}

/** The registry client. */
export interface RegistryClient {
  /** The base URL, without a trailing slash. */
  readonly url: string
  /** GET /v2/ (authenticating if the registry asks); throws when not reachable or refused. */
  ping(options?: ClientOptions): Promise<void>
  /** Fetches a manifest by tag or digest, sending Accept for every supported manifest type. */
  getManifest(repository: string, reference: string, options?: ClientOptions): Promise<FetchedManifest>
  /** HEADs a manifest. */
  headManifest(repository: string, reference: string, options?: ClientOptions): Promise<ManifestHead>
  /**
   * Opens a blob download. A full read is verified: the stream errors with
   * DigestMismatchError instead of ending when the bytes do not match `digest`.
   */
  getBlob(
    repository: string,
    digest: string,
    options?: ClientOptions & { range?: BlobRange },
  ): Promise<BlobDownload>
  /** HEADs a blob; BlobUnknownError when absent. */
  statBlob(
    repository: string,
    digest: string,
    options?: ClientOptions,
  ): Promise<{ digest: Digest; size: number }>
  /**
   * Uploads a blob: one PUT for a byte array, PATCH chunks with `chunkSize` or for an
   * iterable source. Returns the digest and size stored.
   */
  uploadBlob(
    repository: string,
    source: Uint8Array | AsyncIterable<Uint8Array>,
    options?: UploadBlobOptions,
  ): Promise<{ digest: Digest; size: number }>
  /** Cross-repository mount; true when mounted, false when the registry declined. */
  mountBlob(repository: string, digest: string, from: string, options?: ClientOptions): Promise<boolean>
  /** PUTs a manifest under a tag or digest; returns its digest. */
  putManifest(
    repository: string,
    reference: string,
    body: Uint8Array,
    mediaType: string,
    options?: ClientOptions,
  ): Promise<{ digest: Digest }>
  /** Lists tags, one page (`n`, `last`) at a time. */
  listTags(repository: string, options?: ClientOptions & { n?: number; last?: string }): Promise<TagList>
}

interface SendRequest {
  method: string
  /** URL path from /v2/, or an absolute URL (upload locations). */
  path: string
  kind: ResourceKind
  /** Token scope for this request; '' for none (ping). */
  scope: string
  headers?: Record<string, string>
  body?: Uint8Array
  /** Statuses treated as success. */
  ok?: number[]
  signal?: AbortSignal
}

const MANIFEST_ACCEPT = MANIFEST_MEDIA_TYPES.join(', ')
const DEFAULT_CHUNK = 8 * 1024 * 1024

function pullScope(repository: string): string {
  return `repository:${repository}:pull`
}

function pushScope(repository: string): string {
  return `repository:${repository}:pull,push`
}

function basicHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`
}

function contentType(res: Response): string | undefined {
  const ct = res.headers.get('content-type')
  return ct === null ? undefined : (ct.split(';')[0]?.trim() ?? undefined)
}

function headerDigest(res: Response): Digest | undefined {
  const d = res.headers.get('docker-content-digest')
  if (d === null) return undefined
  try {
    return parseDigest(d.trim()).digest
  } catch {
    return undefined
  }
}

function isAbort(err: unknown, signal: AbortSignal | undefined): boolean {
  return (
    signal?.aborted === true ||
    (err instanceof Error && (err.name === 'AbortError' || err.name === 'TimeoutError'))
  )
}

/**
 * The error to throw for a failed fetch or body read: a caller's abort is rethrown as
 * is, a deadline (TimeoutError) becomes UpstreamError 504, anything else (refused,
 * reset, DNS) UpstreamError 502.
 */
function networkError(err: unknown, signal: AbortSignal | undefined, what: string): unknown {
  if (err instanceof UpstreamError || err instanceof ManifestTooLargeError) return err
  const reason = signal?.aborted === true ? signal.reason : err
  if (reason instanceof Error && reason.name === 'TimeoutError') {
    return new UpstreamError(
      `${what}: upstream did not answer in time`,
      504,
      { timeout: true },
      { cause: err },
    )
  }
  if (isAbort(err, signal)) return signal?.reason ?? err
  const cause = (err as { cause?: { code?: string; message?: string } }).cause
  const detail = cause?.code ?? cause?.message ?? (err as Error).message
  return new UpstreamError(
    `${what}: upstream unreachable (${detail})`,
    502,
    { unreachable: true },
    { cause: err },
  )
}

async function readAll(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
  what: string,
): Promise<Uint8Array> {
  if (body === null) return new Uint8Array(0)
  const chunks: Uint8Array[] = []
  let total = 0
  const reader = body.getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    total += value.byteLength
    if (total > limit) {
      await reader.cancel().catch(() => {})
      throw new ManifestTooLargeError(`${what}: manifest larger than ${limit} bytes`)
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks)
}

/** Parses `Content-Range: bytes S-E/TOTAL` (TOTAL may be `*`). */
function parseContentRange(v: string | null): { start: number; end: number; total: number } | undefined {
  if (v === null) return undefined
  const m = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/.exec(v.trim())
  if (!m) return undefined
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? -1 : Number(m[3]) }
}

/** Parses the `last` and `n` of a `Link: <...>; rel="next"` header. */
function parseNextLink(v: string | null): { n?: number; last: string } | undefined {
  if (v === null) return undefined
  const m = /<([^>]*)>\s*;\s*rel="?next"?/.exec(v)
  if (!m) return undefined
  const url = new URL(m[1] as string, 'http://x')
  const last = url.searchParams.get('last')
  if (last === null) return undefined
  const n = url.searchParams.get('n')
  return n === null ? { last } : { last, n: Number(n) }
}

/** Groups an iterable of arbitrary chunks into buffers of exactly `size` bytes (the last may be shorter). */
async function* rechunk(source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Uint8Array> {
  let parts: Uint8Array[] = []
  let held = 0
  for await (const chunk of source) {
    let c = chunk
    while (c.byteLength > 0) {
      const take = Math.min(size - held, c.byteLength)
      parts.push(c.subarray(0, take))
      held += take
      c = c.subarray(take)
      if (held === size) {
        yield Buffer.concat(parts)
        parts = []
        held = 0
      }
    }
  }
  if (held > 0) yield Buffer.concat(parts)
}

/**
 * Creates a registry client. Authentication: a fixed `token` is always sent; otherwise
 * on a 401 the client reads `WWW-Authenticate`: for `Bearer` it fetches a token from
 * the realm for the challenge's scope (with the basic credentials if configured,
 * anonymously otherwise), caches it per scope until it expires and retries once; for
 * `Basic` it retries once with the credentials and sends them up front from then on.
 */
export function createRegistryClient(init: RegistryClientInit): RegistryClient {
  const parsed = new URL(init.url)
  const base = `${parsed.protocol}//${parsed.host}`
  const doFetch = init.fetch ?? globalThis.fetch
  const userAgent = init.userAgent ?? 'shoal-registry-client'
  const maxManifestBytes = init.maxManifestBytes ?? 4 * 1024 * 1024
  const tokens = init.tokenCache ?? createTokenCache()
  const hasBasic = init.username !== undefined && init.password !== undefined
  let basicKnown = false

  async function rawFetch(url: string, req: RequestInit, signal: AbortSignal | undefined): Promise<Response> {
    try {
      return await doFetch(url, { ...req, signal, redirect: 'follow' })
    } catch (err) {
      throw networkError(err, signal, `${req.method} ${url}`)
    }
  }

  async function fetchToken(challenge: AuthChallenge, scope: string, signal?: AbortSignal): Promise<string> {
    const realm = challenge.params.realm
    if (realm === undefined) throw new UnauthorizedError('bearer challenge without realm')
    const url = new URL(realm, base)
    if (challenge.params.service !== undefined) url.searchParams.set('service', challenge.params.service)
    const scopes = (challenge.params.scope ?? scope).split(' ').filter((s) => s !== '')
    for (const s of scopes) url.searchParams.append('scope', s)
    const headers: Record<string, string> = { 'user-agent': userAgent, accept: 'application/json' }
    if (hasBasic) headers.authorization = basicHeader(init.username as string, init.password as string)
    const res = await rawFetch(url.toString(), { method: 'GET', headers }, signal)
    if (!res.ok) {
      const entries = await readErrorEntries(res)
      throw errorForStatus(res.status, 'base', `GET token ${url.origin}${url.pathname}`, entries)
    }
    let json: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown }
    try {
      json = (await res.json()) as typeof json
    } catch (err) {
      throw new UpstreamError('token endpoint answered something that is not JSON', 502, undefined, {
        cause: err,
      })
    }
    const token = typeof json.token === 'string' ? json.token : json.access_token
    if (typeof token !== 'string' || token === '')
      throw new UpstreamError('token endpoint answered no token', 502)
    tokens.set(scope, token, {
      expiresInSec: typeof json.expires_in === 'number' ? json.expires_in : undefined,
      issuedAt: typeof json.issued_at === 'string' ? json.issued_at : undefined,
    })
    return token
  }

  function authHeader(scope: string): string | undefined {
    if (init.token !== undefined) return `Bearer ${init.token}`
    const cached = tokens.get(scope)
    if (cached !== undefined) return `Bearer ${cached}`
    if (hasBasic && basicKnown) return basicHeader(init.username as string, init.password as string)
    return undefined
  }

  /** Sends a request, running the auth flow once on 401; throws domain errors for failures. */
  async function send(req: SendRequest): Promise<Response> {
    const url = req.path.startsWith('http') ? req.path : `${base}${req.path}`
    const what = `${req.method} ${url}`
    const attempt = (auth: string | undefined) => {
      const headers: Record<string, string> = { 'user-agent': userAgent, ...req.headers }
      if (auth !== undefined) headers.authorization = auth
      const body = req.body === undefined ? undefined : (req.body as unknown as RequestInit['body'])
      return rawFetch(url, { method: req.method, headers, body }, req.signal)
    }
    let res = await attempt(authHeader(req.scope))
    if (res.status === 401 && init.token === undefined) {
      const challenges = parseWwwAuthenticate(res.headers.get('www-authenticate'))
      const bearer = challenges.find((c) => c.scheme === 'bearer')
      const basic = challenges.find((c) => c.scheme === 'basic')
      let retryAuth: string | undefined
      if (bearer !== undefined) {
        tokens.delete(req.scope)
        retryAuth = `Bearer ${await fetchToken(bearer, req.scope, req.signal)}`
      } else if (basic !== undefined && hasBasic) {
        basicKnown = true
        retryAuth = basicHeader(init.username as string, init.password as string)
      }
      if (retryAuth !== undefined) {
        await res.body?.cancel().catch(() => {})
        res = await attempt(retryAuth)
      }
    }
    const okStatuses = req.ok ?? []
    if (res.ok || okStatuses.includes(res.status)) return res
    const entries = req.method === 'HEAD' ? [] : await readErrorEntries(res)
    if (req.method === 'HEAD') await res.body?.cancel().catch(() => {})
    throw errorForStatus(res.status, req.kind, what, entries)
  }

  function repoPath(repository: string, rest: string): string {
    assertRepositoryName(repository)
    return `/v2/${repository}/${rest}`
  }

  function resolveLocation(res: Response, what: string): string {
    const loc = res.headers.get('location')
    if (loc === null) throw new UpstreamError(`${what}: upload answered without Location`, 502)
    return new URL(loc, base).toString()
  }

  function withQuery(location: string, params: Record<string, string>): string {
    const u = new URL(location)
    for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v)
    return u.toString()
  }

  async function startUpload(repository: string, signal?: AbortSignal): Promise<string> {
    const res = await send({
      method: 'POST',
      path: repoPath(repository, 'blobs/uploads/'),
      kind: 'upload',
      scope: pushScope(repository),
      headers: { 'content-length': '0' },
      signal,
    })
    await res.body?.cancel().catch(() => {})
    return resolveLocation(res, `POST ${repository} upload`)
  }

  return {
    url: base,

    async ping(options = {}) {
      const res = await send({ method: 'GET', path: '/v2/', kind: 'base', scope: '', signal: options.signal })
      await res.body?.cancel().catch(() => {})
    },

    async getManifest(repository, reference, options = {}) {
      const ref = parseReference(reference)
      const res = await send({
        method: 'GET',
        path: repoPath(repository, `manifests/${reference}`),
        kind: 'manifest',
        scope: pullScope(repository),
        headers: { accept: MANIFEST_ACCEPT },
        signal: options.signal,
      })
      const what = `GET ${repository}:${reference}`
      let body: Uint8Array
      try {
        body = await readAll(res.body, maxManifestBytes, what)
      } catch (err) {
        throw networkError(err, options.signal, what)
      }
      let digest: Digest
      if (ref.kind === 'digest') {
        digest = digestOf(body, parseDigest(ref.digest).algorithm)
        assertDigest(ref.digest, digest)
      } else {
        digest = digestOf(body)
      }
      let mediaType = contentType(res)
      if (mediaType === undefined || !MANIFEST_MEDIA_TYPES.includes(mediaType)) {
        try {
          const declared = (JSON.parse(Buffer.from(body).toString('utf8')) as { mediaType?: unknown })
            .mediaType
          if (typeof declared === 'string') mediaType = declared
        } catch {
          // Keep whatever the Content-Type said.
        }
      }
      return { body, mediaType: mediaType ?? 'application/octet-stream', digest, size: body.byteLength }
    },

    async headManifest(repository, reference, options = {}) {
      const ref = parseReference(reference)
      const res = await send({
        method: 'HEAD',
        path: repoPath(repository, `manifests/${reference}`),
        kind: 'manifest',
        scope: pullScope(repository),
        headers: { accept: MANIFEST_ACCEPT },
        signal: options.signal,
      })
      await res.body?.cancel().catch(() => {})
      const digest = headerDigest(res) ?? (ref.kind === 'digest' ? ref.digest : undefined)
      return {
        mediaType: contentType(res) ?? 'application/octet-stream',
        digest,
        size: Number(res.headers.get('content-length') ?? -1),
      }
    },

    async getBlob(repository, digest, options = {}) {
      const { digest: d, algorithm } = parseDigest(digest)
      const headers: Record<string, string> = {}
      const range = options.range
      if (range !== undefined) {
        if (range.start < 0 || (range.end !== undefined && range.end < range.start)) {
          throw new RangeInvalidError(`invalid range ${range.start}-${range.end ?? ''}`)
        }
        headers.range = `bytes=${range.start}-${range.end ?? ''}`
      }
      const res = await send({
        method: 'GET',
        path: repoPath(repository, `blobs/${d}`),
        kind: 'blob',
        scope: pullScope(repository),
        headers,
        signal: options.signal,
      })
      const length = res.headers.get('content-length')
      let size = length === null ? -1 : Number(length)
      let served = { start: 0, end: size - 1 }
      const partial = res.status === 206
      if (partial) {
        const cr = parseContentRange(res.headers.get('content-range'))
        if (cr !== undefined) {
          served = { start: cr.start, end: cr.end }
          size = cr.total
        }
      }
      const webBody = res.body ?? new ReadableStream<Uint8Array>({ start: (c) => c.close() })
      const raw = Readable.fromWeb(webBody as unknown as NodeWebReadableStream<Uint8Array>)
      if (partial) return { stream: raw, size, range: served }
      // A full read: verify the bytes as they pass and fail the stream instead of ending it.
      const digester = new Digester(algorithm)
      const verified = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          digester.update(chunk)
          cb(null, chunk)
        },
        flush(cb) {
          try {
            assertDigest(d, digester.digest())
            cb()
          } catch (err) {
            cb(err as Error)
          }
        },
      })
      raw.on('error', (err) => verified.destroy(err))
      verified.on('close', () => {
        if (!raw.destroyed) raw.destroy()
      })
      raw.pipe(verified)
      return { stream: verified, size, range: served }
    },

    async statBlob(repository, digest, options = {}) {
      const { digest: d } = parseDigest(digest)
      const res = await send({
        method: 'HEAD',
        path: repoPath(repository, `blobs/${d}`),
        kind: 'blob',
        scope: pullScope(repository),
        signal: options.signal,
      })
      await res.body?.cancel().catch(() => {})
      return { digest: d, size: Number(res.headers.get('content-length') ?? -1) }
    },

    async uploadBlob(repository, source, options = {}) {
      const signal = options.signal
      const expected = options.digest === undefined ? undefined : parseDigest(options.digest).digest
      let location = await startUpload(repository, signal)
      if (source instanceof Uint8Array && options.chunkSize === undefined) {
        const digest = digestOf(source, expected === undefined ? 'sha256' : parseDigest(expected).algorithm)
        if (expected !== undefined) assertDigest(expected, digest)
        const res = await send({
          method: 'PUT',
          path: withQuery(location, { digest }),
          kind: 'upload',
          scope: pushScope(repository),
          headers: {
            'content-type': 'application/octet-stream',
            'content-length': String(source.byteLength),
          },
          body: source,
          signal,
        })
        await res.body?.cancel().catch(() => {})
        return { digest, size: source.byteLength }
      }
      const chunkSize = options.chunkSize ?? DEFAULT_CHUNK
      const digester = new Digester(expected === undefined ? 'sha256' : parseDigest(expected).algorithm)
      const iterable: AsyncIterable<Uint8Array> =
        source instanceof Uint8Array
          ? (async function* () {
              yield source
            })()
          : source
      let offset = 0
      for await (const chunk of rechunk(iterable, chunkSize)) {
        digester.update(chunk)
        const res = await send({
          method: 'PATCH',
          path: location,
          kind: 'upload',
          scope: pushScope(repository),
          headers: {
            'content-type': 'application/octet-stream',
            'content-length': String(chunk.byteLength),
            'content-range': `${offset}-${offset + chunk.byteLength - 1}`,
          },
          body: chunk,
          signal,
        })
        await res.body?.cancel().catch(() => {})
        location = resolveLocation(res, `PATCH ${repository} upload`)
        offset += chunk.byteLength
      }
      const digest = digester.digest()
      if (expected !== undefined) assertDigest(expected, digest)
      const res = await send({
        method: 'PUT',
        path: withQuery(location, { digest }),
        kind: 'upload',
        scope: pushScope(repository),
        headers: { 'content-length': '0' },
        signal,
      })
      await res.body?.cancel().catch(() => {})
      return { digest, size: offset }
    },

    async mountBlob(repository, digest, from, options = {}) {
      const { digest: d } = parseDigest(digest)
      assertRepositoryName(from)
      const res = await send({
        method: 'POST',
        path: `${repoPath(repository, 'blobs/uploads/')}?mount=${encodeURIComponent(d)}&from=${encodeURIComponent(from)}`,
        kind: 'upload',
        scope: pushScope(repository),
        headers: { 'content-length': '0' },
        signal: options.signal,
      })
      await res.body?.cancel().catch(() => {})
      if (res.status === 201) return true
      // 202: the registry opened an ordinary upload instead; do not leave it dangling.
      const loc = res.headers.get('location')
      if (loc !== null) {
        await send({
          method: 'DELETE',
          path: new URL(loc, base).toString(),
          kind: 'upload',
          scope: pushScope(repository),
          ok: [404],
          signal: options.signal,
        })
          .then((r) => r.body?.cancel())
          .catch(() => {})
      }
      return false
    },

    async putManifest(repository, reference, body, mediaType, options = {}) {
      parseReference(reference)
      const res = await send({
        method: 'PUT',
        path: repoPath(repository, `manifests/${reference}`),
        kind: 'manifest',
        scope: pushScope(repository),
        headers: { 'content-type': mediaType, 'content-length': String(body.byteLength) },
        body,
        signal: options.signal,
      })
      await res.body?.cancel().catch(() => {})
      return { digest: headerDigest(res) ?? digestOf(body) }
    },

    async listTags(repository, options = {}) {
      const q = new URLSearchParams()
      if (options.n !== undefined) q.set('n', String(options.n))
      if (options.last !== undefined) q.set('last', options.last)
      const qs = q.size > 0 ? `?${q.toString()}` : ''
      const res = await send({
        method: 'GET',
        path: repoPath(repository, `tags/list${qs}`),
        kind: 'tags',
        scope: pullScope(repository),
        headers: { accept: 'application/json' },
        signal: options.signal,
      })
      const json = (await res.json().catch(() => ({}))) as { name?: unknown; tags?: unknown }
      const tags = Array.isArray(json.tags) ? json.tags.filter((t): t is string => typeof t === 'string') : []
      const next = parseNextLink(res.headers.get('link'))
      const list: TagList = { name: typeof json.name === 'string' ? json.name : repository, tags }
      if (next !== undefined) list.next = next
      return list
    },
  }
}
