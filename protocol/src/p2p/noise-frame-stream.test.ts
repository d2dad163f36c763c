import { randomBytes } from 'node:crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import type { Logger } from '@libp2p/interface'
import { AbstractMessageStream, type SendResult } from '@libp2p/utils'
import { Uint8ArrayList } from 'uint8arraylist'
import { describe, expect, it } from 'vitest'
import { createNoiseCrypto } from './noise-crypto.js'
import { NOISE_MAX_PLAINTEXT_BYTES, NoiseFrameStream, type NoiseSession } from './noise-frame-stream.js'

const EMPTY = new Uint8Array(0)

function nonce(n: number): Uint8Array {
  const bytes = new Uint8Array(12)
  new DataView(bytes.buffer).setUint32(4, n, true)
  return bytes
}

type NoiseBytes = Parameters<ICryptoInterface['chaCha20Poly1305Decrypt']>[0]

/** One direction of a noise session with a fixed key, nonces counting from 0 (as the handshake's split leaves them). */
function session(key: Uint8Array): NoiseSession {
  const crypto = createNoiseCrypto({ tagChunk: true })
  let sendNonce = 0
  let receiveNonce = 0
  return {
    encrypt: (p) => crypto.chaCha20Poly1305Encrypt(p as NoiseBytes, nonce(sendNonce++), EMPTY, key),
    decrypt: (c) => crypto.chaCha20Poly1305Decrypt(c as NoiseBytes, nonce(receiveNonce++), EMPTY, key),
  }
}

/** What the package's own data phase puts on the wire for `data` sent in one write. */
function stockWire(data: Uint8Array, key: Uint8Array, firstNonce = 0): Buffer {
  const parts: Uint8Array[] = []
  let n = firstNonce
  for (let i = 0; i < data.byteLength; i += NOISE_MAX_PLAINTEXT_BYTES) {
    const chunk = data.subarray(i, Math.min(i + NOISE_MAX_PLAINTEXT_BYTES, data.byteLength))
    const sealed = defaultCrypto.chaCha20Poly1305Encrypt(chunk, nonce(n++), EMPTY, key).subarray()
    parts.push(Uint8Array.of(sealed.byteLength >> 8, sealed.byteLength & 0xff), sealed)
  }
  return Buffer.concat(parts)
}

const silent = Object.assign(() => {}, {
  enabled: false,
  trace: () => {},
  error: () => {},
  newScope: () => silent,
}) as unknown as Logger

/** A transport that records what is sent on it and lets the test push received bytes. */
class Wire extends AbstractMessageStream {
  readonly sent: Uint8Array[] = []
  reset: Error | undefined
  constructor() {
    super({ log: silent })
  }
  sendData(data: Uint8ArrayList): SendResult {
    this.sent.push(data.subarray())
    return { sentBytes: data.byteLength, canSendMore: true }
  }
  sendReset(err: Error): void {
    this.reset = err
  }
  sendPause(): void {}
  sendResume(): void {}
  async close(): Promise<void> {}
  receive(bytes: Uint8Array | Uint8ArrayList): void {
    this.onData(bytes)
  }
}

function receiver(key: Uint8Array): { wire: Wire; stream: NoiseFrameStream; got: () => Buffer } {
  const wire = new Wire()
  const stream = new NoiseFrameStream(wire, session(key))
  const received: Uint8Array[] = []
  stream.addEventListener('message', (evt) => received.push(evt.data.subarray()))
  return { wire, stream, got: () => Buffer.concat(received) }
}

