import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { Libp2p, Stream } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { afterEach, describe, expect, it } from 'vitest'
import { shoalNoise } from './noise-encrypter.js'
import { waitDrain } from './stream-io.js'

const ECHO = '/shoal-test/echo/1.0.0'
const MiB = 1 << 20

type Kind = 'shoal' | 'stock'

/**
 * A TCP relay between a dialler and a node that can stop reading from the dialler
 * (so its socket fills up) and flip one bit in what it forwards to the node.
 */
interface Relay {
  port: number
  /** Stops reading from the dialler until release(). */
  hold(): void
  release(): void
  /** Flips a bit in the middle of the next chunk of at least 1000 bytes sent to the node. */
  tamper(): void
  close(): Promise<void>
}

async function startRelay(targetPort: number): Promise<Relay> {
  const sockets = new Set<Socket>()
  const inbound: Socket[] = []
  let tampering = false
  let held = false
  const server: Server = createServer((client) => {
    const upstream = connect({ port: targetPort, host: '127.0.0.1' })
    sockets.add(client).add(upstream)
    inbound.push(client)
    if (held) client.pause()
    client.on('data', (chunk: Buffer) => {
      if (tampering && chunk.byteLength >= 1000) {
        tampering = false
        chunk[500]! ^= 0x10
      }
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => client.write(chunk))
    const end = (): void => {
      client.destroy()
      upstream.destroy()
    }
    for (const s of [client, upstream]) {
      s.on('error', end)
      s.on('close', end)
    }
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  return {
    port: typeof address === 'object' && address !== null ? address.port : 0,
    hold() {
      held = true
      for (const c of inbound) c.pause()
    },
    release() {
      held = false
      for (const c of inbound) c.resume()
    },
    tamper() {
      tampering = true
    },
    async close() {
      for (const s of sockets) s.destroy()
      server.close()
      await once(server, 'close')
    },
  }
}

describe('shoalNoise over TCP', () => {
  const nodes: Libp2p[] = []
  const relays: Relay[] = []

  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.stop()))
    await Promise.all(relays.splice(0).map((r) => r.close()))
  })

  async function start(kind: Kind, init: { streamWindowBytes?: number } = {}): Promise<Libp2p> {
    const window = init.streamWindowBytes
    const node = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [kind === 'stock' ? noise() : shoalNoise()],
      streamMuxers: [
        yamux(
          window === undefined
            ? {}
            : { streamOptions: { initialStreamWindowSize: window, maxStreamWindowSize: window } },
        ),
      ],
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

  /** A dial of `to` through a relay, so the test can hold or tamper with the bytes. */
  async function viaRelay(to: Libp2p): Promise<{ relay: Relay; addr: ReturnType<typeof multiaddr> }> {
    const port = Number(/\/tcp\/(\d+)/.exec(to.getMultiaddrs()[0]!.toString())?.[1])
    const relay = await startRelay(port)
    relays.push(relay)
    return { relay, addr: multiaddr(`/ip4/127.0.0.1/tcp/${relay.port}/p2p/${to.peerId.toString()}`) }
  }

  it('drops a connection whose ciphertext was altered, and keeps serving new ones', async () => {
    for (const kind of ['shoal', 'stock'] as Kind[]) {
      // Our node receives the altered bytes, from a sender of either kind.
      const receiver = await start('shoal')
      const sender = await start(kind)
      const { relay, addr } = await viaRelay(receiver)
      const stream = await sender.dialProtocol(addr, ECHO, { signal: AbortSignal.timeout(10_000) })
      const closed = once(stream, 'close')
      const reading = (async () => {
        let n = 0
        for await (const chunk of stream) n += chunk.byteLength
        return n
      })()
      relay.tamper()
      stream.send(randomBytes(256 * 1024))
      await closed
      // The stream fails (or ends short) instead of delivering the altered bytes.
      const echoed = await reading.catch(() => -1)
      expect(echoed).toBeLessThan(256 * 1024)
      expect(receiver.getConnections(sender.peerId)).toHaveLength(0)
      // The receiving node is still up and talks to the same peer on a new connection.
      const data = randomBytes(100_000)
      expect(await echo(sender, receiver, data)).toBe(sha(data))
    }
  })

  it('holds a sender back when the socket fills, and resumes on drain', async () => {
    // A stream window larger than anything the sockets buffer, so only the
    // connection (not yamux's window) can stop the sender.
    const window = 64 * MiB
    const from = await start('shoal', { streamWindowBytes: window })
    const to = await start('shoal', { streamWindowBytes: window })
    const { relay, addr } = await viaRelay(to)
    const stream = await from.dialProtocol(addr, ECHO, { signal: AbortSignal.timeout(10_000) })
    const hash = createHash('sha256')
    let received = 0
    const reading = (async () => {
      for await (const chunk of stream) {
        hash.update(chunk.subarray())
        received += chunk.byteLength
      }
    })()
    relay.hold()
    const data = randomBytes(48 * MiB)
    let stalledAt: number | undefined
    for (let i = 0; i < data.byteLength; i += MiB) {
      if (!stream.send(data.subarray(i, i + MiB))) {
        if (stalledAt === undefined) {
          stalledAt = i + MiB
          relay.release()
        }
        await waitDrain(stream, AbortSignal.timeout(20_000))
      }
    }
    await stream.close()
    await reading
    expect(stalledAt).toBeDefined()
    expect(stalledAt!).toBeLessThan(window / 2)
    expect(received).toBe(data.byteLength)
    expect(hash.digest('hex')).toBe(sha(data))
  })

  it('passes stream resets and connection closes to the other side', async () => {
    const a = await start('shoal')
    const b = await start('stock')
    const reset = await open(a, b)
    const remoteClosed = new Promise<void>((resolve) => {
      b.addEventListener('connection:close', () => resolve(), { once: true })
    })
    const reading = (async () => {
      for await (const _ of reset) {
        // nothing is sent back before the reset
      }
    })()
    reset.send(Uint8Array.of(1, 2, 3))
    reset.abort(new Error('test reset'))
    await expect(reading).rejects.toBeDefined()
    expect(reset.status).toBe('aborted')
    // The connection itself survives a stream reset.
    const data = randomBytes(10_000)
    expect(await echo(a, b, data)).toBe(sha(data))
    await a.hangUp(b.peerId)
    await remoteClosed
    expect(b.getConnections(a.peerId)).toHaveLength(0)
  })
})
