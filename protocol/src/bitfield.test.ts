import { describe, expect, it } from 'vitest'
import { Bitfield, MAX_BITFIELD_BITS } from './bitfield.js'
import { pseudoRandomBytes } from './testing/fixtures.js'

describe('Bitfield', () => {
  it('sets, gets, counts and round-trips', () => {
    const b = new Bitfield(13)
    b.set(0)
    b.set(12)
    b.set(12)
    expect(b.get(0)).toBe(true)
    expect(b.get(1)).toBe(false)
    expect(b.count()).toBe(2)
    expect([...b.indexes()]).toEqual([0, 12])
    expect(b.encode()).toEqual(Uint8Array.of(0x80, 0x08))
    const c = Bitfield.fromBase64(b.toBase64(), 13)
    expect([...c.indexes()]).toEqual([0, 12])
    expect(c.count()).toBe(2)
    c.unset(0)
    expect(c.count()).toBe(1)
    expect(b.count()).toBe(2)
    expect(Bitfield.full(13).isComplete()).toBe(true)
    expect(() => b.get(13)).toThrow(RangeError)
  })
  it('rejects bad encodings with DecodeError', () => {
    expect(() => Bitfield.decode(Uint8Array.of(0x80), 13)).toThrow(
      expect.objectContaining({ name: 'DecodeError' }),
    )
    expect(() => Bitfield.decode(Uint8Array.of(0x80, 0x04), 13)).toThrow(
      expect.objectContaining({ name: 'DecodeError' }),
    )
    expect(() => Bitfield.decode(new Uint8Array(0), MAX_BITFIELD_BITS + 1)).toThrow(
      expect.objectContaining({ name: 'DecodeError' }),
    )
    expect(() => Bitfield.fromBase64('***', 8)).toThrow(expect.objectContaining({ name: 'DecodeError' }))
    for (let seed = 1; seed < 100; seed++) {
      const bytes = pseudoRandomBytes(seed % 9, seed)
      try {
        const b = Bitfield.decode(bytes, seed % 70)
        expect(b.encode()).toEqual(bytes)
      } catch (err) {
        expect((err as Error).name).toBe('DecodeError')
      }
    }
  })
})
