import { describe, expect, it } from 'vitest'
import { createUploadTurns } from './upload-turns.js'

/** Upload turns with a 2 s hold on a clock the test moves, after an upload that took 8 s. */
function turnsAt(holdMs = 2_000) {
  const clock = { t: 0 }
  const turns = createUploadTurns<string>({ holdMs, now: () => clock.t })
  turns.ended(8_000)
  return { turns, clock }
}

describe('createUploadTurns', () => {
  it('serves whoever asks first while nobody was refused', () => {
    const { turns } = turnsAt()
    expect(turns.admit('a', 0, 2)).toBe(true)
    expect(turns.admit('b', 1, 2)).toBe(true)
    expect(turns.waiting()).toBe(0)
  })

  it('gives a freed slot to the peer it refused, not to the peer it just served', () => {
    const { turns, clock } = turnsAt()
    // 'a' holds the only slot; 'b' is refused and waits.
    expect(turns.admit('a', 0, 1)).toBe(true)
    expect(turns.admit('b', 1, 1)).toBe(false)
    expect(turns.waiting()).toBe(1)
    // 'a' is done and asks again at once: the slot is kept for 'b'.
    clock.t = 500
    expect(turns.admit('a', 0, 1)).toBe(false)
    clock.t = 1_000
    expect(turns.admit('b', 0, 1)).toBe(true)
    // Now 'a' waits its turn.
    expect(turns.waiting()).toBe(1)
    clock.t = 1_500
    expect(turns.admit('a', 0, 1)).toBe(true)
    expect(turns.waiting()).toBe(0)
  })

  it('keeps the order in which peers were refused, also when they ask again meanwhile', () => {
    const { turns, clock } = turnsAt()
    expect(turns.admit('a', 1, 1)).toBe(false)
    clock.t = 100
    expect(turns.admit('b', 1, 1)).toBe(false)
    // 'a' is refused again while still waiting: it keeps its place ahead of 'b'.
    clock.t = 1_100
    expect(turns.admit('a', 1, 1)).toBe(false)
    // One slot frees: 'b' asks first but the turn is 'a''s.
    clock.t = 1_200
    expect(turns.admit('b', 0, 1)).toBe(false)
    expect(turns.admit('a', 0, 1)).toBe(true)
    expect(turns.admit('b', 0, 1)).toBe(true)
  })

  it('gives anyone the slots beyond those the waiting peers may come back for', () => {
    const { turns } = turnsAt()
    expect(turns.admit('a', 4, 4)).toBe(false)
    expect(turns.admit('b', 4, 4)).toBe(false)
    // Two free slots and two waiting: 'c' is refused and waits too; three free and three waiting: so is 'd'.
    expect(turns.admit('c', 2, 4)).toBe(false)
    expect(turns.admit('d', 1, 4)).toBe(false)
    expect(turns.waiting()).toBe(4)
    // Eight free and four waiting: 'e' is served.
    expect(turns.admit('e', 0, 8)).toBe(true)
    // The waiting peers' places are untouched by it.
    expect(turns.admit('a', 3, 4)).toBe(true)
  })

  it('lets a claim lapse when the refused peer does not come back within the hold', () => {
    const { turns, clock } = turnsAt()
    expect(turns.admit('a', 1, 1)).toBe(false)
    clock.t = 1_999
    expect(turns.admit('b', 0, 1)).toBe(false)
    // 'a' was last refused at 0, 'b' at 1999: at 2000 only 'b' still holds a claim.
    clock.t = 2_000
    expect(turns.waiting()).toBe(1)
    expect(turns.admit('c', 0, 1)).toBe(false)
    expect(turns.admit('b', 0, 1)).toBe(true)
    // A lapsed peer that asks again queues behind those still waiting.
    clock.t = 3_000
    expect(turns.admit('a', 1, 1)).toBe(false)
    expect(turns.admit('c', 0, 1)).toBe(true)
  })

  it('keeps slots for waiting peers only while uploads take at least minUploadMs', () => {
    const clock = { t: 0 }
    const turns = createUploadTurns<string>({ holdMs: 2_000, now: () => clock.t })
    // No upload has ended yet: the first to ask gets a free slot, though 'a' waits.
    expect(turns.keeping()).toBe(false)
    expect(turns.admit('a', 1, 1)).toBe(false)
    expect(turns.admit('b', 0, 1)).toBe(true)
    // Uploads of 0.5 s: slots free often enough; still first come, first served.
    for (let i = 0; i < 20; i++) turns.ended(500)
    expect(turns.keeping()).toBe(false)
    expect(turns.admit('b', 0, 1)).toBe(true)
    // Uploads of 8 s: the average passes 2 s after a few, and 'a' (still waiting) has its turn.
    turns.ended(8_000)
    expect(turns.keeping()).toBe(false)
    for (let i = 0; i < 3; i++) turns.ended(8_000)
    expect(turns.keeping()).toBe(true)
    expect(turns.admit('b', 0, 1)).toBe(false)
    expect(turns.admit('a', 0, 1)).toBe(true)
  })

  it('with no hold serves strictly by the cap', () => {
    const { turns } = turnsAt(0)
    expect(turns.keeping()).toBe(false)
    expect(turns.admit('a', 1, 1)).toBe(false)
    expect(turns.admit('b', 0, 1)).toBe(true)
    expect(turns.waiting()).toBe(0)
  })

  it('rejects a negative hold or upload time', () => {
    expect(() => createUploadTurns({ holdMs: -1 })).toThrow(RangeError)
    expect(() => createUploadTurns({ holdMs: Number.NaN })).toThrow(RangeError)
    expect(() => createUploadTurns({ holdMs: 2_000, minUploadMs: -1 })).toThrow(RangeError)
  })
})
