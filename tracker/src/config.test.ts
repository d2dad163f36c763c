import { describe, expect, it } from 'vitest'
import { parseTrackerConfig } from './config.js'

describe('parseTrackerConfig', () => {
  it('fills in defaults', () => {
    expect(parseTrackerConfig(undefined)).toEqual({
      listen: '127.0.0.1:7070',
      store: { type: 'memory', keyPrefix: 'shoal:tracker:' },
      announceIntervalMs: 10_000,
      peerTtlMs: 35_000,
      maxPeersPerAnswer: 30,
      originSlotsPerSwarm: 8,
      exclusiveOriginSlots: false,
      badPeerReporters: 2,
      badPeerBanMs: 600_000,
      seedPeerIds: [],
      logLevel: 'info',
      preheat: {
        maxConcurrentJobs: 4,
        heartbeatIntervalMs: 5_000,
        jobTimeoutMs: 1_800_000,
        retainFinishedJobs: 200,
      },
    })
  })
  it('accepts a Redis store', () => {
    const c = parseTrackerConfig({
      listen: '[::1]:0',
      store: { type: 'redis', redisUrl: 'redis://127.0.0.1:6379/1' },
    })
    expect(c.store).toEqual({
      type: 'redis',
      redisUrl: 'redis://127.0.0.1:6379/1',
      keyPrefix: 'shoal:tracker:',
    })
  })
  it('lists every problem at once', () => {
    try {
      parseTrackerConfig({
        listen: 'nowhere',
        store: { type: 'redis', bogus: 1 },
        maxPeersPerAnswer: 0,
        logLevel: 'loud',
        extra: true,
      })
      expect.unreachable()
    } catch (err) {
      expect((err as Error).name).toBe('ConfigError')
      const problems = (err as { problems: string[] }).problems
      expect(problems.some((p) => p.startsWith('listen:'))).toBe(true)
      expect(problems.some((p) => p.startsWith('store:') && p.includes('bogus'))).toBe(true)
      expect(problems.some((p) => p.startsWith('maxPeersPerAnswer:'))).toBe(true)
      expect(problems.some((p) => p.startsWith('logLevel:'))).toBe(true)
      expect(problems.some((p) => p.includes('extra'))).toBe(true)
    }
  })
  it('checks settings against each other', () => {
    expect(() => parseTrackerConfig({ peerTtlMs: 5000, announceIntervalMs: 5000 })).toThrow(/peerTtlMs/)
    expect(() => parseTrackerConfig({ store: { type: 'redis' } })).toThrow(/store.redisUrl/)
  })
})
