import { describe, expect, it } from 'vitest'
import { type Digest, digestOf } from '../../../protocol/src/index.js'
import { createContentCache } from './content-cache.js'

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)
const d = (text: string): Digest => digestOf(bytes(text))

describe('createContentCache', () => {
  it('returns what was set and nothing for unknown or deleted digests', () => {
    const cache = createContentCache({ maxBytes: 100, maxEntryBytes: 50 })
    cache.set(d('a'), bytes('a'))
    expect(cache.get(d('a'))).toEqual(bytes('a'))
    expect(cache.get(d('b'))).toBeUndefined()
    cache.delete(d('a'))
    expect(cache.get(d('a'))).toBeUndefined()
    expect(cache.bytes).toBe(0)
  })

  it('evicts the least recently used entries to stay within its budget', () => {
    const cache = createContentCache({ maxBytes: 30, maxEntryBytes: 30 })
    const ten = (c: string) => bytes(c.repeat(10))
    cache.set(d('x'), ten('x'))
    cache.set(d('y'), ten('y'))
    cache.set(d('z'), ten('z'))
    cache.get(d('x')) // x is now more recent than y
    cache.set(d('w'), ten('w'))
    expect(cache.get(d('y'))).toBeUndefined()
    expect(cache.get(d('x'))).toEqual(ten('x'))
    expect(cache.get(d('z'))).toEqual(ten('z'))
    expect(cache.get(d('w'))).toEqual(ten('w'))
    expect(cache.bytes).toBe(30)
  })

  it('does not keep content larger than an entry may be, and counts a re-set once', () => {
    const cache = createContentCache({ maxBytes: 100, maxEntryBytes: 5 })
    cache.set(d('big'), bytes('0123456789'))
    expect(cache.get(d('big'))).toBeUndefined()
    cache.set(d('s'), bytes('s'))
    cache.set(d('s'), bytes('s'))
    expect(cache.bytes).toBe(1)
  })
})
