import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../protocol/src/index.js'
import { parseListenAddress, parseRegistryConfig } from './config.js'

function problemsOf(raw: unknown): string[] {
  try {
    parseRegistryConfig(raw)
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return (err as ConfigError).problems
  }
  throw new Error('expected a ConfigError')
}

describe('parseRegistryConfig', () => {
  it('fills every default from an empty input', () => {
    const config = parseRegistryConfig({})
    expect(config).toEqual({
      listen: '127.0.0.1:5000',
      dataDir: '.shoal/registry',
      storageDriver: 'filesystem',
      maxManifestBytes: 4 * 1024 * 1024,
      uploadTtlMs: 86_400_000,
      gcIntervalMs: 3_600_000,
      gcGraceMs: 3_600_000,
      upstreams: [],
      tagTtlMs: 60_000,
      logLevel: 'info',
      seed: {
        enabled: true,
        lane: true,
        lanePort: 0,
        listen: ['/ip4/127.0.0.1/tcp/0'],
        announce: [],
        uploadBytesPerSecond: 0,
        maxConcurrentUploads: 16,
        repeatPieceAfterMs: 180_000,
        bootstrap: [],
        allowPeers: [],
        reprovideIntervalMs: 21_600_000,
      },
      events: {
        webhookUrls: [],
        webhookEvents: ['push', 'pull', 'delete', 'preheat'],
        webhookMaxAttempts: 6,
        webhookInitialBackoffMs: 500,
        webhookMaxBackoffMs: 30_000,
        preheatRules: [],
      },
    })
    expect(parseRegistryConfig(undefined)).toEqual(config)
  })

  it('keeps given values and upstreams', () => {
    const config = parseRegistryConfig({
      listen: '[::1]:0',
      storageDriver: 'memory',
      upstreams: [{ url: 'http://127.0.0.1:5555', prefix: 'docker.io', username: 'u', password: 'p' }],
    })
    expect(config.listen).toBe('[::1]:0')
    expect(config.storageDriver).toBe('memory')
    expect(config.upstreams).toEqual([
      { url: 'http://127.0.0.1:5555', prefix: 'docker.io', username: 'u', password: 'p' },
    ])
  })

  it('reports every problem at once, each with its path', () => {
    const problems = problemsOf({
      listen: 'nowhere',
      storageDriver: 's3',
      maxManifestBytes: -1,
      gcIntervalMs: 'soon',
      upstreams: [{ url: 'ftp://x' }, { prefix: 'a' }],
      logLevel: 'loud',
      colour: 'blue',
    })
    const paths = problems.map((p) => p.slice(0, p.indexOf(':')))
    expect(paths.sort()).toEqual(
      [
        '(root)',
        'gcIntervalMs',
        'listen',
        'logLevel',
        'maxManifestBytes',
        'storageDriver',
        'upstreams.0.url',
        'upstreams.1.url',
      ].sort(),
    )
    expect(problems.find((p) => p.startsWith('(root)'))).toContain('colour')
  })

  it('checks the upstream list as a whole', () => {
    const problems = problemsOf({
      upstreams: [
        { url: 'http://127.0.0.1:1' },
        { url: 'http://127.0.0.1:2' },
        { url: 'http://127.0.0.1:3', prefix: 'Bad Prefix' },
        { url: 'http://127.0.0.1:4', prefix: 'hub' },
        { url: 'http://127.0.0.1:5', prefix: 'hub', username: 'only-me' },
      ],
    })
    expect(problems).toEqual([
      expect.stringMatching(/^upstreams\.1: at most one upstream may have no prefix/),
      expect.stringMatching(/^upstreams\.2\.prefix: .*not a repository name prefix/),
      expect.stringMatching(/^upstreams\.4\.prefix: .*used twice/),
      expect.stringMatching(/^upstreams\.4: give both username and password/),
    ])
  })

  it('rejects a port above 65535', () => {
    expect(problemsOf({ listen: '127.0.0.1:70000' })).toHaveLength(1)
  })
})

describe('parseListenAddress', () => {
  it('splits host and port, IPv6 in brackets', () => {
    expect(parseListenAddress('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 })
    expect(parseListenAddress('localhost:5000')).toEqual({ host: 'localhost', port: 5000 })
    expect(parseListenAddress('[::1]:8080')).toEqual({ host: '::1', port: 8080 })
    expect(parseListenAddress('::1:8080')).toBeUndefined()
    expect(parseListenAddress('127.0.0.1')).toBeUndefined()
    expect(parseListenAddress(':5000')).toBeUndefined()
  })
})