describe('NoiseFrameStream', () => {
  const key = randomBytes(32)

  it('puts the same bytes on the wire as the package, in one write per send', () => {
    for (const size of [1, 100, NOISE_MAX_PLAINTEXT_BYTES, NOISE_MAX_PLAINTEXT_BYTES + 1, 1_000_000]) {
      const wire = new Wire()
      const stream = new NoiseFrameStream(wire, session(key))
      const data = randomBytes(size)
      stream.send(data)
      expect(wire.sent).toHaveLength(1)
      expect(Buffer.from(wire.sent[0]!).equals(stockWire(data, key))).toBe(true)
    }
  })

  it('splits a send larger than maxSendBytes into several writes, nonces continuing', () => {
    const wire = new Wire()
    const stream = new NoiseFrameStream(wire, session(key), { maxSendBytes: 2 * NOISE_MAX_PLAINTEXT_BYTES })
    const data = randomBytes(5 * NOISE_MAX_PLAINTEXT_BYTES + 3)
    stream.send(new Uint8ArrayList(data.subarray(0, 1000), data.subarray(1000)))
    expect(wire.sent).toHaveLength(3)
    expect(Buffer.concat(wire.sent).equals(stockWire(data, key))).toBe(true)
  })

  it('reads frames however the transport cuts them, length prefixes included', () => {
    const data = randomBytes(3 * NOISE_MAX_PLAINTEXT_BYTES + 777)
    const wire = stockWire(data, key)
    // Cut points: inside a length prefix, inside a tag, one byte chunks around a frame border.
    const frame = NOISE_MAX_PLAINTEXT_BYTES + 16 + 2
    for (const cuts of [
      [1],
      [frame + 1, frame + 2, frame + 3],
      [100, frame - 5, frame - 1, 2 * frame + 1],
      [frame, 2 * frame, 3 * frame],
    ]) {
      const { wire: transport, got, stream } = receiver(key)
      let at = 0
      for (const cut of [...cuts, wire.byteLength]) {
        transport.receive(wire.subarray(at, cut))
        at = cut
      }
      expect(got().equals(data)).toBe(true)
      expect(stream.status).toBe('open')
    }
    // Many frames in one chunk, and a chunk arriving as a list of parts.
    const whole = receiver(key)
    whole.wire.receive(new Uint8ArrayList(wire.subarray(0, 70_001), wire.subarray(70_001)))
    expect(whole.got().equals(data)).toBe(true)
  })

  it('aborts on a tampered frame and passes nothing of it on', () => {
    const data = randomBytes(2 * NOISE_MAX_PLAINTEXT_BYTES)
    const frame = NOISE_MAX_PLAINTEXT_BYTES + 16 + 2
    for (const at of [2, 5000, frame - 1, frame + 2 + 10]) {
      const wire = stockWire(data, key)
      wire[at]! ^= 0x04
      const { wire: transport, got, stream } = receiver(key)
      transport.receive(wire.subarray(0, 3000))
      transport.receive(wire.subarray(3000))
      expect(stream.status).toBe('aborted')
      expect(transport.reset).toBeDefined()
      // Frames before the tampered one arrived; nothing from it or after it.
      expect(got().byteLength).toBe(at < frame ? 0 : NOISE_MAX_PLAINTEXT_BYTES)
      // Later bytes are ignored rather than thrown.
      transport.receive(stockWire(data, key))
    }
  })

  it('rejects a message shorter than a tag and skips an empty one', () => {
    const short = receiver(key)
    short.wire.receive(Uint8Array.of(0, 5, 1, 2, 3, 4, 5))
    expect(short.stream.status).toBe('aborted')

    const data = randomBytes(10)
    const empty = receiver(key)
    empty.wire.receive(Buffer.concat([Uint8Array.of(0, 0), stockWire(data, key)]))
    expect(empty.got().equals(data)).toBe(true)
  })

  it('reports the transport closing, resetting and draining', () => {
    const closed = receiver(key)
    closed.wire.onTransportClosed()
    expect(closed.stream.status).toBe('closed')

    const reset = receiver(key)
    reset.wire.onRemoteReset()
    expect(reset.stream.status).toBe('reset')

    const drained = receiver(key)
    let drains = 0
    drained.stream.addEventListener('drain', () => drains++)
    drained.wire.onMuxerDrain()
    expect(drains).toBe(1)
  })
})
