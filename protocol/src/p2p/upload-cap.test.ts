import { describe, expect, it } from 'vitest'
import { createUploadCap } from './upload-cap.js'

const KIB = 1024
const PIECE = 256 * KIB

/** An upload cap on a clock the test moves. */
function capAt(init: { max?: number; min?: number; targetPieceMs?: number } = {}) {
  let t = 0
  const cap = createUploadCap({ max: 16, targetPieceMs: 2000, now: () => t, ...init })
  return {
    cap,
    /** Sends `bytesPerSecond` for `seconds`, in 100 ms steps. */
    upload(bytesPerSecond: number, seconds: number): void {
      for (let i = 0; i < seconds * 10; i++) {
        cap.sent(bytesPerSecond / 10, PIECE)
        t += 100
      }
    },
    wait(ms: number): void {
      t += ms
    },
  }
}

describe('createUploadCap', () => {
  it('allows the most uploads until something was sent', () => {
    expect(capAt().cap.current()).toBe(16)
  })

  it('sizes the cap by the rate reached: a 2 Mbit/s uplink gets the floor, 20 Mbit/s 8 uploads, 100 Mbit/s the most', () => {
    const slow = capAt()
    slow.upload(250_000, 3)
    expect(slow.cap.rate()).toBeCloseTo(250_000, -3)
    // 250 kB/s sends 1.9 pieces of 256 KiB in 2 s: below the floor of 4.
    expect(slow.cap.current()).toBe(4)
    const mid = capAt()
    mid.upload(1_100_000, 3)
    // 2.2 MB in 2 s is 8.4 pieces.
    expect(mid.cap.current()).toBe(8)
    const fast = capAt()
    fast.upload(12_500_000, 3)
    expect(fast.cap.current()).toBe(16)
  })

  it('follows a rate that grows at once, and one that falls only once the better windows are past', () => {
    const c = capAt()
    c.upload(1_100_000, 2)
    expect(c.cap.current()).toBe(8)
    c.upload(2_000_000, 2)
    expect(c.cap.current()).toBe(15)
    // A slow stretch: the best of the last ten seconds still holds...
    c.upload(250_000, 5)
    expect(c.cap.current()).toBe(15)
    // ...until it is more than ten windows old.
    c.upload(250_000, 6)
    expect(c.cap.current()).toBe(4)
  })

  it('forgets a rate once nothing was sent for ten windows', () => {
    const c = capAt()
    c.upload(250_000, 2)
    expect(c.cap.current()).toBe(4)
    c.wait(11_000)
    expect(c.cap.rate()).toBe(0)
    expect(c.cap.current()).toBe(16)
  })

  it('keeps to its bounds, and a target of 0 switches it off', () => {
    const low = capAt({ min: 2 })
    low.upload(100_000, 2)
    expect(low.cap.current()).toBe(2)
    const small = capAt({ max: 3 })
    small.upload(100_000, 2)
    // The floor is never above the most.
    expect(small.cap.current()).toBe(3)
    const off = capAt({ targetPieceMs: 0 })
    off.upload(100_000, 2)
    expect(off.cap.current()).toBe(16)
    expect(() => createUploadCap({ max: 0, targetPieceMs: 1000 })).toThrow(RangeError)
    expect(() => createUploadCap({ max: 4, targetPieceMs: -1 })).toThrow(RangeError)
  })
})
