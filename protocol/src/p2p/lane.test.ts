import { randomBytes } from 'node:crypto'
import { EventEmitter, once } from 'node:events'
import { connect, createServer, type LookupFunction, type Server, type Socket } from 'node:net'
import { createServer as createTlsServer, connect as tlsConnect, type TLSSocket } from 'node:tls'
import { afterEach, describe, expect, it } from 'vitest'
import { digestOf } from '../digest.js'
import { createMessageReader, decodeMessage, encodeMessage } from '../messages/index.js'
import { type PieceMap, pieceMatches } from '../piece-map.js'
import { HAVE_PROTOCOL, LANE_PROTOCOL, PIECES_PROTOCOL } from '../protocols.js'
import {
  createLaneDialer,
  type LaneConnectOptions,
  type LaneDialerInit,
  laneHostOf,
  LaneStream,
} from './lane.js'
import { createMemoryPieceSource, type MemoryPieceSource } from './memory-piece-source.js'
import { createP2PNode, type P2PNode } from './node.js'
import { createPieceClient } from './piece-client.js'
import { createPieceServer, type PieceServer } from './piece-server.js'

const PIECE = 64 * 1024

function blob(size: number): { bytes: Buffer; map: PieceMap } {
  const bytes = randomBytes(size)
  const pieces: string[] = []
  for (let off = 0; off < size; off += PIECE) {
    pieces.push(digestOf(bytes.subarray(off, off + PIECE)).slice('sha256:'.length))
  }
  return { bytes, map: { digest: digestOf(bytes), size, pieceSize: PIECE, pieces } }
}

/**
 * A TCP proxy in front of a lane port: records what the client sent, and can flip one
 * byte of either direction.
 */
async function proxy(
  target: number,
  options: { flipServerByteAt?: number; flipClientByteAt?: number; delayServerMs?: number } = {},
): Promise<{ server: Server; port: number; fromClient: Buffer[] }> {
  const fromClient: Buffer[] = []
  const server = createServer((inbound) => {
    const outbound = connect({ host: '127.0.0.1', port: target })
    let fromServer = 0
    let sent = 0
    inbound.on('data', (chunk: Buffer) => {
      fromClient.push(Buffer.from(chunk))
      const at = options.flipClientByteAt
      if (at !== undefined && at >= sent && at < sent + chunk.byteLength) {
        chunk = Buffer.from(chunk)
        chunk[at - sent]! ^= 0x80
      }
      sent += chunk.byteLength
      outbound.write(chunk)
    })
    outbound.on('data', (chunk: Buffer) => {
      const at = options.flipServerByteAt
      if (at !== undefined && at >= fromServer && at < fromServer + chunk.byteLength) {
        chunk = Buffer.from(chunk)
        chunk[at - fromServer]! ^= 0x01
      }
      fromServer += chunk.byteLength
      if (options.delayServerMs) setTimeout(() => inbound.write(chunk), options.delayServerMs)
      else inbound.write(chunk)
    })
    const end = (): void => {
      inbound.destroy()
      outbound.destroy()
    }
    inbound.on('close', end)
    outbound.on('close', end)
    inbound.on('error', end)
    outbound.on('error', end)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  return { server, port: typeof address === 'object' && address !== null ? address.port : 0, fromClient }
}

/** Reads exactly `n` bytes from `socket`, or what came before it closed. */
async function readSome(socket: Socket, n: number): Promise<Buffer> {
  const parts: Buffer[] = []
  let got = 0
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off('data', onData)
      socket.off('close', done)
      socket.pause()
      resolve(Buffer.concat(parts))
    }
    const onData = (chunk: Buffer): void => {
      parts.push(chunk)
      got += chunk.byteLength
      if (got >= n) done()
    }
    socket.on('data', onData)
    socket.once('close', done)
    socket.resume()
  })
}

/** A lane frame as it goes inside TLS: u32 length | u8 kind | payload. */
function frame(kind: number, payload: Uint8Array, length = 1 + payload.byteLength): Buffer {
  const head = Buffer.alloc(5)
  head.writeUInt32BE(length, 0)
  head[4] = kind
  return Buffer.concat([head, payload])
}

/** Splits what came out of a lane's TLS into frames. */
function framesOf(bytes: Buffer): Array<{ kind: number; payload: Buffer }> {
  const frames: Array<{ kind: number; payload: Buffer }> = []
  for (let at = 0; at < bytes.byteLength; ) {
    const length = bytes.readUInt32BE(at)
    frames.push({ kind: bytes[at + 4] as number, payload: bytes.subarray(at + 5, at + 4 + length) })
    at += 4 + length
  }
  return frames
}

/** What a lane session hands out, asked for over libp2p as the dialer does. */
interface RawSession {
  port: number
  id: Buffer
  key: Buffer
}

/**
 * A TLS lane socket made by hand: the handshake with `key` under the session's identity,
 * then the server's status (must be ok). Resolves with the socket, or with the
 * handshake's error.
 */
