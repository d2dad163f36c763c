import { describe, expect, it } from 'vitest'
import { createAccessChecker } from './access.js'
import { createUpstreamResolver } from './resolver.js'

const DIGEST = `sha256:${'b'.repeat(64)}`
const OTHER = `sha256:${'c'.repeat(64)}`
const SECRET = `sha256:${'d'.repeat(64)}`
const GOOD = `Basic ${Buffer.from('alice:pw').toString('base64')}`
const BOB = `Basic ${Buffer.from('bob:pw').toString('base64')}`
const CHALLENGE = 'Basic realm="corp"'

/**
 * A fake upstream. Each repository holds some objects (by reference); private ones want
 * GOOD or BOB and refuse anything else with 401 before looking for the object, as
 * Distribution does. `down` makes every request fail to connect, `status` answers it.
 */
function fakeUpstream() {
  const state = {
    repos: new Map<string, { private: boolean; objects: Set<string> }>([
      ['pub/app', { private: false, objects: new Set([DIGEST, OTHER, 'v1']) }],
      ['corp/secret', { private: true, objects: new Set([DIGEST, OTHER, SECRET, 'v1']) }],
      ['corp/other', { private: true, objects: new Set([DIGEST]) }],
    ]),
    down: false,
    status: 0,
    forbidden: false,
  }
  const requests: Array<{ url: string; auth: string | null }> = []
  const fetchFn: typeof fetch = async (input, init) => {
    const url = String(input)
    const auth = new Headers(init?.headers).get('authorization')
    requests.push({ url, auth })
    if (state.down) throw new TypeError('fetch failed')
    if (state.status !== 0) return new Response(null, { status: state.status })
    const [, name = '', reference = ''] = /\/v2\/(.+)\/(?:blobs|manifests)\/([^/?]+)/.exec(url) ?? []
    const repo = state.repos.get(name)
    if (repo?.private === true && auth !== GOOD && auth !== BOB) {
      return new Response(null, { status: 401, headers: { 'www-authenticate': CHALLENGE } })
    }
    if (repo?.private === true && state.forbidden) return new Response(null, { status: 403 })
    return new Response(null, { status: repo?.objects.has(reference) ? 200 : 404 })
  }
  return { state, requests, fetchFn }
}

function setup() {
  let now = 1_000_000
  const upstream = fakeUpstream()
  const resolver = createUpstreamResolver({ seedUrl: 'http://seed.example' })
  const access = createAccessChecker(
    { resolver, fetch: upstream.fetchFn },
    { ttlMs: 60_000, staleIfErrorMs: 300_000, now: () => now },
  )
  const blob = (repository: string, digest = DIGEST) => ({
    host: 'seed.example',
    repository,
    kind: 'blob' as const,
    reference: digest,
  })
  const manifest = (repository: string, reference: string) => ({
    host: 'seed.example',
    repository,
    kind: 'manifest' as const,
    reference,
  })
  return { upstream, access, blob, manifest, advance: (ms: number) => (now += ms) }
}

