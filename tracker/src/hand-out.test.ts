import { describe, expect, it } from 'vitest'
import { grantsOriginSlot, type HandOutCandidate, handOut, wantsOrigin } from './hand-out.js'

function seeded(seed: number): () => number {
  let x = seed
  return () => {
    x = (x * 1103515245 + 12345) % 2 ** 31
    return x / 2 ** 31
  }
}

const peer = (peerId: string, over: Partial<HandOutCandidate> = {}): HandOutCandidate => ({
  peerId,
  complete: false,
  uploadLoad: 0,
  ...over,
})

describe('handOut', () => {
  it('orders complete, then same zone, then least loaded, and leaves out the asker', () => {
    const candidates = [
      peer('partial-far', { zone: 'b', piecesHeld: 3 }),
      peer('partial-near-busy', { zone: 'a', uploadLoad: 5, piecesHeld: 3 }),
      peer('partial-near-idle', { zone: 'a', uploadLoad: 1, piecesHeld: 3 }),
      peer('empty-near', { zone: 'a', piecesHeld: 0 }),
      peer('complete-far', { complete: true, zone: 'b' }),
      peer('complete-near', { complete: true, zone: 'a', uploadLoad: 9 }),
      peer('me', { complete: true, zone: 'a' }),
    ]
    const out = handOut(candidates, { peerId: 'me', zone: 'a' }, { max: 10, random: seeded(1) })
    expect(out.map((p) => p.peerId)).toEqual([
      'complete-near',
      'complete-far',
      'partial-near-idle',
      'partial-near-busy',
      'partial-far',
      'empty-near',
    ])
    expect(candidates).toHaveLength(7)
    expect(handOut(candidates, { peerId: 'me', zone: 'a' }, { max: 2 }).map((p) => p.peerId)).toEqual([
      'complete-near',
      'complete-far',
    ])
  })
  it('is random among equals, so every equal peer gets handed out', () => {
    const candidates = Array.from({ length: 20 }, (_, i) => peer(`p${i}`, { complete: true }))
    const seen = new Set<string>()
    const random = seeded(7)
    for (let i = 0; i < 50; i++) {
      for (const p of handOut(candidates, { peerId: 'x' }, { max: 3, random })) seen.add(p.peerId)
    }
    expect(seen.size).toBe(20)
  })
  it('handles empty input and max 0', () => {
    expect(handOut([], { peerId: 'x' }, { max: 5 })).toEqual([])
    expect(handOut([peer('a')], { peerId: 'x' }, { max: 0 })).toEqual([])
  })
})

describe('wantsOrigin', () => {
  it('is true only for a partial ordinary peer that does not decline', () => {
    expect(wantsOrigin({ role: 'peer', state: 'partial' })).toBe(true)
    expect(wantsOrigin({ role: 'peer', state: 'partial', wantsSeed: false })).toBe(false)
    expect(wantsOrigin({ role: 'peer', state: 'complete' })).toBe(false)
    expect(wantsOrigin({ role: 'seed', state: 'partial' })).toBe(false)
    expect(wantsOrigin({ role: 'peer', state: 'partial', event: 'stopped' })).toBe(false)
  })
})

describe('grantsOriginSlot', () => {
  it('keeps a held slot, and grants a new one only below the limit', () => {
    expect(grantsOriginSlot(false, 0, 2)).toBe(true)
    expect(grantsOriginSlot(false, 1, 2)).toBe(true)
    expect(grantsOriginSlot(false, 2, 2)).toBe(false)
    // A holder keeps its slot even when the limit was lowered below what is held.
    expect(grantsOriginSlot(true, 3, 2)).toBe(true)
    expect(grantsOriginSlot(false, 0, 0)).toBe(false)
  })
})
