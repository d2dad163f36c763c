import { describe, expect, it } from 'vitest'
import { Bitfield, type Digest } from '../../../protocol/src/index.js'
import { createFirstCopyRule, SPREAD_FRESH_MS } from './first-copy.js'

const A = `sha256:${'a'.repeat(64)}` as Digest
const B = `sha256:${'b'.repeat(64)}` as Digest

function clock(start = 1_000) {
  let t = start
  return { now: () => t, advance: (ms: number) => (t += ms) }
}

describe('first-copy rule', () => {
  it('sends a piece once, refuses it to other peers until the hold after its delivery, then sends it again', () => {
    const c = clock()
    let refusedEvents = 0
    const repeated: string[] = []
    const rule = createFirstCopyRule({
      repeatAfterMs: 5_000,
      now: c.now,
      onRefused: () => refusedEvents++,
      onRepeated: (reason) => repeated.push(reason),
    })
    expect(rule.admit(A, 0, 2, 'p1')).toBe(true)
    expect(rule.admit(A, 0, 2, 'p2')).toBe(false)
    expect(rule.admit(A, 1, 2, 'p2')).toBe(true)
    rule.delivered(A, 1)
    // While the send of piece 0 runs, it is held.
    c.advance(4_000)
    expect(rule.admit(A, 0, 2, 'p3')).toBe(false)
    rule.delivered(A, 0)
    c.advance(4_999)
    expect(rule.admit(A, 0, 2, 'p3')).toBe(false)
    c.advance(1)
    expect(rule.admit(A, 0, 2, 'p3')).toBe(true)
    expect(repeated).toEqual(['expired'])
    // The hold starts again with that send.
    expect(rule.admit(A, 0, 2, 'p1')).toBe(false)
    expect(rule.refused()).toBe(4)
    expect(refusedEvents).toBe(4)
  })

  it('holds a piece as long as the blob had been pulling when its send finished, if longer', () => {
    const c = clock()
    const rule = createFirstCopyRule({ repeatAfterMs: 5_000, now: c.now })
    expect(rule.admit(A, 0, 2, 'p1')).toBe(true)
    expect(rule.admit(A, 1, 2, 'p1')).toBe(true)
    rule.delivered(A, 0)
    // Piece 1 finishes 20 s after the blob's first send: it is held 20 s, not 5.
    c.advance(20_000)
    rule.delivered(A, 1)
    c.advance(19_999)
    expect(rule.admit(A, 1, 2, 'p2')).toBe(false)
    c.advance(1)
    expect(rule.admit(A, 1, 2, 'p2')).toBe(true)
    // Piece 0 finished at once and had the 5 s minimum, long over.
    expect(rule.admit(A, 0, 2, 'p2')).toBe(true)
  })

  it('frees a piece at once when its send broke off', () => {
    const rule = createFirstCopyRule({ repeatAfterMs: 60_000, now: clock().now })
    expect(rule.admit(A, 0, 2, 'p1')).toBe(true)
    expect(rule.admit(A, 0, 2, 'p2')).toBe(false)
    rule.failed(A, 0)
    expect(rule.admit(A, 0, 2, 'p2')).toBe(true)
    rule.delivered(A, 0)
    // A failure reported after a delivery does not free the piece.
    rule.failed(A, 0)
    expect(rule.admit(A, 0, 2, 'p3')).toBe(false)
  })

  it('sends no piece twice while some piece of the blob was never sent, however long ago', () => {
    const c = clock()
    const rule = createFirstCopyRule({ repeatAfterMs: 5_000, now: c.now })
    expect(rule.admit(A, 0, 3, 'p1')).toBe(true)
    rule.delivered(A, 0)
    c.advance(60_000)
    expect(rule.admit(A, 0, 3, 'p2')).toBe(false)
    expect(rule.admit(A, 1, 3, 'p2')).toBe(true)
    expect(rule.admit(A, 2, 3, 'p3')).toBe(true)
    // Every piece went out once: piece 0, delivered long ago, may go again.
    expect(rule.admit(A, 0, 3, 'p2')).toBe(true)
  })

  it('sends a piece again at once when the peer that got it is gone', () => {
    const connected = new Set(['p1', 'p2'])
    const repeated: string[] = []
    const rule = createFirstCopyRule({
      repeatAfterMs: 60_000,
      now: clock().now,
      isConnected: (p) => connected.has(p),
      onRepeated: (reason) => repeated.push(reason),
    })
    expect(rule.admit(A, 0, 2, 'p1')).toBe(true)
    expect(rule.admit(A, 0, 2, 'p2')).toBe(false)
    connected.delete('p1')
    expect(rule.admit(A, 0, 2, 'p2')).toBe(true)
    // Now p2 holds it, and p2 is connected.
    expect(rule.admit(A, 0, 2, 'p3')).toBe(false)
    expect(repeated).toEqual(['gone'])
  })

  it('lets the peer that got the piece ask again (a retry or a restarted agent)', () => {
    const rule = createFirstCopyRule({ repeatAfterMs: 5_000, now: clock().now })
    expect(rule.admit(A, 3, 2, 'p1')).toBe(true)
    expect(rule.admit(A, 3, 2, 'p1')).toBe(true)
    expect(rule.admit(A, 3, 2, 'p2')).toBe(false)
  })

  it('keeps blobs apart and admits everything when switched off', () => {
    const rule = createFirstCopyRule({ repeatAfterMs: 5_000, now: clock().now })
    expect(rule.admit(A, 0, 2, 'p1')).toBe(true)
    expect(rule.admit(B, 0, 2, 'p2')).toBe(true)
    const off = createFirstCopyRule({ repeatAfterMs: 0, now: clock().now })
    expect(off.admit(A, 0, 2, 'p1')).toBe(true)
    expect(off.admit(A, 0, 2, 'p2')).toBe(true)
    expect(off.refused()).toBe(0)
  })

  it('forgets the least recently asked blob beyond maxBlobs', () => {
    const rule = createFirstCopyRule({ repeatAfterMs: 5_000, maxBlobs: 1, now: clock().now })
    expect(rule.admit(A, 0, 2, 'p1')).toBe(true)
    expect(rule.admit(B, 0, 2, 'p1')).toBe(true)
    // A was forgotten, so its piece 0 counts as never sent.
    expect(rule.admit(A, 0, 2, 'p2')).toBe(true)
  })

  it('keeps holding a piece past its hold, and past its recipient leaving, while the tracker says two agents hold it', () => {
    const c = clock()
    const connected = new Set(['p1'])
    const repeated: string[] = []
    const rule = createFirstCopyRule({
      repeatAfterMs: 5_000,
      now: c.now,
      isConnected: (peer) => connected.has(peer),
      onRepeated: (reason) => repeated.push(reason),
    })
    // Said before the blob is tracked: ignored.
    rule.spread(A, Bitfield.full(2))
    expect(rule.admit(A, 0, 2, 'p1')).toBe(true)
    expect(rule.admit(A, 1, 2, 'p1')).toBe(true)
    rule.delivered(A, 0)
    rule.delivered(A, 1)
    const piece0 = new Bitfield(2)
    piece0.set(0)
    rule.spread(A, piece0)
    c.advance(6_000)
    // Past the hold: piece 0 is spread and stays held; piece 1 is not and goes again.
    expect(rule.admit(A, 0, 2, 'p2')).toBe(false)
    expect(rule.admit(A, 1, 2, 'p2')).toBe(true)
    // Its recipient gone: still held while spread.
    connected.delete('p1')
    expect(rule.admit(A, 0, 2, 'p3')).toBe(false)
    expect(repeated).toEqual(['expired'])
    // A word older than SPREAD_FRESH_MS no longer counts: the recipient is gone, so it goes.
    c.advance(SPREAD_FRESH_MS - 6_000 + 1)
    expect(rule.admit(A, 0, 2, 'p3')).toBe(true)
    expect(repeated).toEqual(['expired', 'gone'])
    // A fresh word that names no piece ends the spread at once (p3, not connected either,
    // holds no hold).
    rule.delivered(A, 0)
    rule.spread(A, piece0)
    c.advance(6_000)
    expect(rule.admit(A, 0, 2, 'p4')).toBe(false)
    rule.spread(A, undefined)
    expect(rule.admit(A, 0, 2, 'p4')).toBe(true)
  })
})
