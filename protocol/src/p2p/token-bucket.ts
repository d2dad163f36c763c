/**
 * A token bucket for byte rates: tokens refill at `ratePerSecond` up to `burst`; a take
 * larger than what is left runs the bucket into debt and waits it off, so large writes
 * (1 MiB) pass at the configured rate without splitting them.
 */
import { sleep } from '../abort.js'

/** Limits a byte rate; shared by every upload of a node. */
export interface TokenBucket {
  /** Waits until `n` tokens may be spent; rejects when `signal` aborts. */
  take(n: number, options?: { signal?: AbortSignal }): Promise<void>
}

/** Options for createTokenBucket. */
export interface TokenBucketInit {
  /** Refill rate; 0 or undefined means unlimited. */
  ratePerSecond?: number
  /** Bucket size. @default one second of rate */
  burst?: number
  /** Clock in ms, for tests. @default performance.now */
  now?: () => number
}

/** Creates a token bucket; with no rate it never waits. */
export function createTokenBucket(init: TokenBucketInit = {}): TokenBucket {
  const rate = init.ratePerSecond ?? 0
  if (!(rate > 0)) return { take: async () => {} }
  const burst = init.burst ?? rate
  const now = init.now ?? (() => performance.now())
  let tokens = burst
  let last = now()
  return {
    async take(n, options = {}) {
      options.signal?.throwIfAborted()
      const t = now()
      tokens = Math.min(burst, tokens + ((t - last) / 1000) * rate)
      last = t
      tokens -= n
      if (tokens < 0) await sleep((-tokens / rate) * 1000, options.signal)
    },
  }
}
