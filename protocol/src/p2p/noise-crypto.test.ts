import { createHash, randomBytes } from 'node:crypto'
import { type ICryptoInterface, noise } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { Libp2p } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { Uint8ArrayList } from 'uint8arraylist'
import { afterEach, describe, expect, it } from 'vitest'
import { createNoiseCrypto, NoiseDecryptError } from './noise-crypto.js'

const ECHO = '/shoal-test/echo/1.0.0'

function nonce(n: number): Uint8Array {
  const bytes = new Uint8Array(12)
  new DataView(bytes.buffer).setUint32(4, n, true)
  return bytes
}

type Frame = Parameters<ICryptoInterface['chaCha20Poly1305Decrypt']>[0]

function flat(data: Uint8Array | { subarray(): Uint8Array }): Uint8Array {
  return data instanceof Uint8Array ? data : data.subarray()
}

/** A frame received in several chunks (noise's own list type at the interface). */
function chunks(...bufs: Uint8Array[]): Frame {
  return new Uint8ArrayList(...bufs) as unknown as Frame
}

describe('createNoiseCrypto', () => {
  const key = randomBytes(32)
  const variants: Array<[string, ICryptoInterface]> = [
    ['one buffer', createNoiseCrypto()],
    ['tag chunk', createNoiseCrypto({ tagChunk: true })],
  ]

  for (const [name, fast] of variants) {
    it(`produces the default crypto's frames and reads them (${name})`, () => {
      for (const size of [0, 1, 1199, 1200, 65519]) {
        for (const ad of [new Uint8Array(0), randomBytes(32)]) {
          const plain = randomBytes(size)
          const ours = flat(fast.chaCha20Poly1305Encrypt(plain, nonce(7), ad, key))
          const theirs = flat(defaultCrypto.chaCha20Poly1305Encrypt(plain, nonce(7), ad, key))
          expect(Buffer.from(ours).equals(Buffer.from(theirs))).toBe(true)
          const back = flat(fast.chaCha20Poly1305Decrypt(theirs, nonce(7), ad, key))
          expect(Buffer.from(back).equals(plain)).toBe(true)
        }
      }
    })

    it(`handles frames split over several chunks (${name})`, () => {
      const plain = randomBytes(65519)
      const split = chunks(plain.subarray(0, 10), plain.subarray(10, 40000), plain.subarray(40000))
      const sealed = flat(fast.chaCha20Poly1305Encrypt(split, nonce(1), new Uint8Array(0), key))
      expect(
        Buffer.from(
          flat(defaultCrypto.chaCha20Poly1305Decrypt(sealed, nonce(1), new Uint8Array(0), key)),
        ).equals(plain),
      ).toBe(true)
      // The tag itself straddles two received chunks here.
      const received = chunks(
        sealed.subarray(0, 500),
        sealed.subarray(500, sealed.length - 7),
        sealed.subarray(sealed.length - 7),
      )
      const back = flat(fast.chaCha20Poly1305Decrypt(received, nonce(1), new Uint8Array(0), key))
      expect(Buffer.from(back).equals(plain)).toBe(true)
    })

    it(`rejects a tampered frame, a wrong nonce and a wrong key (${name})`, () => {
      const plain = randomBytes(5000)
      const sealed = Buffer.from(flat(fast.chaCha20Poly1305Encrypt(plain, nonce(3), new Uint8Array(0), key)))
      for (const at of [0, 2500, sealed.length - 1]) {
        const bad = Buffer.from(sealed)
        bad[at]! ^= 0x01
        expect(() => fast.chaCha20Poly1305Decrypt(bad, nonce(3), new Uint8Array(0), key)).toThrow(
          NoiseDecryptError,
        )
      }
      expect(() => fast.chaCha20Poly1305Decrypt(sealed, nonce(4), new Uint8Array(0), key)).toThrow(
        NoiseDecryptError,
      )
      expect(() =>
        fast.chaCha20Poly1305Decrypt(sealed, nonce(3), new Uint8Array(0), randomBytes(32)),
      ).toThrow(NoiseDecryptError)
      expect(() =>
        fast.chaCha20Poly1305Decrypt(sealed.subarray(0, 15), nonce(3), new Uint8Array(0), key),
      ).toThrow(NoiseDecryptError)
      const tampered = Buffer.from(sealed)
      tampered[200]! ^= 0x80
      expect(() =>
        fast.chaCha20Poly1305Decrypt(
          chunks(tampered.subarray(0, 100), tampered.subarray(100)),
          nonce(3),
          new Uint8Array(0),
          key,
        ),
      ).toThrow(NoiseDecryptError)
    })
  }
})

describe('noise with createNoiseCrypto over TCP', () => {
  const nodes: Libp2p[] = []

  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.stop()))
  })

  async function start(crypto?: ICryptoInterface): Promise<Libp2p> {
    const node = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise(crypto ? { crypto } : {})],
      streamMuxers: [yamux()],
    })
    nodes.push(node)
    await node.handle(ECHO, async (stream) => {
      for await (const chunk of stream) stream.send(chunk)
      await stream.close()
    })
    return node
  }

  async function echo(from: Libp2p, to: Libp2p, data: Uint8Array): Promise<string> {
    const stream = await from.dialProtocol(to.getMultiaddrs()[0]!, ECHO, {
      signal: AbortSignal.timeout(10_000),
    })
    const hash = createHash('sha256')
    let received = 0
    const reading = (async () => {
      for await (const chunk of stream) {
        hash.update(chunk.subarray())
        received += chunk.byteLength
      }
    })()
    for (let i = 0; i < data.byteLength; i += 1 << 20) {
      if (!stream.send(data.subarray(i, i + (1 << 20)))) {
        await new Promise((resolve) => stream.addEventListener('drain', resolve, { once: true }))
      }
    }
    await stream.close()
    await reading
    expect(received).toBe(data.byteLength)
    return hash.digest('hex')
  }

  it('talks to a node using the default crypto, both ways', async () => {
    const fast = await start(createNoiseCrypto())
    const plain = await start()
    const data = randomBytes(3 * 1024 * 1024 + 12345)
    const want = createHash('sha256').update(data).digest('hex')
    expect(await echo(fast, plain, data)).toBe(want)
    expect(await echo(plain, fast, data)).toBe(want)
    const tagged = await start(createNoiseCrypto({ tagChunk: true }))
    expect(await echo(tagged, fast, data)).toBe(want)
  })
})
