import { describe, expect, it } from 'vitest'
import { parseWwwAuthenticate } from './www-authenticate.js'

describe('parseWwwAuthenticate', () => {
  it('parses a Docker bearer challenge with a scope containing commas', () => {
    const [c, ...rest] = parseWwwAuthenticate(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push"',
    )
    expect(rest).toEqual([])
    expect(c).toEqual({
      scheme: 'bearer',
      params: {
        realm: 'https://auth.docker.io/token',
        service: 'registry.docker.io',
        scope: 'repository:library/busybox:pull,push',
      },
    })
  })

  it('parses several challenges, unquoted values, spaces and escapes', () => {
    const cs = parseWwwAuthenticate(
      'Basic realm="a \\"quoted\\", realm", Bearer realm=https://t/token , service=svc,error="invalid_token"',
    )
    expect(cs.map((c) => c.scheme)).toEqual(['basic', 'bearer'])
    expect(cs[0]?.params.realm).toBe('a "quoted", realm')
    expect(cs[1]?.params).toEqual({ realm: 'https://t/token', service: 'svc', error: 'invalid_token' })
  })

  it('lower-cases scheme and parameter names but keeps values', () => {
    const [c] = parseWwwAuthenticate('BEARER Realm="R",SCOPE="Repository:X:pull"')
    expect(c?.scheme).toBe('bearer')
    expect(c?.params).toEqual({ realm: 'R', scope: 'Repository:X:pull' })
  })

  it('reads token68 and bare schemes', () => {
    const cs = parseWwwAuthenticate('Negotiate abc+/def==, NTLM, Basic realm="x"')
    expect(cs).toEqual([
      { scheme: 'negotiate', params: {}, token68: 'abc+/def==' },
      { scheme: 'ntlm', params: {} },
      { scheme: 'basic', params: { realm: 'x' } },
    ])
  })

  it('does not throw on garbage and keeps what it can read', () => {
    expect(parseWwwAuthenticate(undefined)).toEqual([])
    expect(parseWwwAuthenticate('')).toEqual([])
    expect(parseWwwAuthenticate('Bearer realm="unterminated')[0]?.params.realm).toBe('unterminated')
    const cs = parseWwwAuthenticate('"junk" Bearer realm="r" @@, service="s"')
    const bearer = cs.find((c) => c.scheme === 'bearer')
    expect(bearer?.params).toEqual({ realm: 'r', service: 's' })
  })
})
