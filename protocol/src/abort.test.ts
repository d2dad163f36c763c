import { describe, expect, it } from 'vitest'
import { raceSignal } from './abort.js'

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
})