async function rawLane(
  port: number,
  id: Buffer,
  key: Buffer,
  identity = id.toString('hex'),
): Promise<TLSSocket | Error> {
  const secure = tlsConnect({
    host: '127.0.0.1',
    port,
    pskCallback: () => ({ psk: key, identity }),
    ciphers: 'TLS_AES_128_GCM_SHA256',
    minVersion: 'TLSv1.3',
    checkServerIdentity: () => new Error('no certificate expected'),
  })
  const handshake = await new Promise<TLSSocket | Error>((resolve) => {
    secure.once('secureConnect', () => resolve(secure))
    secure.once('error', (err) => resolve(err))
  })
  if (handshake instanceof Error) return handshake
  expect(await readSome(secure, 5)).toEqual(Buffer.from('SHL3\0', 'latin1'))
  return secure
}

/**
 * A lane's tls.connect options with `host` looked up by `lookup` (one address, as
 * net.connect asks for without autoSelectFamily), to hold a connect back in a test.
 */
function withLookup(options: LaneConnectOptions, host: string, lookup: LookupFunction): LaneConnectOptions {
  const opts = { ...options, host, lookup, autoSelectFamily: false }
  return opts
}

async function readAll(stream: LaneStream): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const chunk of stream) parts.push(Buffer.from(chunk.subarray()))
  return Buffer.concat(parts)
}

/**
 * A self-signed certificate for 127.0.0.1 and its key, for tests only (an impostor
 * lane server that answers with a certificate instead of the session key).
 */
