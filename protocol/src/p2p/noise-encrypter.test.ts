import { createHash, randomBytes } from 'node:crypto'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { Libp2p, Stream } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { afterEach, describe, expect, it } from 'vitest'
import { shoalNoise } from './noise-encrypter.js'
import { waitDrain } from './stream-io.js'

const ECHO = '/shoal-test/echo/1.0.0'
const MiB = 1 << 20

type Kind = 'shoal' | 'stock'

describe('shoalNoise over TCP', () => {
  const nodes: Libp2p[] = []

  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.stop()))
  })

  async function start(kind: Kind): Promise<Libp2p> {
    const node = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [kind === 'shoal' ? shoalNoise() : noise()],
      streamMuxers: [yamux()],
    })
    nodes.push(node)
    await node.handle(ECHO, async (stream) => {
      for await (const chunk of stream) {
        if (!stream.send(chunk)) await waitDrain(stream)
      }
      await stream.close()
    })
    return node
  }

  async function open(from: Libp2p, to: Libp2p): Promise<Stream> {
    return from.dialProtocol(to.getMultiaddrs()[0]!, ECHO, { signal: AbortSignal.timeout(10_000) })
  }

  /** Sends `data` in `writeBytes` writes (honouring drain) and returns the sha256 of the echo. */
  async function echo(from: Libp2p, to: Libp2p, data: Uint8Array, writeBytes = MiB): Promise<string> {
    const stream = await open(from, to)
    const hash = createHash('sha256')
    let received = 0
    const reading = (async () => {
      for await (const chunk of stream) {
        hash.update(chunk.subarray())
        received += chunk.byteLength
      }
    })()
    for (let i = 0; i < data.byteLength; i += writeBytes) {
      if (!stream.send(data.subarray(i, i + writeBytes))) await waitDrain(stream)
    }
    await stream.close()
    await reading
    expect(received).toBe(data.byteLength)
    return hash.digest('hex')
  }

  const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex')

  for (const [a, b] of [
    ['shoal', 'stock'],
    ['stock', 'shoal'],
    ['shoal', 'shoal'],
  ] as Array<[Kind, Kind]>) {
    it(`carries a stream from a ${a} node to a ${b} node and back`, async () => {
      const from = await start(a)
      const to = await start(b)
      const data = randomBytes(3 * MiB + 12_345)
      expect(await echo(from, to, data)).toBe(sha(data))
      // Writes below, at and above one noise frame (65 519 plaintext bytes), and tiny ones.
      for (const size of [1, 100, 65_519, 65_520, 200_000]) {
        const small = randomBytes(size * 3 + 7)
        expect(await echo(from, to, small, size)).toBe(sha(small))
      }
      expect(from.getConnections(to.peerId)[0]?.encryption).toBe('/noise')
    })
  }
})
