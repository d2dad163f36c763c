import { describe, expect, it } from 'vitest'
import { deadlineSignal, followSignal, raceSignal, sharedSignal, sleep } from './abort.js'

describe('raceSignal', () => {
  it('resolves and rejects with the promise while the signal stays quiet', async () => {
    await expect(raceSignal(Promise.resolve(7), new AbortController().signal)).resolves.toBe(7)
    await expect(raceSignal(Promise.reject(new Error('no')), new AbortController().signal)).rejects.toThrow(
      'no',
    )
    await expect(raceSignal(Promise.resolve(1), undefined)).resolves.toBe(1)
  })

  it("rejects with the signal's reason when it aborts first, and at once when it already has", async () => {
    const controller = new AbortController()
    let finish: (v: number) => void = () => {}
    const slow = new Promise<number>((resolve) => {
      finish = resolve
    })
    const raced = raceSignal(slow, controller.signal)
    controller.abort(new Error('gave up'))
    await expect(raced).rejects.toThrow('gave up')
    // The shared work runs on for whoever else waits.
    finish(3)
    await expect(slow).resolves.toBe(3)
    await expect(raceSignal(slow, AbortSignal.abort(new Error('late')))).rejects.toThrow('late')
  })

  it('leaves no unhandled rejection behind when the promise fails after an aborted signal won', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason)
    }
    process.on('unhandledRejection', onUnhandled)
    try {
      let fail: (err: Error) => void = () => {}
      // Built for the race alone, as the lane dialer races its connect against a timer.
      const connecting = new Promise<never>((_resolve, reject) => {
        fail = reject
      }).then((v) => v)
      await expect(raceSignal(connecting, AbortSignal.abort(new Error('gave up')))).rejects.toThrow('gave up')
      fail(new Error('handshake failed'))
      // Unhandled rejections are reported after the microtasks of the turn that made them.
      await new Promise((resolve) => setTimeout(resolve, 20))
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })
})

describe('deadlineSignal', () => {
  it('aborts with a TimeoutError after its time, and says so', async () => {
    const d = deadlineSignal(new AbortController().signal, 20)
    expect(d.signal.aborted).toBe(false)
    await new Promise((r) => setTimeout(r, 60))
    expect(d.signal.aborted).toBe(true)
    expect(d.signal.reason).toMatchObject({ name: 'TimeoutError' })
    expect(d.timedOut()).toBe(true)
    d.dispose()
  })

  it("aborts with the parent's reason, at once when the parent already has", () => {
    const parent = new AbortController()
    const d = deadlineSignal(parent.signal, 10_000)
    parent.abort(new Error('caller gave up'))
    expect(d.signal.reason).toMatchObject({ message: 'caller gave up' })
    expect(d.timedOut()).toBe(false)
    d.dispose()
    const late = deadlineSignal(AbortSignal.abort(new Error('already')), 10_000)
    expect(late.signal.reason).toMatchObject({ message: 'already' })
    late.dispose()
    expect(deadlineSignal(undefined, 10_000).signal.aborted).toBe(false)
  })

  it('counts its time again from each refresh', async () => {
    const d = deadlineSignal(undefined, 80)
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 40))
      d.refresh()
    }
    // 160 ms after it was made, twice its time, it still runs: each refresh restarted it.
    expect(d.signal.aborted).toBe(false)
    await new Promise((r) => setTimeout(r, 150))
    expect(d.timedOut()).toBe(true)
    d.refresh()
    expect(d.signal.aborted).toBe(true)
    d.dispose()
  })

  it('after dispose, neither the timer nor the parent aborts it', async () => {
    const parent = new AbortController()
    const d = deadlineSignal(parent.signal, 20)
    d.dispose()
    parent.abort(new Error('later'))
    await new Promise((r) => setTimeout(r, 60))
    expect(d.signal.aborted).toBe(false)
  })
})

describe('followSignal', () => {
  it("aborts the controller with the parent's reason until let go, and at once for an aborted parent", () => {
    const parent = new AbortController()
    const child = new AbortController()
    followSignal(child, parent.signal)
    parent.abort(new Error('stop'))
    expect(child.signal.reason).toMatchObject({ message: 'stop' })

    const early = new AbortController()
    followSignal(early, AbortSignal.abort(new Error('already')))
    expect(early.signal.reason).toMatchObject({ message: 'already' })

    const other = new AbortController()
    const free = new AbortController()
    followSignal(free, other.signal)()
    other.abort(new Error('late'))
    expect(free.signal.aborted).toBe(false)
    followSignal(free, undefined)()
    expect(free.signal.aborted).toBe(false)
  })
})

describe('sleep', () => {
  it("waits its time, or ends with the signal's reason when the signal aborts", async () => {
    const started = Date.now()
    await sleep(30)
    expect(Date.now() - started).toBeGreaterThanOrEqual(25)
    const controller = new AbortController()
    const waiting = sleep(10_000, controller.signal)
    controller.abort(new Error('stop'))
    await expect(waiting).rejects.toThrow('stop')
    await expect(sleep(10, AbortSignal.abort(new Error('already')))).rejects.toThrow('already')
  })
})

describe('sharedSignal', () => {
  it('takes more than ten abort listeners without a leak warning, and all of them run', async () => {
    const warnings: Error[] = []
    const onWarning = (w: Error): void => {
      if (w.name === 'MaxListenersExceededWarning') warnings.push(w)
    }
    process.on('warning', onWarning)
    try {
      const plain = new AbortController()
      const shared = new AbortController()
      sharedSignal(shared.signal)
      let ran = 0
      for (let i = 0; i < 12; i++) {
        plain.signal.addEventListener('abort', () => {})
        shared.signal.addEventListener('abort', () => ran++)
      }
      shared.abort()
      // Process warnings are emitted on the next tick.
      await new Promise((resolve) => setTimeout(resolve, 10))
      expect(ran).toBe(12)
      // Only the plain signal warned: the check is live in this process.
      expect(warnings).toHaveLength(1)
    } finally {
      process.off('warning', onWarning)
    }
  })
})
