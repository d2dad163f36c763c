import { describe, expect, it } from 'vitest'
import { createTokenCache } from './token-cache.js'

describe('createTokenCache', () => {
  it('hands a token out until shortly before it expires', () => {
    let now = 1_000_000
    const cache = createTokenCache({ now: () => now })
    cache.set('repository:a:pull', 'tok', { expiresInSec: 300 })
    expect(cache.get('repository:a:pull')).toBe('tok')
    expect(cache.get('repository:b:pull')).toBeUndefined()
    now += 289_000
    expect(cache.get('repository:a:pull')).toBe('tok')
    // 10 s margin before the 300 s lifetime ends.
    now += 1_000
    expect(cache.get('repository:a:pull')).toBeUndefined()
  })

  it('uses a 60 s default lifetime and a 10% margin for short tokens', () => {
    let now = 0
    const cache = createTokenCache({ now: () => now })
    cache.set('s', 't')
    now = 53_999
    expect(cache.get('s')).toBe('t')
    now = 54_000
    expect(cache.get('s')).toBeUndefined()
    cache.set('short', 'x', { expiresInSec: 10 })
    now += 8_999
    expect(cache.get('short')).toBe('x')
    now += 1
    expect(cache.get('short')).toBeUndefined()
  })

  it('counts from issued_at when it lies in the past, never from a future one', () => {
    const now = Date.parse('2026-01-01T00:10:00Z')
    const cache = createTokenCache({ now: () => now })
    cache.set('old', 'a', { expiresInSec: 300, issuedAt: '2026-01-01T00:00:00Z' })
    expect(cache.get('old')).toBeUndefined()
    cache.set('recent', 'b', { expiresInSec: 300, issuedAt: '2026-01-01T00:08:00Z' })
    expect(cache.get('recent')).toBe('b')
    const later = createTokenCache({ now: () => now + 285_000 })
    later.set('future', 'c', { expiresInSec: 300, issuedAt: '2026-01-01T01:00:00Z' })
    // Counted from the local clock, so the token is still good 285 s after now...
    expect(later.get('future')).toBe('c')
  })

  it('ignores a bad issued_at, replaces and deletes tokens, and evicts the oldest', () => {
    let now = 0
    const cache = createTokenCache({ now: () => now, maxEntries: 2 })
    cache.set('a', '1', { issuedAt: 'not a date', expiresInSec: 100 })
    expect(cache.get('a')).toBe('1')
    cache.set('a', '2', { expiresInSec: 100 })
    expect(cache.get('a')).toBe('2')
    cache.set('b', '3', { expiresInSec: 100 })
    cache.set('c', '4', { expiresInSec: 100 })
    expect(cache.size).toBe(2)
    expect(cache.get('a')).toBeUndefined()
    cache.delete('b')
    expect(cache.get('b')).toBeUndefined()
    expect(cache.get('c')).toBe('4')
    now = 1e12
    expect(cache.get('c')).toBeUndefined()
    cache.clear()
    expect(cache.size).toBe(0)
  })
})
