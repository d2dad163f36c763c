import { afterEach, describe, expect, it, vi } from 'vitest'
import { createTokenBucket } from './token-bucket.js'

describe('token bucket', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('lets a burst through, then holds takes back to the rate', async () => {
    vi.useFakeTimers()
    const bucket = createTokenBucket({ ratePerSecond: 1000, burst: 1000, now: () => Date.now() })
    await bucket.take(1000)
    let done = false
    const second = bucket.take(500).then(() => {
      done = true
    })
    await vi.advanceTimersByTimeAsync(499)
    expect(done).toBe(false)
    await vi.advanceTimersByTimeAsync(2)
    await second
    expect(done).toBe(true)
    // Debt from a take larger than the bucket is waited off in full.
    let big = false
    const third = bucket.take(3000).then(() => {
      big = true
    })
    await vi.advanceTimersByTimeAsync(2900)
    expect(big).toBe(false)
    await vi.advanceTimersByTimeAsync(200)
    await third
    expect(big).toBe(true)
  })

  it('never waits without a rate and rejects an aborted wait', async () => {
    await createTokenBucket().take(1e12)
    const bucket = createTokenBucket({ ratePerSecond: 1 })
    await bucket.take(1)
    const controller = new AbortController()
    const waiting = bucket.take(1000, { signal: controller.signal })
    controller.abort(new Error('stopped'))
    await expect(waiting).rejects.toThrow('stopped')
  })
})
