import type { Stream } from '@libp2p/interface'
import { describe, expect, it } from 'vitest'
import { sendWithBackpressure } from './stream-io.js'

/** A stream whose send() reports a full buffer when `full` is set; drain is fired by hand. */
function fakeStream(full: boolean) {
  const target = new EventTarget()
  const sent: Uint8Array[] = []
  const stream = Object.assign(target, {
    status: 'open',
    send(data: Uint8Array) {
      sent.push(data)
      return !full
    },
  }) as unknown as Stream
  return { stream, sent, drain: () => target.dispatchEvent(new Event('drain')) }
}

describe('sendWithBackpressure', () => {
  it('builds a lazy deadline only when the send has to wait for drain', async () => {
    let built = 0
    const deadline = (): AbortSignal => {
      built++
      return new AbortController().signal
    }
    const roomy = fakeStream(false)
    await sendWithBackpressure(roomy.stream, Uint8Array.of(1), deadline)
    expect(built).toBe(0)

    const full = fakeStream(true)
    const waiting = sendWithBackpressure(full.stream, Uint8Array.of(2), deadline)
    expect(built).toBe(1)
    full.drain()
    await waiting
    expect(full.sent).toEqual([Uint8Array.of(2)])
  })

  it('gives up with the deadline reason while waiting', async () => {
    const full = fakeStream(true)
    const controller = new AbortController()
    const waiting = sendWithBackpressure(full.stream, Uint8Array.of(3), () => controller.signal)
    controller.abort(new Error('peer stopped reading'))
    await expect(waiting).rejects.toThrow('peer stopped reading')
  })
})
