import { describe, expect, it } from 'vitest'
import { createUpstreamResolver } from './resolver.js'

describe('createUpstreamResolver', () => {
  it('maps listed hosts to their upstream and every other host to the seed', () => {
    const resolver = createUpstreamResolver({
      seedUrl: 'http://127.0.0.1:5000',
      upstreams: [{ host: 'docker.io', url: 'https://user:p%40ss@mirror.example/ignored' }],
    })
    expect(resolver.seedHost).toBe('127.0.0.1:5000')
    const hub = resolver.resolve('docker.io')
    expect(hub).toMatchObject({ origin: 'upstream', url: 'https://mirror.example', hasCredentials: true })
    expect(hub.repository('library/x')).toBe('library/x')
    for (const host of ['127.0.0.1:5000', 'ghcr.io']) {
      const seed = resolver.resolve(host)
      expect(seed).toMatchObject({ origin: 'seed', url: 'http://127.0.0.1:5000', hasCredentials: false })
      expect(seed.repository('a/b')).toBe('a/b')
    }
  })

  it('asks the seed for <host>/<name> when it is a pull-through cache with host prefixes', () => {
    const resolver = createUpstreamResolver({ seedUrl: 'http://127.0.0.1:5000', seedNamePrefix: true })
    expect(resolver.resolve('docker.io').repository('library/x')).toBe('docker.io/library/x')
    expect(resolver.resolve('127.0.0.1:5000').repository('library/x')).toBe('library/x')
  })

  it("passes a client's Authorization through only when it has no credentials of its own", async () => {
    const seen: Array<string | null> = []
    const fakeFetch: typeof fetch = async (_input, init) => {
      seen.push(new Headers(init?.headers).get('authorization'))
      return new Response(null, { status: 200, headers: { 'content-length': '3' } })
    }
    const resolver = createUpstreamResolver({
      seedUrl: 'http://127.0.0.1:5000',
      upstreams: [{ host: 'corp.example', url: 'http://corp.example', username: 'agent', password: 'pw' }],
      fetch: fakeFetch,
    })
    const digest = `sha256:${'a'.repeat(64)}`
    await resolver.resolve('ghcr.io').client('Bearer client-token').statBlob('x/y', digest)
    await resolver.resolve('corp.example').client('Bearer client-token').statBlob('x/y', digest)
    expect(seen).toEqual(['Bearer client-token', null])
  })
})
