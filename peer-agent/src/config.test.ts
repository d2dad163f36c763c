import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../protocol/src/index.js'
import { parseAgentConfig } from './config.js'

describe('parseAgentConfig', () => {
  it('fills in defaults', () => {
    const config = parseAgentConfig(undefined)
    expect(config.listen).toBe('127.0.0.1:5001')
    expect(config.registryUrl).toBe('http://127.0.0.1:5000')
    expect(config.upstreams).toEqual([])
    expect(config.authCacheTtlMs).toBe(60_000)
    expect(config.trackerUrl).toBeUndefined()
    expect(config.p2pLane).toBe(true)
    expect(config.p2pLanePort).toBe(0)
    expect(config.swarmMaxPeers).toBe(16)
  })

  it('accepts upstream mappings, with `prefix` as the CLI form of `host`', () => {
    const config = parseAgentConfig({
      upstreams: [
        { prefix: 'docker.io', url: 'https://registry-1.docker.io', username: 'u', password: 'p' },
        { host: '127.0.0.1:5000', url: 'http://127.0.0.1:5000' },
      ],
    })
    expect(config.upstreams.map((u) => u.host)).toEqual(['docker.io', '127.0.0.1:5000'])
    expect(config.upstreams[0]?.username).toBe('u')
  })

  it('reports every problem at once', () => {
    let error: unknown
    try {
      parseAgentConfig({
        listen: 'nope',
        registryUrl: 'ftp://x',
        cacheQuotaBytes: -1,
        upstreams: [
          { host: 'Docker IO', url: 'https://a' },
          { host: 'ghcr.io', url: 'https://b', username: 'only' },
          { host: 'ghcr.io', url: 'https://c' },
        ],
        allowPeers: ['not a peer id!'],
        zone: 'bad zone',
        swarmMaxPeers: 0,
        p2pLanePort: 70_000,
        surprise: true,
      })
    } catch (err) {
      error = err
    }
    expect(error).toBeInstanceOf(ConfigError)
    const problems = (error as ConfigError).problems
    for (const path of [
      'listen:',
      'registryUrl:',
      'cacheQuotaBytes:',
      'upstreams.0.host:',
      'upstreams.1:',
      'upstreams.2.host:',
      'allowPeers.0:',
      'zone:',
      'swarmMaxPeers:',
      'p2pLanePort:',
      '(root): unknown setting surprise',
    ]) {
      expect(
        problems.some((p) => p.startsWith(path)),
        `${path} in ${problems.join('; ')}`,
      ).toBe(true)
    }
  })
})
