import { setMaxListeners } from 'node:events'

/**
 * Waits for `p` under `signal`: rejects with the signal's reason as soon as it aborts,
 * while `p` itself runs on (for work that others share, such as one in-flight fetch
 * several callers wait for). Without a signal it is `p`. A rejection of `p` after the
 * signal won is the caller's no longer and is not reported as unhandled, also when the
 * signal had aborted before the call: a promise built for the race alone (a
 * `Promise.race` of a connect and a timer) has no other handler, and its late rejection
 * would end the process (an agent of the N = 50 testbed, docs/BENCHMARKS.md, cluster,
 * fourteenth round).
 */
export function raceSignal<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p
  if (signal.aborted) {
    p.catch(() => {})
    return Promise.reject(signal.reason)
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(e)
      },
    )
  })
}

/**
 * Aborts `controller` when `parent` aborts, with the parent's reason (at once when it
 * already has), and returns the function that lets go of the parent again. What
 * `AbortSignal.any([parent, controller.signal])` does, with one listener that can be
 * removed when the work is done instead of a dependant the GC has to untangle.
 */
export function followSignal(controller: AbortController, parent: AbortSignal | undefined): () => void {
  if (parent === undefined) return () => {}
  if (parent.aborted) {
    controller.abort(parent.reason)
    return () => {}
  }
  const onAbort = (): void => controller.abort(parent.reason)
  parent.addEventListener('abort', onAbort, { once: true })
  return () => parent.removeEventListener('abort', onAbort)
}

/** A signal with a deadline; see deadlineSignal. */
export interface Deadline {
  readonly signal: AbortSignal
  /** True when the deadline, not the parent, aborted the signal. */
  timedOut(): boolean
  /** Restarts the clock: the deadline is `ms` from now (no effect once it has passed). */
  refresh(): void
  /** Stops the timer and lets go of the parent; call it when the work is done. */
  dispose(): void
}

/**
 * A signal that aborts when `parent` does, with its reason, or `ms` from now, with a
 * DOMException named TimeoutError as AbortSignal.timeout gives. It does the work of
 * `AbortSignal.any([parent, AbortSignal.timeout(ms)])` with one controller, one timer
 * and one listener that dispose() removes: a piece exchange or a have query builds one
 * per request, thousands a minute per agent, and the any/timeout pair was about 4% of an
 * agent's CPU during a pull (docs/BENCHMARKS.md, cluster, seventh round). The timer does
 * not keep the process alive.
 */
export function deadlineSignal(parent: AbortSignal | undefined, ms: number): Deadline {
  const controller = new AbortController()
  let expired = false
  const timer = setTimeout(() => {
    expired = true
    controller.abort(
      new DOMException(`The operation was aborted due to timeout after ${ms} ms`, 'TimeoutError'),
    )
  }, ms)
  timer.unref?.()
  const unfollow = followSignal(controller, parent)
  if (controller.signal.aborted) clearTimeout(timer)
  return {
    signal: controller.signal,
    timedOut: () => expired,
    refresh() {
      if (!expired && !controller.signal.aborted) timer.refresh()
    },
    dispose() {
      clearTimeout(timer)
      unfollow()
    },
  }
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason)
      return
    }
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(signal?.reason)
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Lets any number of pieces of work follow `signal` at once (every request a piece
 * server serves, every have query and peer search of a download): node warns of a
 * possible leak past 10 abort listeners on one signal, which for such a signal is the
 * design, not a leak, and the warnings filled agents' logs on the N = 50 testbed.
 * Returns the signal.
 */
export function sharedSignal(signal: AbortSignal): AbortSignal {
  setMaxListeners(0, signal)
  return signal
}
