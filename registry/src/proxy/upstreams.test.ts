import { describe, expect, it } from 'vitest'
import { createUpstreamRouter, validateUpstreams } from './upstreams.js'

describe('upstream router', () => {
  it('maps by the longest prefix, strips it, and sends the rest to the catch-all', () => {
    const router = createUpstreamRouter(
      [
        { url: 'https://registry-1.docker.io', prefix: 'hub' },
        { url: 'https://ghcr.io', prefix: 'gh' },
        { url: 'https://quay.io', prefix: 'gh/special' },
        { url: 'http://127.0.0.1:5000' },
      ],
      (u) => u.url,
    )
    expect(router.resolve('hub/library/busybox')).toMatchObject({
      value: 'https://registry-1.docker.io',
      remoteRepository: 'library/busybox',
    })
    // Docker Hub keeps official images under library/.
    expect(router.resolve('hub/busybox')?.remoteRepository).toBe('library/busybox')
    expect(router.resolve('gh/special/x')).toMatchObject({ value: 'https://quay.io', remoteRepository: 'x' })
    expect(router.resolve('gh/org/app')).toMatchObject({
      value: 'https://ghcr.io',
      remoteRepository: 'org/app',
    })
    expect(router.resolve('hubx/app')).toMatchObject({
      value: 'http://127.0.0.1:5000',
      remoteRepository: 'hubx/app',
    })
    expect(router.resolve('hub')).toMatchObject({ value: 'http://127.0.0.1:5000', remoteRepository: 'hub' })
  })

  it('leaves unmatched repositories local without a catch-all', () => {
    const router = createUpstreamRouter([{ url: 'https://ghcr.io', prefix: 'gh' }], () => 1)
    expect(router.resolve('team/app')).toBeUndefined()
    expect(router.resolve('gh/a')?.remoteRepository).toBe('a')
  })

  it('reports every configuration problem at once', () => {
    let problems: string[] = []
    try {
      validateUpstreams([
        { url: 'ftp://x' },
        { url: 'not a url', prefix: 'Bad Prefix' },
        { url: 'https://a', prefix: 'p', username: 'u' },
        { url: 'https://b', prefix: 'p' },
        { url: 'https://c' },
      ])
    } catch (err) {
      expect((err as Error).name).toBe('ConfigError')
      problems = (err as { problems: string[] }).problems
    }
    expect(problems).toHaveLength(6)
  })
})
