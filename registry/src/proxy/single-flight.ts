/**
 * Single-flight: concurrent calls with the same key share one execution and its
 * result; the key is free again as soon as that execution settles.
 */

/** Runs work once per key at a time. */
export interface SingleFlight<T> {
  /** Runs `fn` unless a call with `key` is in flight, in which case it joins that call. */
  run(key: string, fn: () => Promise<T>): Promise<T>
  /** The in-flight promise for `key`, if any. */
  get(key: string): Promise<T> | undefined
  /** Number of calls in flight. */
  readonly size: number
}

/** Creates a single-flight group. */
export function createSingleFlight<T>(): SingleFlight<T> {
  const inFlight = new Map<string, Promise<T>>()
  return {
    run(key, fn) {
      const existing = inFlight.get(key)
      if (existing !== undefined) return existing
      const p = (async () => fn())().finally(() => {
        if (inFlight.get(key) === p) inFlight.delete(key)
      })
      inFlight.set(key, p)
      return p
    },
    get(key) {
      return inFlight.get(key)
    },
    get size() {
      return inFlight.size
    },
  }
}

export { raceSignal } from '../../../protocol/src/abort.js'
