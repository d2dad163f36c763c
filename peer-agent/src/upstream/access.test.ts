import { describe, expect, it } from 'vitest'
import { createAccessChecker } from './access.js'
import { createUpstreamResolver } from './resolver.js'

const DIGEST = `sha256:${'b'.repeat(64)}`
const GOOD = `Basic ${Buffer.from('alice:pw').toString('base64')}`
const CHALLENGE = 'Basic realm="corp"'

/** A fake upstream: `private` repositories want GOOD; `down` makes every request fail to connect. */
function fakeUpstream() {
  const state = { private: new Set<string>(['corp/secret']), down: false, forbidden: false }
  const requests: Array<{ url: string; auth: string | null }> = []
  const fetchFn: typeof fetch = async (input, init) => {
    const url = String(input)
    const auth = new Headers(init?.headers).get('authorization')
    requests.push({ url, auth })
    if (state.down) throw new TypeError('fetch failed')
    const repo = /\/v2\/(.+)\/(?:blobs|manifests)\//.exec(url)?.[1] ?? ''
    if (state.private.has(repo) && auth !== GOOD) {
      return new Response(null, { status: 401, headers: { 'www-authenticate': CHALLENGE } })
    }
    if (url.includes('/missing/')) return new Response(null, { status: 404 })
    if (!state.private.has(repo)) return new Response(null, { status: 200 })
    return new Response(null, { status: state.forbidden ? 403 : 200 })
  }
  return { state, requests, fetchFn }
}

function setup() {
  let now = 1_000_000
  const upstream = fakeUpstream()
  const resolver = createUpstreamResolver({ seedUrl: 'http://seed.example' })
  const access = createAccessChecker({ resolver, fetch: upstream.fetchFn }, { ttlMs: 60_000, now: () => now })
  const blob = (repository: string) => ({
    host: 'seed.example',
    repository,
    kind: 'blob' as const,
    reference: DIGEST,
  })
  return { upstream, access, blob, advance: (ms: number) => (now += ms) }
}

describe('createAccessChecker', () => {
  it('lets anyone read a public repository and asks again only after the TTL', async () => {
    const { upstream, access, blob, advance } = setup()
    await access.check(blob('pub/app'), undefined)
    await access.check(blob('pub/app'), 'Bearer whatever')
    expect(upstream.requests).toHaveLength(1)
    advance(60_001)
    await access.check(blob('pub/app'), undefined)
    expect(upstream.requests).toHaveLength(2)
  })

  it("checks a client's credentials for a private repository once per TTL, keyed by header", async () => {
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
    await expect(access.check(blob('corp/secret'), 'Basic bad')).rejects.toMatchObject({
      name: 'UnauthorizedError',
    })
    // A verdict about the header is not a verdict about another repository.
    upstream.state.private.add('corp/other')
    await access.check(blob('corp/other'), GOOD)
    advance(60_001)
    upstream.state.forbidden = true
    await expect(access.check(blob('corp/secret'), GOOD)).rejects.toMatchObject({ name: 'DeniedError' })
  })

  it('answers not found when the upstream lacks the object in a private repository', async () => {
    const { upstream, access, blob } = setup()
    upstream.state.private.add('corp/missing')
    await expect(access.check(blob('corp/missing'), GOOD)).rejects.toMatchObject({ name: 'BlobUnknownError' })
    const manifest = {
      host: 'seed.example',
      repository: 'corp/missing',
      kind: 'manifest' as const,
      reference: 'v1',
    }
    await expect(access.check(manifest, GOOD)).rejects.toMatchObject({ name: 'ManifestUnknownError' })
  })

  it('keeps a private repository closed while the upstream is down, and an unknown one open', async () => {
    const { upstream, access, blob, advance } = setup()
    await access.check(blob('corp/secret'), GOOD)
    advance(60_001)
    upstream.state.down = true
    await expect(access.check(blob('corp/secret'), undefined)).rejects.toMatchObject({
      name: 'UnauthorizedError',
    })
    await expect(access.check(blob('corp/secret'), GOOD)).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 502,
    })
    await access.check(blob('never/seen'), undefined)
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