const IMPOSTOR_CERT = `-----BEGIN CERTIFICATE-----
MIIBmjCCAUGgAwIBAgIUJJjuw1EQli0FdeBHpZK/yes2uowwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbGFuZS50ZXN0MCAXDTI2MTEyODEwMDcwOVoYDzIxMjYxMTA0
MTAwNzA5WjAUMRIwEAYDVQQDDAlsYW5lLnRlc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATy8CHBAcjWmbdbrOPHLA+gDB28oQbx20Aj/awdoGMaVp/ypgidZTec
hdGKccZvEpx7BSJxr13si7Tr3A9cuZ/+o28wbTAdBgNVHQ4EFgQULwu+s18G6gEf
9yGNKARVn4rg2MowHwYDVR0jBBgwFoAULwu+s18G6gEf9yGNKARVn4rg2MowDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARhwR/AAABgglsYW5lLnRlc3QwCgYIKoZI
zj0EAwIDRwAwRAIgfIrAVwhfJWdCqsfmnvtHA4TSoVgHLSNIESLV8yPwABACIG5P
W3JhGcLHFFmDswLn+kyoDIc09K2KVkhpeBkqI0Dg
-----END CERTIFICATE-----`
const IMPOSTOR_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgqINxGZBVjVz+LuBu
gnvbRquFSDza8m3vMqNKaEt8uyKhRANCAATy8CHBAcjWmbdbrOPHLA+gDB28oQbx
20Aj/awdoGMaVp/ypgidZTechdGKccZvEpx7BSJxr13si7Tr3A9cuZ/+
-----END PRIVATE KEY-----`

/** Stands in for a lane's TLS socket: what LaneStream calls, recording writes. */
class FakeSocket extends EventEmitter {
  written: Buffer[] = []
  destroyed = false
  writable = true
  writableNeedDrain = false
  write(data: Uint8Array): boolean {
    this.written.push(Buffer.from(data))
    return true
  }
  end(): void {}
  destroy(): void {
    this.destroyed = true
  }
  pause(): void {}
  resume(): void {}
}

describe('LaneStream', () => {
  it('hands its reader all the records one poll of the socket decrypted, not one record at a time', async () => {
    const socket = new FakeSocket()
    const stream = new LaneStream(socket as unknown as Socket)
    const payload = randomBytes(64 * 1024)
    const iterator = stream[Symbol.asyncIterator]()
    // The reader waits for data, as a piece read does between socket reads.
    const first = iterator.next()
    // Node's TLS emits a socket read's plaintext one 16 KiB record per callback, each
    // followed by a microtask checkpoint: modelled by one macrotask per record.
    const frames = frame(0, payload)
    const records: Buffer[] = []
    for (let at = 0; at < frames.byteLength; at += 16 * 1024)
      records.push(frames.subarray(at, at + 16 * 1024))
    for (const record of records) setImmediate(() => socket.emit('data', record))
    const got = await first
    // Everything that came in that turn of the loop, in one go (one wake of the reader).
    expect(got.done).toBe(false)
    expect(Buffer.from((got.value as Uint8Array).subarray()).equals(payload)).toBe(true)
    // What arrives later is still read, and the end frame ends the iteration.
    const later = randomBytes(1000)
    const rest = (async () => {
      const parts: Buffer[] = []
      for (let r = await iterator.next(); r.done !== true; r = await iterator.next()) {
        parts.push(Buffer.from(r.value.subarray()))
      }
      return Buffer.concat(parts)
    })()
    socket.emit('data', frame(0, later))
    setImmediate(() => socket.emit('data', frame(2, new Uint8Array(0))))
    expect((await rest).equals(later)).toBe(true)
  })
})

describe('piece lane', () => {
  const cleanups: Array<() => Promise<void> | void> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  async function node(): Promise<P2PNode> {
    const n = await createP2PNode({}, {})
    await n.start()
    cleanups.push(() => n.stop())
    return n
  }

  async function seed(
    lane: boolean,
  ): Promise<{ node: P2PNode; source: MemoryPieceSource; server: PieceServer }> {
    const n = await node()
    const source = createMemoryPieceSource()
    const server = createPieceServer(
      { libp2p: n.libp2p, source },
      lane ? { lane: { host: '127.0.0.1' }, requestTimeoutMs: 2_000 } : {},
    )
    await server.start()
    cleanups.push(() => server.stop())
    return { node: n, source, server }
  }

  /** A seed holding a blob of `pieces` pieces, and a leecher node. */
  async function seedWithBlob(lane: boolean, pieces: number) {
    const s = await seed(lane)
    const leecher = await node()
    const { bytes, map } = blob(pieces * PIECE)
    s.source.putBlob(map.digest, bytes, PIECE)
    return { s, leecher, bytes, map }
  }

  /**
   * A lane dialer of `leecher` whose sockets go through a proxy in front of `lanePort`
   * (closed after the test), with the proxy's record of what the client sent.
   */
  async function throughProxy(
    leecher: P2PNode,
    lanePort: number,
    options: Parameters<typeof proxy>[1] = {},
    init: Omit<LaneDialerInit, 'connect'> = {},
  ) {
    const p = await proxy(lanePort, options)
    cleanups.push(() => {
      p.server.close()
    })
    const dialer = createLaneDialer(
      { libp2p: leecher.libp2p },
      { ...init, connect: (options) => tlsConnect({ ...options, port: p.port }) },
    )
    return { dialer, fromClient: p.fromClient }
  }

  /** Asks `seedNode` for a lane session over libp2p from `leecher`. */
  async function askSession(leecher: P2PNode, seedNode: P2PNode): Promise<RawSession> {
    const stream = await leecher.libp2p.dialProtocol(seedNode.getMultiaddrs(), LANE_PROTOCOL)
    stream.send(Uint8Array.of(1))
    const reply = Buffer.from((await createMessageReader(stream).readBytes(55)).subarray())
    await stream.close()
    expect(reply[0]).toBe(0)
    return { port: reply.readUInt16BE(1), id: reply.subarray(3, 19), key: reply.subarray(19, 51) }
  }

  /** Asks for `map`'s bitfield over a hand-made lane socket: the server must answer it. */
  async function rawHave(session: RawSession, map: PieceMap): Promise<number> {
    const secure = await rawLane(session.port, session.id, session.key)
    if (secure instanceof Error) throw secure
    secure.write(frame(1, Buffer.from(HAVE_PROTOCOL)))
    secure.write(frame(0, encodeMessage({ type: 'have-request', digest: map.digest })))
    secure.write(frame(2, new Uint8Array(0)))
    const parts: Buffer[] = []
    for await (const chunk of secure) parts.push(chunk as Buffer)
    // One data frame with the reply, then the end frame.
    const frames = framesOf(Buffer.concat(parts))
    expect(frames.map((f) => f.kind)).toEqual([0, 2])
    const reply = decodeMessage((frames[0] as { payload: Buffer }).payload.subarray(4))
    return reply.type === 'have-reply' ? (reply.bitfield?.count() ?? -1) : -1
  }

  it('finds the lane host in the listen addresses', () => {
    expect(laneHostOf(['/ip4/198.18.1.7/tcp/4001'])).toBe('198.18.1.7')
    expect(laneHostOf(['/ip4/10.0.0.1/udp/4001/quic-v1', '/ip6/::1/tcp/0'])).toBe('::1')
    expect(laneHostOf(['/dns4/example.test/tcp/4001'])).toBeUndefined()
  })

  it('falls back to libp2p streams for a peer that serves no lane', async () => {
    const { s, leecher, map } = await seedWithBlob(false, 3)
    const client = createPieceClient({ libp2p: leecher.libp2p }, { lane: true })
    const target = s.node.getMultiaddrs()
    expect(pieceMatches(map, 2, await client.fetchPiece(target, map.digest, 2))).toBe(true)
    expect((await client.fetchHave(target, map.digest))?.count()).toBe(3)
    expect(s.server.laneStreamsServed()).toBe(0)
  })

  it('falls back to libp2p streams when the lane stops answering, and keeps fetching', async () => {
    const { s, leecher, map } = await seedWithBlob(true, 2)
    const client = createPieceClient({ libp2p: leecher.libp2p }, { lane: true, idleStreamMs: 0 })
    const target = s.node.getMultiaddrs()
    expect(pieceMatches(map, 0, await client.fetchPiece(target, map.digest, 0))).toBe(true)
    expect(s.server.laneStreamsServed()).toBe(1)
    // The piece server restarts: a new lane on a new port, the client's session points at the old one.
    await s.server.stop()
    await s.server.start()
    expect(pieceMatches(map, 1, await client.fetchPiece(target, map.digest, 1))).toBe(true)
    expect(s.server.laneStreamsServed()).toBe(0)
  })

  it('sends a peer over its lane socket cap to libp2p streams, request by request', async () => {
    const n = await node()
    const source = createMemoryPieceSource()
    const server = createPieceServer(
      { libp2p: n.libp2p, source },
      { lane: { host: '127.0.0.1', maxSocketsPerPeer: 1 } },
    )
    await server.start()
    cleanups.push(() => server.stop())
    const leecher = await node()
    const { bytes, map } = blob(2 * PIECE)
    source.putBlob(map.digest, bytes, PIECE)
    const transports: string[] = []
    const client = createPieceClient(
      { libp2p: leecher.libp2p },
      { lane: true, idleStreamMs: 60_000, onStreamOpened: (t) => transports.push(t) },
    )
    const target = n.getMultiaddrs()
    // The pieces stream is kept on the one lane socket allowed; the have stream is refused there.
    expect(pieceMatches(map, 0, await client.fetchPiece(target, map.digest, 0))).toBe(true)
    expect((await client.fetchHave(target, map.digest))?.count()).toBe(2)
    expect(transports).toEqual(['lane', 'libp2p'])
    // The lane is not written off: the kept socket carries the next piece.
    expect(pieceMatches(map, 1, await client.fetchPiece(target, map.digest, 1))).toBe(true)
    expect(server.laneStreamsServed()).toBe(1)
  })

  it('drops its kept lane sockets on close() and opens new ones after', async () => {
    const { s, leecher, map } = await seedWithBlob(true, 3)
    const client = createPieceClient({ libp2p: leecher.libp2p }, { lane: true, idleStreamMs: 60_000 })
    const target = s.node.getMultiaddrs()
    expect(pieceMatches(map, 0, await client.fetchPiece(target, map.digest, 0))).toBe(true)
    expect(pieceMatches(map, 1, await client.fetchPiece(target, map.digest, 1))).toBe(true)
    // The second request reused the kept socket.
    expect(s.server.laneStreamsServed()).toBe(1)
    client.close()
    expect(pieceMatches(map, 2, await client.fetchPiece(target, map.digest, 2))).toBe(true)
    expect(s.server.laneStreamsServed()).toBe(2)
  })

  it('drops a lane socket whose frame was altered in flight, and serves the next one', async () => {
    const { s, leecher, bytes, map } = await seedWithBlob(true, 4)
    const lanePort = s.server.lanePort() as number
    // Byte 40,000 of what the server sends lies inside the piece (the handshake, the
    // ticket and the piece header take well under 1 KiB): its TLS record does not open.
    const { dialer } = await throughProxy(leecher, lanePort, { flipServerByteAt: 40_000 })
    const target = s.node.getMultiaddrs()
    const stream = await dialer.open('seed', target, PIECES_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
    expect(stream).toBeDefined()
    stream!.send(encodeMessage({ type: 'piece-request', digest: map.digest, indexes: [2] }))
    await expect(readAll(stream!)).rejects.toThrow(/lane socket failed: .*(bad record mac|decrypt)/i)
    expect(stream!.status).toBe('reset')

    // An honest path to the same lane still works, with the same session.
    const good = createLaneDialer({ libp2p: leecher.libp2p })
    const again = await good.open('seed', target, PIECES_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
    again!.send(encodeMessage({ type: 'piece-request', digest: map.digest, indexes: [3] }))
    const reply = readAll(again!)
    await again!.close({ signal: AbortSignal.timeout(5_000) })
    expect((await reply).subarray(-PIECE)).toEqual(bytes.subarray(3 * PIECE, 4 * PIECE))
    const client = createPieceClient({ libp2p: leecher.libp2p }, { lane: true })
    expect(pieceMatches(map, 3, await client.fetchPiece(target, map.digest, 3))).toBe(true)
  })

  it('falls back to libp2p when the TLS handshake fails', async () => {
    const { s, leecher, map } = await seedWithBlob(true, 1)
    const lanePort = s.server.lanePort() as number
    // Byte 40 of what the client sends lies in its ClientHello's random (after the
    // record and handshake headers and the version): the PSK binder over the
    // ClientHello no longer verifies, and the server's alert (illegal_parameter) is not
    // the one of an unknown session.
    const { dialer } = await throughProxy(leecher, lanePort, { flipClientByteAt: 40 })
    const target = s.node.getMultiaddrs()
    const open = () => dialer.open('seed', target, HAVE_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
    expect(await open()).toBeUndefined()
    // Written off for retryAfterMs: not asked again at once.
    expect(await open()).toBeUndefined()
    expect(s.server.laneStreamsServed()).toBe(0)
    // The lane itself keeps serving.
    const client = createPieceClient({ libp2p: leecher.libp2p }, { lane: true })
    expect(pieceMatches(map, 0, await client.fetchPiece(target, map.digest, 0))).toBe(true)
    expect(s.server.laneStreamsServed()).toBe(1)
  })

  it('fails the handshake of a socket with the right session id and a wrong key or identity, and keeps serving', async () => {
    const { s, leecher, map } = await seedWithBlob(true, 3)
    const session = await askSession(leecher, s.node)
    // The right key works by hand (the helper speaks the lane)...
    expect(await rawHave(session, map)).toBe(3)
    expect(s.server.laneStreamsServed()).toBe(1)
    // ...a wrong one does not get past the handshake.
    const wrong = await rawLane(session.port, session.id, randomBytes(32))
    expect(wrong).toBeInstanceOf(Error)
    expect(String(wrong)).toMatch(/alert/i)
    // Nor does the right key offered under an identity that names no session: the
    // server has no key for it.
    const other = await rawLane(session.port, session.id, session.key, randomBytes(16).toString('hex'))
    expect(other).toBeInstanceOf(Error)
    expect(String(other)).toMatch(/alert handshake failure/i)
    expect(s.server.laneStreamsServed()).toBe(1)
    expect(await rawHave(session, map)).toBe(3)
    expect(s.server.laneStreamsServed()).toBe(2)
  })

  it('asks for a new session when the lane no longer knows the one it holds, and uses the lane', async () => {
    // A lane on a fixed port, so that a restart forgets its sessions but not its address.
    const probe = createServer()
    probe.listen(0, '127.0.0.1')
    await once(probe, 'listening')
    const address = probe.address()
    const port = typeof address === 'object' && address !== null ? address.port : 0
    await new Promise((resolve) => probe.close(resolve))
    const n = await node()
    const source = createMemoryPieceSource()
    const server = createPieceServer({ libp2p: n.libp2p, source }, { lane: { host: '127.0.0.1', port } })
    await server.start()
    cleanups.push(() => server.stop())
    const leecher = await node()
    const { bytes, map } = blob(2 * PIECE)
    source.putBlob(map.digest, bytes, PIECE)
    let sessionRequests = 0
    const counting = {
      dial: (...args: Parameters<P2PNode['libp2p']['dial']>) => {
        sessionRequests++
        return leecher.libp2p.dial(...args)
      },
    }
    const dialer = createLaneDialer({ libp2p: counting })
    const target = n.getMultiaddrs()
    const fetchOver = async (index: number): Promise<Buffer> => {
      const stream = await dialer.open('seed', target, PIECES_PROTOCOL, {
        signal: AbortSignal.timeout(5_000),
      })
      expect(stream).toBeInstanceOf(LaneStream)
      stream!.send(encodeMessage({ type: 'piece-request', digest: map.digest, indexes: [index] }))
      const reply = readAll(stream!)
      await stream!.close({ signal: AbortSignal.timeout(5_000) })
      return (await reply).subarray(-PIECE)
    }
    expect(await fetchOver(0)).toEqual(bytes.subarray(0, PIECE))
    expect(sessionRequests).toBe(1)
    await server.stop()
    await server.start()
    expect(server.lanePort()).toBe(port)
    // The held session's identity names nothing now: the server fails the handshake for
    // want of a key, the dialer asks for a new session and the lane carries the request.
    expect(await fetchOver(1)).toEqual(bytes.subarray(PIECE, 2 * PIECE))
    expect(sessionRequests).toBe(2)
    expect(dialer.blocked('seed')).toBe(false)
    expect(server.laneStreamsServed()).toBe(1)
  })

  it('refuses a lane server that answers with a certificate instead of the session key', async () => {
    const s = await seed(true)
    const leecher = await node()
    // It does not hold the key, but has a certificate the client trusts (its CA, in a
    // context of the lane's TLS options plus that CA): only the lane's own checks
    // (checkServerIdentity, isSessionReused) stand in its way.
    const impostor = createTlsServer(
      { key: IMPOSTOR_KEY, cert: IMPOSTOR_CERT, minVersion: 'TLSv1.3' },
      (socket) => {
        socket.on('error', () => {})
        socket.write(Buffer.from('SHL3\0', 'latin1'))
      },
    )
    impostor.listen(0, '127.0.0.1')
    await once(impostor, 'listening')
    cleanups.push(() => {
      impostor.close()
    })
    const address = impostor.address()
    const port = typeof address === 'object' && address !== null ? address.port : 0
    const dialer = createLaneDialer(
      { libp2p: leecher.libp2p },
      {
        connect: ({ secureContext: _lanes, ...options }) =>
          tlsConnect({
            ...options,
            port,
            ca: IMPOSTOR_CERT,
            minVersion: 'TLSv1.3',
            ciphers: 'TLS_AES_128_GCM_SHA256',
          }),
      },
    )
    const stream = await dialer.open('seed', s.node.getMultiaddrs(), HAVE_PROTOCOL, {
      signal: AbortSignal.timeout(5_000),
    })
    expect(stream).toBeUndefined()
    // Written off like any lane that fails its handshake: libp2p for a while.
    expect(dialer.blocked('seed')).toBe(true)
  })

  it('ends a socket that sends garbage instead of a TLS handshake, and keeps serving', async () => {
    const { s, leecher, map } = await seedWithBlob(true, 1)
    const session = await askSession(leecher, s.node)
    const socket = connect(session.port, '127.0.0.1')
    socket.on('error', () => {})
    await once(socket, 'connect')
    const closed = once(socket, 'close')
    socket.write(Buffer.from('GET / HTTP/1.1\r\n\r\n'.repeat(8)))
    socket.resume()
    await closed
    expect(s.server.laneStreamsServed()).toBe(0)
    expect(await rawHave(session, map)).toBe(1)
    expect(s.server.laneStreamsServed()).toBe(1)
  })

  it('shares one session request between callers, each under its own deadline', async () => {
    const s = await seed(true)
    const leecher = await node()
    // Session requests reach the seed 300 ms late (a slow dial).
    const slow = {
      dial: async (...args: Parameters<P2PNode['libp2p']['dial']>) => {
        await new Promise((resolve) => setTimeout(resolve, 300))
        return leecher.libp2p.dial(...args)
      },
    }
    const dialer = createLaneDialer({ libp2p: slow })
    const impatient = dialer.open('seed', s.node.getMultiaddrs(), HAVE_PROTOCOL, {
      signal: AbortSignal.timeout(50),
    })
    const patient = dialer.open('seed', s.node.getMultiaddrs(), HAVE_PROTOCOL, {
      signal: AbortSignal.timeout(5_000),
    })
    await expect(impatient).rejects.toMatchObject({ name: 'TimeoutError' })
    // The first caller giving up did not fail the shared request: the second gets the lane.
    const stream = await patient
    expect(stream).toBeDefined()
    stream!.abort(new Error('done'))
  })

  it('closes the session stream when the peer refuses a lane session', async () => {
    const refuser = await node()
    let ended: () => void = () => {}
    const remoteEnded = new Promise<void>((resolve) => {
      ended = resolve
    })
    await refuser.libp2p.handle(LANE_PROTOCOL, async (stream) => {
      const reply = Buffer.alloc(1 + 2 + 16 + 32 + 4)
      reply.writeUInt8(1, 0)
      stream.send(reply)
      // The client's end of the exchange shows as the end of what it sends.
      for await (const _ of stream) {
        // nothing is expected after the request byte
      }
      ended()
      await stream.close()
    })
    const leecher = await node()
    const dialer = createLaneDialer({ libp2p: leecher.libp2p })
    expect(
      await dialer.open('refuser', refuser.getMultiaddrs(), HAVE_PROTOCOL, {
        signal: AbortSignal.timeout(5_000),
      }),
    ).toBeUndefined()
    await remoteEnded
  })

  it('waits for a slow handshake under the request deadline, but not for a connect that never completes', async () => {
    const { s, leecher } = await seedWithBlob(true, 1)
    // The peer's answers come late (a starved node): the lane is still used.
    const { dialer: patient } = await throughProxy(
      leecher,
      s.server.lanePort() as number,
      { delayServerMs: 600 },
      { connectTimeoutMs: 200 },
    )
    const stream = await patient.open('seed', s.node.getMultiaddrs(), HAVE_PROTOCOL, {
      signal: AbortSignal.timeout(5_000),
    })
    expect(stream).toBeDefined()
    stream!.abort(new Error('done'))
    // A socket whose connect never completes (a port that drops packets): libp2p instead,
    // after connectTimeoutMs, and the lane is given up after connectGiveUpMs.
    const blackhole = createLaneDialer(
      { libp2p: leecher.libp2p },
      {
        connectTimeoutMs: 200,
        connectGiveUpMs: 600,
        // A host name whose look-up never answers: the socket stays connecting.
        connect: (options) => tlsConnect(withLookup(options, 'lane.invalid', () => {})),
      },
    )
    const started = Date.now()
    expect(
      await blackhole.open('seed', s.node.getMultiaddrs(), HAVE_PROTOCOL, {
        signal: AbortSignal.timeout(5_000),
      }),
    ).toBeUndefined()
    expect(Date.now() - started).toBeLessThan(2_000)
    expect(blackhole.blocked('seed')).toBe(false)
    await new Promise((resolve) => setTimeout(resolve, 800))
    expect(blackhole.blocked('seed')).toBe(true)
    // And it is not tried again for a while: the next request goes over libp2p at once.
    const again = Date.now()
    expect(
      await blackhole.open('seed', s.node.getMultiaddrs(), HAVE_PROTOCOL, {
        signal: AbortSignal.timeout(5_000),
      }),
    ).toBeUndefined()
    expect(Date.now() - again).toBeLessThan(100)
  })

  it('keeps a lane that connected after its request went over libp2p, for the next request', async () => {
    const { s, leecher, map } = await seedWithBlob(true, 1)
    const port = s.server.lanePort() as number
    // The SYN waits behind a full queue: the connect completes 600 ms late.
    let connects = 0
    const dialer = createLaneDialer(
      { libp2p: leecher.libp2p },
      {
        connectTimeoutMs: 200,
        connect: (options) => {
          connects++
          // The look-up of a host name answers 600 ms late, then the socket connects.
          return tlsConnect({
            ...withLookup(options, 'lane.test', (_host, _options, callback) => {
              setTimeout(() => callback(null, '127.0.0.1', 4), 600)
            }),
            port,
          })
        },
      },
    )
    expect(
      await dialer.open('seed', s.node.getMultiaddrs(), HAVE_PROTOCOL, {
        signal: AbortSignal.timeout(5_000),
      }),
    ).toBeUndefined()
    expect(dialer.blocked('seed')).toBe(false)
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    // The late lane is taken at once, without a new connect, and works.
    const started = Date.now()
    const stream = await dialer.open('seed', s.node.getMultiaddrs(), HAVE_PROTOCOL, {
      signal: AbortSignal.timeout(5_000),
    })
    // A new connect would wait 600 ms for its look-up; the bound leaves room for a
    // loaded test machine.
    expect(Date.now() - started).toBeLessThan(500)
    expect(connects).toBe(1)
    expect(stream).toBeInstanceOf(LaneStream)
    stream!.send(encodeMessage({ type: 'have-request', digest: map.digest }))
    const reply = await createMessageReader(stream!).read({ signal: AbortSignal.timeout(5_000) })
    expect(reply).toMatchObject({ type: 'have-reply', status: 'ok' })
    stream!.abort(new Error('done'))
    dialer.close()
  })

  it('has TLS decrypt the pieces a reader reads into place straight into them', async () => {
    const s = await seed(true)
    const leecher = await node()
    const pieceSize = 2 * 1024 * 1024
    const bytes = randomBytes(2 * pieceSize)
    s.source.putBlob(digestOf(bytes), bytes, pieceSize)
    const dialer = createLaneDialer({ libp2p: leecher.libp2p })
    const stream = await dialer.open('seed', s.node.getMultiaddrs(), PIECES_PROTOCOL, {
      signal: AbortSignal.timeout(5_000),
    })
    stream!.send(encodeMessage({ type: 'piece-request', digest: digestOf(bytes), indexes: [0, 1] }))
    const reader = createMessageReader(stream!)
    for (const index of [0, 1]) {
      expect(await reader.read()).toMatchObject({
        type: 'piece-header',
        index,
        status: 'ok',
        length: pieceSize,
      })
      // In shared memory, as the agent's piece buffers are.
      const target = new Uint8Array(new SharedArrayBuffer(pieceSize))
      let covered = 0
      await reader.readInto(target, {
        onCopied: (part) => {
          expect(part.byteOffset).toBe(covered)
          covered += part.byteLength
        },
      })
      expect(covered).toBe(pieceSize)
      expect(Buffer.from(target).equals(bytes.subarray(index * pieceSize, (index + 1) * pieceSize))).toBe(
        true,
      )
    }
    // Most of the bytes were not copied: TLS put them there (what arrived before the
    // reader asked for its piece was queued and copied).
    expect(stream!.landedInPlace).toBeGreaterThan(pieceSize)
    await stream!.close({ signal: AbortSignal.timeout(5_000) })
    expect(stream!.status).toBe('closed')
  })

  it('stops reading a lane socket whose reader falls behind, and goes on when it reads', async () => {
    const s = await seed(true)
    const leecher = await node()
    const pieceSize = 1024 * 1024
    const pieces = 24
    const bytes = randomBytes(pieces * pieceSize)
    s.source.putBlob(digestOf(bytes), bytes, pieceSize)
    const dialer = createLaneDialer({ libp2p: leecher.libp2p })
    const stream = await dialer.open('seed', s.node.getMultiaddrs(), PIECES_PROTOCOL, {
      signal: AbortSignal.timeout(5_000),
    })
    const indexes = Array.from({ length: pieces }, (_, i) => i)
    stream!.send(encodeMessage({ type: 'piece-request', digest: digestOf(bytes), indexes }))
    // Nobody reads: what arrives is queued until the queue passes its high water mark
    // (8 MiB), then the socket stops reading (onread's sockets pause by readStop).
    const state = stream as unknown as { queued: number; paused: boolean }
    let last = -1
    while (state.queued !== last) {
      last = state.queued
      await new Promise((resolve) => setTimeout(resolve, 300))
    }
    expect(state.paused).toBe(true)
    expect(state.queued).toBeGreaterThan(8 * 1024 * 1024)
    expect(state.queued).toBeLessThan(9 * 1024 * 1024)
    // Reading resumes the socket, and every piece comes through whole.
    const reader = createMessageReader(stream!)
    const target = new Uint8Array(pieceSize)
    for (const index of indexes) {
      expect(await reader.read()).toMatchObject({ type: 'piece-header', index, status: 'ok' })
      await reader.readInto(target)
      expect(Buffer.from(target).equals(bytes.subarray(index * pieceSize, (index + 1) * pieceSize))).toBe(
        true,
      )
    }
    expect(state.paused).toBe(false)
    await stream!.close({ signal: AbortSignal.timeout(5_000) })
  })

  it('resets a stream that names a protocol the lane does not serve', async () => {
    const s = await seed(true)
    const leecher = await node()
    const dialer = createLaneDialer({ libp2p: leecher.libp2p })
    const stream = await dialer.open('seed', s.node.getMultiaddrs(), '/shoal/unknown/1.0.0', {
      signal: AbortSignal.timeout(5_000),
    })
    await expect(readAll(stream!)).rejects.toThrow('is not served on the lane')
    expect(stream!.status).toBe('reset')
    expect(s.server.laneStreamsServed()).toBe(0)
  })

  it('resets a lane socket whose frame is out of bounds or out of order, before reading it', async () => {
    const { s, leecher, map } = await seedWithBlob(true, 1)
    const session = await askSession(leecher, s.node)
    const open = frame(1, Buffer.from(HAVE_PROTOCOL))
    const request = frame(0, encodeMessage({ type: 'have-request', digest: map.digest }))
    const cases: Array<[Buffer, RegExp]> = [
      // A 2 GiB data frame, after a valid open: not waited for.
      [Buffer.concat([open, frame(0, request, 0x8000_0000)]), /lane frame of 2147483648 bytes/],
      [Buffer.concat([open, frame(0, new Uint8Array(0), 0)]), /lane frame of 0 bytes/],
      [Buffer.concat([open, frame(9, Buffer.from('x'))]), /unknown lane frame kind 9/],
      [Buffer.concat([open, frame(2, new Uint8Array(0)), request]), /lane data after end/],
      [Buffer.concat([open, open]), /unexpected lane open/],
      [frame(1, Buffer.alloc(300, 0x61)), /lane protocol id too long/],
      [request, /lane stream used before it was opened/],
    ]
    for (const [bad, reason] of cases) {
      const secure = await rawLane(session.port, session.id, session.key)
      if (secure instanceof Error) throw secure
      secure.on('error', () => {})
      const parts: Buffer[] = []
      secure.on('data', (chunk: Buffer) => parts.push(chunk))
      secure.resume()
      secure.write(bad)
      await once(secure, 'close')
      // The server resets the stream, naming the fault, and ends the socket.
      const frames = framesOf(Buffer.concat(parts))
      expect(frames.at(-1)?.kind).toBe(3)
      expect(frames.at(-1)?.payload.toString()).toMatch(reason)
    }
    // The opens before a bad frame ran the handler; the rest did not.
    expect(s.server.laneStreamsServed()).toBe(5)
    // The same socket made by hand, speaking correctly, is served.
    expect(await rawHave(session, map)).toBe(1)
    const client = createPieceClient({ libp2p: leecher.libp2p }, { lane: true })
    expect(pieceMatches(map, 0, await client.fetchPiece(s.node.getMultiaddrs(), map.digest, 0))).toBe(true)
    expect(s.server.laneStreamsServed()).toBe(7)
  })

  it('refuses a replayed lane socket and garbage, and keeps serving', async () => {
    const { s, leecher, map } = await seedWithBlob(true, 2)
    const lanePort = s.server.lanePort() as number
    const client = createPieceClient({ libp2p: leecher.libp2p }, { lane: true, idleStreamMs: 0 })
    // The recorded socket: handshake, open, request, end.
    const { dialer, fromClient } = await throughProxy(leecher, lanePort)
    const stream = await dialer.open('seed', s.node.getMultiaddrs(), PIECES_PROTOCOL, {
      signal: AbortSignal.timeout(5_000),
    })
    stream!.send(encodeMessage({ type: 'piece-request', digest: map.digest, indexes: [0] }))
    const got = readAll(stream!)
    await stream!.close({ signal: AbortSignal.timeout(5_000) })
    expect((await got).byteLength).toBeGreaterThan(PIECE)
    expect(s.server.laneStreamsServed()).toBe(1)

    // Replayed byte for byte, in the steps the client took: the ClientHello is answered
    // (its binder holds), but TLS's fresh server random and key share make the recorded
    // Finished fail, so no handler runs.
    const recorded = Buffer.concat(fromClient)
    expect(recorded[0]).toBe(0x16)
    const clientHello = 5 + recorded.readUInt16BE(3)
    const replay = connect(lanePort, '127.0.0.1')
    replay.on('error', () => {})
    await once(replay, 'connect')
    replay.write(recorded.subarray(0, clientHello))
    // The server did answer the replayed ClientHello before failing.
    const answered = await readSome(replay, 1)
    expect(answered[0]).toBe(0x16)
    const replayClosed = once(replay, 'close')
    replay.write(recorded.subarray(clientHello))
    replay.resume()
    await replayClosed
    // Replayed in one write: the same.
    const flood = connect(lanePort, '127.0.0.1')
    flood.on('error', () => {})
    flood.resume()
    const floodClosed = once(flood, 'close')
    flood.write(recorded)
    await floodClosed
    // Garbage and a truncated ClientHello.
    for (const junk of [Buffer.from('GET / HTTP/1.1\r\n\r\n'.repeat(4)), recorded.subarray(0, 40)]) {
      const socket: Socket = connect(lanePort, '127.0.0.1')
      socket.on('error', () => {})
      socket.resume()
      socket.end(junk)
      await once(socket, 'close')
    }
    expect(s.server.laneStreamsServed()).toBe(1)
    expect(pieceMatches(map, 1, await client.fetchPiece(s.node.getMultiaddrs(), map.digest, 1))).toBe(true)
    expect(s.server.laneStreamsServed()).toBe(2)
  })
})
