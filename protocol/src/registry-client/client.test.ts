import { describe, expect, it } from 'vitest'
import { digestOf, MEDIA_TYPES } from '../index.js'
import { createRegistryClient } from './client.js'
import { createTokenCache } from './token-cache.js'

interface Seen {
  url: string
  method: string
  auth: string | null
}

/** A registry that wants a bearer token (issued by /token) for everything. */
function bearerRegistry(init: { expiresIn?: number; user?: string; pass?: string } = {}) {
  const seen: Seen[] = []
  let issued = 0
  const manifest = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, layers: [] }),
  )
  const fetch: typeof globalThis.fetch = async (input, req) => {
    const url = new URL(String(input))
    const auth = new Headers(req?.headers).get('authorization')
    seen.push({ url: url.pathname + url.search, method: req?.method ?? 'GET', auth })
    if (url.pathname === '/token') {
      if (
        init.user !== undefined &&
        auth !== `Basic ${Buffer.from(`${init.user}:${init.pass}`).toString('base64')}`
      ) {
        return new Response('{}', { status: 401 })
      }
      issued++
      return Response.json({
        token: `tok-${issued}-${url.searchParams.get('scope') ?? ''}`,
        expires_in: init.expiresIn ?? 300,
      })
    }
    if (auth === null || !auth.startsWith('Bearer tok-')) {
      const scope = url.pathname.startsWith('/v2/a/b/') ? 'repository:a/b:pull' : ''
      return new Response(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED' }] }), {
        status: 401,
        headers: {
          'www-authenticate': `Bearer realm="http://auth.test/token",service="reg, test"${scope ? `,scope="${scope}"` : ''}`,
        },
      })
    }
    if (url.pathname === '/v2/a/b/manifests/v1') {
      return new Response(manifest, { headers: { 'content-type': MEDIA_TYPES.ociManifest } })
    }
    if (url.pathname.includes('/missing'))
      return Response.json({ errors: [{ code: 'MANIFEST_UNKNOWN' }] }, { status: 404 })
    if (url.pathname.includes('/denied')) return Response.json({}, { status: 403 })
    if (url.pathname.includes('/busy')) return Response.json({}, { status: 429 })
    if (url.pathname.includes('/broken')) return Response.json({}, { status: 500 })
    return new Response('{}', { status: 200 })
  }
  return { fetch, seen, manifest }
}

describe('registry client auth and errors', () => {
  it('fetches a token on a bearer challenge, retries once, and reuses it per scope', async () => {
    const reg = bearerRegistry()
    const client = createRegistryClient({ url: 'http://reg.test', fetch: reg.fetch })
    const m = await client.getManifest('a/b', 'v1')
    expect(m.digest).toBe(digestOf(reg.manifest))
    expect(m.mediaType).toBe(MEDIA_TYPES.ociManifest)
    expect(reg.seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      'GET /v2/a/b/manifests/v1',
      'GET /token?service=reg%2C+test&scope=repository%3Aa%2Fb%3Apull',
      'GET /v2/a/b/manifests/v1',
    ])
    // Anonymous: no credentials go to the token endpoint.
    expect(reg.seen[1]?.auth).toBeNull()
    await client.getManifest('a/b', 'v1')
    expect(reg.seen).toHaveLength(4)
    expect(reg.seen[3]?.auth).toBe('Bearer tok-1-repository:a/b:pull')
  })

  it('sends basic credentials to the token endpoint and refetches an expired token', async () => {
    let now = 0
    const reg = bearerRegistry({ user: 'u', pass: 'p', expiresIn: 60 })
    const client = createRegistryClient({
      url: 'http://reg.test',
      fetch: reg.fetch,
      username: 'u',
      password: 'p',
      tokenCache: createTokenCache({ now: () => now }),
    })
    await client.getManifest('a/b', 'v1')
    expect(reg.seen[1]?.auth).toBe(`Basic ${Buffer.from('u:p').toString('base64')}`)
    now = 60_000
    await client.getManifest('a/b', 'v1')
    expect(reg.seen.filter((s) => s.url.startsWith('/token'))).toHaveLength(2)
    const wrong = createRegistryClient({
      url: 'http://reg.test',
      fetch: reg.fetch,
      username: 'u',
      password: 'x',
    })
    await expect(wrong.getManifest('a/b', 'v1')).rejects.toMatchObject({ name: 'UnauthorizedError' })
  })

  it('answers a basic challenge with the credentials and then sends them up front', async () => {
    const seen: Array<string | null> = []
    const fetch: typeof globalThis.fetch = async (_input, req) => {
      const auth = new Headers(req?.headers).get('authorization')
      seen.push(auth)
      if (auth !== `Basic ${Buffer.from('u:p').toString('base64')}`) {
        return new Response('', { status: 401, headers: { 'www-authenticate': 'Basic realm="r"' } })
      }
      return new Response(null, { status: 200, headers: { 'content-length': '3' } })
    }
    const client = createRegistryClient({ url: 'http://reg.test', fetch, username: 'u', password: 'p' })
    await client.statBlob('a/b', digestOf('abc'))
    await client.statBlob('a/b', digestOf('abc'))
    expect(seen.map((s) => s !== null)).toEqual([false, true, true])
    const anonymous = createRegistryClient({ url: 'http://reg.test', fetch })
    await expect(anonymous.statBlob('a/b', digestOf('abc'))).rejects.toMatchObject({
      name: 'UnauthorizedError',
    })
  })

  it('maps statuses and network failures to domain errors', async () => {
    const reg = bearerRegistry()
    const client = createRegistryClient({ url: 'http://reg.test', fetch: reg.fetch, token: 'tok-static' })
    await expect(client.getManifest('x/missing', 'v1')).rejects.toMatchObject({
      name: 'ManifestUnknownError',
    })
    await expect(client.getBlob('x/missing', digestOf('a'))).rejects.toMatchObject({
      name: 'BlobUnknownError',
    })
    await expect(client.getManifest('x/denied', 'v1')).rejects.toMatchObject({ name: 'DeniedError' })
    await expect(client.getManifest('x/busy', 'v1')).rejects.toMatchObject({ name: 'TooManyRequestsError' })
    await expect(client.getManifest('x/broken', 'v1')).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 500,
    })
    await expect(client.getManifest('a/b', digestOf('other'))).rejects.toMatchObject({
      name: 'DigestMismatchError',
    })

    const refused = createRegistryClient({
      url: 'http://reg.test',
      fetch: async () => {
        throw new TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } })
      },
    })
    await expect(refused.ping()).rejects.toMatchObject({ name: 'UpstreamError', status: 502 })
    const hanging = createRegistryClient({
      url: 'http://reg.test',
      fetch: (_input, req) =>
        new Promise((_resolve, reject) =>
          req?.signal?.addEventListener('abort', () => reject(req.signal?.reason)),
        ),
    })
    await expect(hanging.ping({ signal: AbortSignal.timeout(20) })).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 504,
    })
    const controller = new AbortController()
    const aborted = hanging.ping({ signal: controller.signal })
    controller.abort()
    await expect(aborted).rejects.toMatchObject({ name: 'AbortError' })
  })
})