describe('createAccessChecker', () => {
  it('lets anyone read what a public repository holds, one HEAD per object per TTL for all clients', async () => {
    const { upstream, access, blob, advance } = setup()
    await access.check(blob('pub/app'), undefined)
    await access.check(blob('pub/app'), 'Bearer whatever')
    await access.check(blob('pub/app'), GOOD)
    expect(upstream.requests).toHaveLength(1)
    expect(upstream.requests[0]).toEqual({
      url: `http://seed.example/v2/pub/app/blobs/${DIGEST}`,
      auth: null,
    })
    // Another object is another verdict.
    await access.check(blob('pub/app', OTHER), undefined)
    expect(upstream.requests).toHaveLength(2)
    advance(60_001)
    await access.check(blob('pub/app'), undefined)
    expect(upstream.requests).toHaveLength(3)
  })

  it('refuses a private blob asked for through a public repository that does not hold it', async () => {
    const { upstream, access, blob, manifest } = setup()
    // An authorised client reads the secret blob (the agent caches it)...
    await access.check(blob('corp/secret', SECRET), GOOD)
    // ...which nobody may then read through a public repository, with or without credentials.
    for (const auth of [undefined, GOOD, 'Bearer whatever']) {
      await expect(access.check(blob('pub/app', SECRET), auth)).rejects.toMatchObject({
        name: 'BlobUnknownError',
        detail: { repository: 'pub/app', reference: SECRET },
      })
    }
    await expect(access.check(manifest('pub/app', SECRET), undefined)).rejects.toMatchObject({
      name: 'ManifestUnknownError',
    })
    // The 404 is a verdict too: kept for the TTL.
    const asked = upstream.requests.length
    await expect(access.check(blob('pub/app', SECRET), undefined)).rejects.toMatchObject({
      name: 'BlobUnknownError',
    })
    expect(upstream.requests).toHaveLength(asked)
  })

  it("checks a client's credentials for each object of a private repository once per TTL", async () => {
    const { upstream, access, blob, advance } = setup()
    await expect(access.check(blob('corp/secret'), undefined)).rejects.toMatchObject({
      name: 'UnauthorizedError',
      detail: { wwwAuthenticate: CHALLENGE },
    })
    await access.check(blob('corp/secret'), GOOD)
    const afterFirst = upstream.requests.length
    await access.check(blob('corp/secret'), GOOD)
    expect(upstream.requests).toHaveLength(afterFirst)
    expect(upstream.requests.at(-1)?.auth).toBe(GOOD)
    // Another blob of the known-private repository: exactly one HEAD, with the client's header.
    await access.check(blob('corp/secret', OTHER), GOOD)
    expect(upstream.requests.slice(afterFirst)).toEqual([
      { url: `http://seed.example/v2/corp/secret/blobs/${OTHER}`, auth: GOOD },
    ])
    // Another credential is another verdict; an anonymous client costs no HEAD at all.
    await access.check(blob('corp/secret'), BOB)
    expect(upstream.requests).toHaveLength(afterFirst + 2)
    await expect(access.check(blob('corp/secret', OTHER), undefined)).rejects.toMatchObject({
      name: 'UnauthorizedError',
    })
    expect(upstream.requests).toHaveLength(afterFirst + 2)
    await expect(access.check(blob('corp/secret'), 'Basic bad')).rejects.toMatchObject({
      name: 'UnauthorizedError',
      detail: { wwwAuthenticate: CHALLENGE },
    })
    // A verdict about the header is not a verdict about another repository.
    const before = upstream.requests.length
    await access.check(blob('corp/other'), GOOD)
    expect(upstream.requests.length).toBeGreaterThan(before)
    advance(60_001)
    upstream.state.forbidden = true
    await expect(access.check(blob('corp/secret'), GOOD)).rejects.toMatchObject({ name: 'DeniedError' })
  })

  it('answers not found when a private repository lacks the object the client may otherwise read', async () => {
    const { access, blob, manifest } = setup()
    await expect(access.check(blob('corp/other', SECRET), GOOD)).rejects.toMatchObject({
      name: 'BlobUnknownError',
    })
    await expect(access.check(manifest('corp/other', 'v1'), GOOD)).rejects.toMatchObject({
      name: 'ManifestUnknownError',
    })
  })

  it('keeps a private repository closed while the upstream is down, unless this client read this object', async () => {
    const { upstream, access, blob, advance } = setup()
    await access.check(blob('corp/secret'), GOOD)
    await expect(access.check(blob('pub/app', SECRET), undefined)).rejects.toMatchObject({
      name: 'BlobUnknownError',
    })
    advance(60_001)
    upstream.state.down = true
    // This client read this blob before: still served, for staleIfErrorMs past the TTL.
    await access.check(blob('corp/secret'), GOOD)
    // Not another client, not another blob, not anonymously.
    await expect(access.check(blob('corp/secret'), BOB)).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 502,
    })
    await expect(access.check(blob('corp/secret', OTHER), GOOD)).rejects.toMatchObject({
      name: 'UpstreamError',
    })
    await expect(access.check(blob('corp/secret'), undefined)).rejects.toMatchObject({
      name: 'UnauthorizedError',
      detail: { wwwAuthenticate: CHALLENGE },
    })
    // A public repository said it lacks the blob: that still holds.
    await expect(access.check(blob('pub/app', SECRET), undefined)).rejects.toMatchObject({
      name: 'BlobUnknownError',
    })
    // A repository never seen refused is served from what the agent has.
    await access.check(blob('never/seen'), undefined)
    advance(300_000)
    await expect(access.check(blob('corp/secret'), GOOD)).rejects.toMatchObject({ name: 'UpstreamError' })
  })

  it('treats 5xx and 429 answers like an unreachable upstream', async () => {
    const { upstream, access, blob, advance } = setup()
    await access.check(blob('corp/secret'), GOOD)
    advance(60_001)
    upstream.state.status = 503
    await expect(access.check(blob('corp/secret'), BOB)).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 503,
    })
    upstream.state.status = 429
    await expect(access.check(blob('corp/secret'), BOB)).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 502,
    })
    await access.check(blob('pub/app'), undefined)
    upstream.state.status = 0
    await access.check(blob('corp/secret'), BOB)
  })

  it('takes an anonymous bearer token before judging a token-auth repository', async () => {
    const seen: string[] = []
    const fetchFn: typeof fetch = async (input, init) => {
      const url = new URL(String(input))
      const auth = new Headers(init?.headers).get('authorization')
      seen.push(`${url.pathname}${url.search} ${auth ?? '-'}`)
      if (url.pathname === '/token') {
        const scope = url.searchParams.get('scope') ?? ''
        return Response.json({ token: scope.includes('pub/') ? 'pull-token' : 'no-access-token' })
      }
      if (auth === 'Bearer pull-token') return new Response(null, { status: 200 })
      return new Response(null, {
        status: 401,
        headers: { 'www-authenticate': 'Bearer realm="http://auth.example/token",service="reg"' },
      })
    }
    const resolver = createUpstreamResolver({ seedUrl: 'http://seed.example' })
    const access = createAccessChecker({ resolver, fetch: fetchFn })
    const request = (repository: string) => ({
      host: 'seed.example',
      repository,
      kind: 'manifest' as const,
      reference: 'v1',
    })
    await access.check(request('pub/app'), undefined)
    expect(seen).toEqual([
      '/v2/pub/app/manifests/v1 -',
      '/token?service=reg&scope=repository%3Apub%2Fapp%3Apull -',
      '/v2/pub/app/manifests/v1 Bearer pull-token',
    ])
    await expect(access.check(request('corp/app'), undefined)).rejects.toMatchObject({
      name: 'UnauthorizedError',
      detail: { wwwAuthenticate: 'Bearer realm="http://auth.example/token",service="reg"' },
    })
  })
})
