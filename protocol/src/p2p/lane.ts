/**
 * The piece lane (ADR 0008): piece and have exchanges on plain TCP sockets of their own,
 * sealed with keys handed out over the peers' noise-encrypted libp2p connection.
 *
 * Why: on a libp2p connection every piece byte passes noise's 64 KiB frames, yamux and
 * the stream event layers, each with its own buffers and events per socket read; in
 * bench:transfer that costs twice the CPU of the cipher and the hash themselves. A lane
 * socket carries one stream: each send is one sealed frame of up to 1 MiB, and each
 * received frame is opened once, straight from the chunks it arrived in.
 *
 * Trust: a peer asks for a session over LANE_PROTOCOL on its libp2p connection (noise,
 * the node's allow-list or swarm key apply). The server answers with a port, a random
 * session id and a random 32-byte key, bound to the asking peer's id. A lane socket
 * proves it holds the key by its first frame opening under keys derived from it and from
 * two fresh salts, one from each side, so a recorded socket cannot be replayed. Every
 * frame is ChaCha20-Poly1305 with a counter nonce per direction (as noise); a frame that
 * does not open ends the socket.
 *
 * Wire (all integers big-endian):
 *
 *   client hello   'SHL1' | session id (16) | client salt (16)
 *   server hello   'SHL1' | u8 status (0 ok, 1 unknown session, 2 too many sockets of
 *                  this peer) | server salt (16)
 *   frame          u32 sealed length (17 .. MAX_FRAME_PAYLOAD + 17) | sealed
 *   sealed         ChaCha20-Poly1305(u8 kind | payload) | tag (16)
 *   kind           0 data, 1 open (payload: protocol id, utf-8; the client's first frame),
 *                  2 end (the sender sends no more), 3 reset (payload: reason, utf-8)
 *
 *   keys           HKDF-SHA256(session key, client salt | server salt,
 *                  'shoal lane c2s' or 'shoal lane s2c', 32 bytes)
 *   nonce          4 zero bytes | u64 frame counter of the direction
 */
import {
  type KeyObject,
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  hkdfSync,
  randomBytes,
} from 'node:crypto'
import { type Server, type Socket, createServer, connect as netConnect } from 'node:net'
import type { Libp2p, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { Uint8ArrayList } from 'uint8arraylist'
import { raceSignal } from '../abort.js'
import { DecodeError, ShoalError } from '../errors.js'
import { createMessageReader } from '../messages/index.js'
import { LANE_PROTOCOL } from '../protocols.js'
import type { PieceStream } from './stream-io.js'

const MAGIC = Buffer.from('SHL1', 'latin1')
const CLIENT_HELLO_BYTES = 4 + 16 + 16
const SERVER_HELLO_BYTES = 4 + 1 + 16
const TAG_BYTES = 16
/** Largest payload of one frame; larger sends are split. */
export const MAX_FRAME_PAYLOAD = 1024 * 1024
const MAX_SEALED = MAX_FRAME_PAYLOAD + 1 + TAG_BYTES
const MAX_PROTOCOL_BYTES = 256
const KIND_DATA = 0
const KIND_OPEN = 1
const KIND_END = 2
const KIND_RESET = 3
/** Unread plaintext above which a lane stops reading its socket. */
const READ_HIGH_WATER = 8 * 1024 * 1024
const SESSION_REQUEST_VERSION = 1
const SESSION_REPLY_BYTES = 1 + 2 + 16 + 32 + 4

/** The lane socket failed or the far end reset it; named as libp2p's stream reset. */
export class LaneResetError extends ShoalError {
  constructor(message: string, detail?: unknown) {
    super(message, detail)
    this.name = 'StreamResetError'
  }
}

interface Keys {
  send: KeyObject
  receive: KeyObject
}

function deriveKeys(
  sessionKey: Uint8Array,
  clientSalt: Uint8Array,
  serverSalt: Uint8Array,
  client: boolean,
): Keys {
  const salt = Buffer.concat([clientSalt, serverSalt])
  const c2s = createSecretKey(Buffer.from(hkdfSync('sha256', sessionKey, salt, 'shoal lane c2s', 32)))
  const s2c = createSecretKey(Buffer.from(hkdfSync('sha256', sessionKey, salt, 'shoal lane s2c', 32)))
  return client ? { send: c2s, receive: s2c } : { send: s2c, receive: c2s }
}

function nonce(counter: bigint): Buffer {
  const n = Buffer.alloc(12)
  n.writeBigUInt64BE(counter, 4)
  return n
}

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } {
  let resolve: () => void = () => {}
  let reject: (err: Error) => void = () => {}
  const promise = new Promise<void>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

/**
 * One stream over one lane socket, with the shape the piece client and server use from a
 * libp2p stream (PieceStream): send with back-pressure, half-close, reset, async
 * iteration of received bytes, `drain` and `close` events.
 */
export class LaneStream extends EventTarget implements PieceStream {
  status: 'open' | 'closing' | 'closed' | 'aborted' | 'reset' = 'open'
  writeStatus: 'writable' | 'closing' | 'closed' = 'writable'
  readStatus: 'readable' | 'closed' = 'readable'
  remoteWriteStatus: 'writable' | 'closed' = 'writable'
  remoteReadStatus: 'readable' | 'closed' = 'readable'
  protocol = ''

  private readonly socket: Socket
  private readonly keys: Keys
  private sendCounter = 0n
  private receiveCounter = 0n
  private readonly incoming = new Uint8ArrayList()
  private frameLength: number | undefined
  private readonly queue: Uint8ArrayList[] = []
  private queued = 0
  private waiter: (() => void) | undefined
  private failure: Error | undefined
  private paused = false
  private readonly onOpenFrame: ((protocol: string) => void) | undefined
  private readonly remoteEnded = deferred()

  /** `leftover`: bytes that followed the hello. `onOpen`: server side, told the protocol. */
  constructor(
    socket: Socket,
    keys: Keys,
    leftover: Uint8Array | undefined,
    onOpen?: (protocol: string) => void,
  ) {
    super()
    this.socket = socket
    this.keys = keys
    this.onOpenFrame = onOpen
    this.remoteEnded.promise.catch(() => {})
    socket.on('data', (chunk: Buffer) => this.receive(chunk))
    socket.on('drain', () => this.dispatchEvent(new Event('drain')))
    socket.on('error', (err) => this.fail(new LaneResetError(`lane socket failed: ${err.message}`)))
    socket.on('close', () => {
      if (this.remoteWriteStatus === 'writable' || this.writeStatus !== 'closed') {
        this.fail(new LaneResetError('lane socket closed'))
      } else {
        this.finish('closed')
      }
    })
    if (leftover !== undefined && leftover.byteLength > 0) this.receive(leftover)
  }

  /** Seals `data` into frames of at most MAX_FRAME_PAYLOAD; false when the socket is full. */
  send(data: Uint8Array | Uint8ArrayList): boolean {
    if (this.writeStatus !== 'writable')
      throw new LaneResetError(`cannot send: the lane stream is ${this.status}`)
    const bytes = data instanceof Uint8Array ? data : data.subarray()
    let ok = true
    if (bytes.byteLength === 0) return !this.socket.writableNeedDrain
    for (let at = 0; at < bytes.byteLength; at += MAX_FRAME_PAYLOAD) {
      ok = this.writeFrame(KIND_DATA, bytes.subarray(at, Math.min(bytes.byteLength, at + MAX_FRAME_PAYLOAD)))
    }
    return ok
  }

  /** Client side: names the protocol (the first frame). */
  open(protocol: string): void {
    this.protocol = protocol
    this.writeFrame(KIND_OPEN, Buffer.from(protocol, 'utf8'))
  }

  private writeFrame(kind: number, payload: Uint8Array): boolean {
    const cipher = createCipheriv('chacha20-poly1305', this.keys.send, nonce(this.sendCounter++), {
      authTagLength: TAG_BYTES,
    })
    const head = Buffer.allocUnsafe(5)
    head.writeUInt32BE(1 + payload.byteLength + TAG_BYTES, 0)
    cipher.update(Uint8Array.of(kind)).copy(head, 4)
    const body = payload.byteLength > 0 ? cipher.update(payload) : undefined
    cipher.final()
    const tag = cipher.getAuthTag()
    this.socket.cork()
    this.socket.write(head)
    if (body !== undefined) this.socket.write(body)
    const ok = this.socket.write(tag)
    this.socket.uncork()
    return ok
  }

  private receive(chunk: Uint8Array): void {
    if (this.status !== 'open' && this.status !== 'closing') return
    this.incoming.append(chunk)
    try {
      for (;;) {
        // A reset frame, or a failure, ends the stream: nothing after it is read.
        if (this.status !== 'open' && this.status !== 'closing') return
        if (this.frameLength === undefined) {
          if (this.incoming.byteLength < 4) return
          const n = this.incoming.getUint32(0)
          if (n < 1 + TAG_BYTES || n > MAX_SEALED) throw new DecodeError(`lane frame of ${n} bytes`)
          this.incoming.consume(4)
          this.frameLength = n
        }
        if (this.incoming.byteLength < this.frameLength) return
        const sealed = this.incoming.sublist(0, this.frameLength)
        this.incoming.consume(this.frameLength)
        this.frameLength = undefined
        this.openFrame(sealed)
      }
    } catch (err) {
      this.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }

  private openFrame(sealed: Uint8ArrayList): void {
    const decipher = createDecipheriv('chacha20-poly1305', this.keys.receive, nonce(this.receiveCounter++), {
      authTagLength: TAG_BYTES,
    })
    const bodyLength = sealed.byteLength - TAG_BYTES
    decipher.setAuthTag(sealed.subarray(bodyLength))
    const plain = new Uint8ArrayList()
    for (const part of sealed.sublist(0, bodyLength)) {
      const out = decipher.update(part)
      if (out.byteLength > 0) plain.append(out)
    }
    try {
      decipher.final()
    } catch {
      throw new DecodeError('lane frame failed authentication')
    }
    const kind = plain.get(0)
    plain.consume(1)
    if (this.onOpenFrame !== undefined && this.protocol === '' && kind !== KIND_OPEN) {
      throw new DecodeError('lane stream used before it was opened')
    }
    if (kind === KIND_DATA) {
      if (this.remoteWriteStatus !== 'writable') throw new DecodeError('lane data after end')
      if (plain.byteLength === 0) return
      this.queue.push(plain)
      this.queued += plain.byteLength
      if (this.queued > READ_HIGH_WATER && !this.paused) {
        this.paused = true
        this.socket.pause()
      }
      this.wake()
    } else if (kind === KIND_OPEN) {
      if (this.onOpenFrame === undefined || this.protocol !== '')
        throw new DecodeError('unexpected lane open')
      if (plain.byteLength > MAX_PROTOCOL_BYTES) throw new DecodeError('lane protocol id too long')
      this.protocol = Buffer.from(plain.subarray()).toString('utf8')
      this.onOpenFrame(this.protocol)
    } else if (kind === KIND_END) {
      this.remoteWriteStatus = 'closed'
      this.remoteEnded.resolve()
      this.wake()
      if (this.writeStatus === 'closed') this.socket.end()
    } else if (kind === KIND_RESET) {
      // Reset by the peer: no reset goes back, the stream is simply gone.
      const reason = Buffer.from(plain.subarray()).toString('utf8').slice(0, 200)
      this.fail(new LaneResetError(`the peer reset the lane stream: ${reason}`))
    } else {
      throw new DecodeError(`unknown lane frame kind ${kind}`)
    }
  }

  private wake(): void {
    const w = this.waiter
    this.waiter = undefined
    w?.()
  }

  private fail(err: Error): void {
    if (this.status === 'closed' || this.status === 'aborted' || this.status === 'reset') return
    this.failure ??= err
    this.remoteEnded.reject(err)
    this.finish('reset')
  }

  private finish(status: 'closed' | 'aborted' | 'reset'): void {
    if (this.status === 'closed' || this.status === 'aborted' || this.status === 'reset') return
    this.status = status
    this.writeStatus = 'closed'
    this.readStatus = 'closed'
    if (status !== 'closed') {
      this.remoteWriteStatus = 'closed'
      this.remoteReadStatus = 'closed'
    }
    if (!this.socket.destroyed && status !== 'closed') this.socket.destroy()
    this.wake()
    this.dispatchEvent(new Event('close'))
  }

  /** Ends our sending, then waits for the peer to end its own (or `signal`). */
  async close(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.status !== 'open' && this.status !== 'closing') return
    if (this.writeStatus === 'writable') {
      this.writeStatus = 'closed'
      this.status = 'closing'
      this.writeFrame(KIND_END, new Uint8Array(0))
    }
    if (this.remoteWriteStatus === 'writable') {
      const { signal } = options
      signal?.throwIfAborted()
      let onAbort: (() => void) | undefined
      try {
        await new Promise<void>((resolve, reject) => {
          this.remoteEnded.promise.then(resolve, reject)
          if (signal !== undefined) {
            onAbort = () => reject(signal.reason)
            signal.addEventListener('abort', onAbort, { once: true })
          }
        })
      } finally {
        if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
      }
    }
    this.socket.end()
    this.finish('closed')
  }

  /** Resets the stream: the peer sees a reset, unread bytes are dropped. */
  abort(err: Error): void {
    if (this.status === 'closed' || this.status === 'aborted' || this.status === 'reset') return
    this.failure ??= err
    try {
      if (!this.socket.destroyed && this.socket.writable) {
        this.writeFrame(KIND_RESET, Buffer.from(err.message.slice(0, 200), 'utf8'))
      }
    } catch {
      // The socket is going anyway.
    }
    this.remoteEnded.reject(err)
    this.socket.end()
    this.finish('aborted')
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8ArrayList> {
    for (;;) {
      const next = this.queue.shift()
      if (next !== undefined) {
        this.queued -= next.byteLength
        if (this.paused && this.queued < READ_HIGH_WATER / 4) {
          this.paused = false
          this.socket.resume()
        }
        yield next
        continue
      }
      if (this.failure !== undefined) throw this.failure
      if (this.remoteWriteStatus === 'closed' || this.status === 'closed') return
      await new Promise<void>((resolve) => {
        this.waiter = resolve
      })
    }
  }
}

/** Reads exactly `n` bytes from a fresh socket (the hello), then hands back what followed. */
function readExactly(
  socket: Socket,
  n: number,
  signal: AbortSignal,
): Promise<{ head: Buffer; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let got = 0
    const cleanup = (): void => {
      socket.off('data', onData)
      socket.off('error', onError)
      socket.off('close', onClose)
      signal.removeEventListener('abort', onAbort)
    }
    const onData = (chunk: Buffer): void => {
      parts.push(chunk)
      got += chunk.byteLength
      if (got < n) return
      cleanup()
      socket.pause()
      const all = Buffer.concat(parts)
      resolve({ head: all.subarray(0, n), rest: all.subarray(n) })
    }
    const onError = (err: Error): void => {
      cleanup()
      reject(new LaneResetError(`lane socket failed: ${err.message}`))
    }
    const onClose = (): void => {
      cleanup()
      reject(new LaneResetError('lane socket closed during the hello'))
    }
    const onAbort = (): void => {
      cleanup()
      reject(signal.reason)
    }
    signal.addEventListener('abort', onAbort, { once: true })
    socket.on('data', onData)
    socket.on('error', onError)
    socket.on('close', onClose)
    socket.resume()
  })
}

/**
 * The host a node's piece lane listens on: that of its first IPv4 or IPv6 TCP listen
 * multiaddr, or undefined when it has none (then the node serves no lane).
 */
export function laneHostOf(listen: readonly string[]): string | undefined {
  for (const text of listen) {
    const parts = text.split('/')
    if ((parts[1] === 'ip4' || parts[1] === 'ip6') && parts[3] === 'tcp' && parts[2]) return parts[2]
  }
  return undefined
}

/** A session handed out to one peer. */
interface Session {
  id: string
  key: Buffer
  remotePeer: PeerId
  /** remotePeer as a string, the key of the per-peer maps. */
  peer: string
  expiresAt: number
}

/** What a lane stream's handler learns about its peer. */
export interface LanePeer {
  remotePeer: PeerId
}

/** Options for createLaneServer. */
export interface LaneServerInit {
  /** Address to listen on (the node's libp2p TCP address). */
  host: string
  /** @default 0 (any free port) */
  port?: number
  /** How long a session stays valid after it was last handed out. @default 600000 */
  sessionTtlMs?: number
  /** A new socket must finish its hello within this. @default 10000 */
  helloTimeoutMs?: number
  /** Lane sockets open at once, hellos included. @default 4096 */
  maxSockets?: number
  /** Lane sockets one peer may hold open; more are refused (the peer uses libp2p streams). @default 64 */
  maxSocketsPerPeer?: number
  logger?: Logger
}

/** Serves lane sockets and hands out sessions over LANE_PROTOCOL. */
export interface LaneServer {
  start(): Promise<void>
  stop(): Promise<void>
  /** The bound port, once started. */
  port(): number
  /** Lane streams opened by peers since start. */
  streamsServed(): number
}

/** The protocols a lane serves, by id, with their handlers. */
export type LaneHandlers = ReadonlyMap<string, (stream: PieceStream, peer: LanePeer) => Promise<void>>

/** Creates the lane server of a node; handlers are the piece server's. */
export function createLaneServer(
  components: { libp2p: Pick<Libp2p, 'handle' | 'unhandle'>; handlers: LaneHandlers },
  init: LaneServerInit,
): LaneServer {
  const { libp2p, handlers } = components
  const ttlMs = init.sessionTtlMs ?? 600_000
  const helloTimeoutMs = init.helloTimeoutMs ?? 10_000
  const maxSockets = init.maxSockets ?? 4096
  const maxSocketsPerPeer = init.maxSocketsPerPeer ?? 64
  /** Open lane sockets by peer. */
  const perPeer = new Map<string, number>()
  const log = init.logger
  const sessions = new Map<string, Session>()
  const byPeer = new Map<string, Session>()
  const sockets = new Set<Socket>()
  let server: Server | undefined
  let boundPort = 0
  let served = 0

  function sweep(now: number): void {
    for (const s of sessions.values()) {
      if (s.expiresAt > now) continue
      sessions.delete(s.id)
      if (byPeer.get(s.peer) === s) byPeer.delete(s.peer)
    }
  }

  function sessionFor(peer: PeerId): Session {
    const now = Date.now()
    sweep(now)
    const name = peer.toString()
    let s = byPeer.get(name)
    if (s === undefined) {
      s = {
        id: randomBytes(16).toString('hex'),
        key: randomBytes(32),
        remotePeer: peer,
        peer: name,
        expiresAt: 0,
      }
      sessions.set(s.id, s)
      byPeer.set(name, s)
    }
    s.expiresAt = now + ttlMs
    return s
  }

  async function accept(socket: Socket): Promise<void> {
    const { head, rest } = await readExactly(socket, CLIENT_HELLO_BYTES, AbortSignal.timeout(helloTimeoutMs))
    if (!head.subarray(0, 4).equals(MAGIC)) throw new DecodeError('not a lane hello')
    const session = sessions.get(head.subarray(4, 20).toString('hex'))
    const serverSalt = randomBytes(16)
    if (session === undefined || session.expiresAt <= Date.now()) {
      socket.end(Buffer.concat([MAGIC, Uint8Array.of(1), serverSalt]))
      return
    }
    const held = perPeer.get(session.peer) ?? 0
    if (held >= maxSocketsPerPeer) {
      socket.end(Buffer.concat([MAGIC, Uint8Array.of(2), serverSalt]))
      return
    }
    perPeer.set(session.peer, held + 1)
    socket.once('close', () => {
      const n = (perPeer.get(session.peer) ?? 1) - 1
      if (n <= 0) perPeer.delete(session.peer)
      else perPeer.set(session.peer, n)
    })
    socket.write(Buffer.concat([MAGIC, Uint8Array.of(0), serverSalt]))
    const keys = deriveKeys(session.key, head.subarray(20, 36), serverSalt, false)
    const { remotePeer } = session
    const stream: LaneStream = new LaneStream(socket, keys, rest, (protocol) => {
      const handle = handlers.get(protocol)
      if (handle === undefined) {
        stream.abort(new Error(`protocol ${protocol} is not served on the lane`))
        return
      }
      served++
      handle(stream, { remotePeer }).catch((err: unknown) => {
        log?.debug({ err, peer: session.peer }, 'lane stream failed')
        stream.abort(err instanceof Error ? err : new Error(String(err)))
      })
    })
    socket.resume()
  }

  return {
    async start() {
      if (server !== undefined) return
      const srv = createServer({ pauseOnConnect: true, noDelay: true }, (socket) => {
        if (sockets.size >= maxSockets) {
          socket.destroy()
          return
        }
        sockets.add(socket)
        socket.on('close', () => sockets.delete(socket))
        socket.on('error', () => {})
        accept(socket).catch((err: unknown) => {
          log?.debug({ err }, 'lane hello failed')
          socket.destroy()
        })
      })
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject)
        srv.listen({ host: init.host, port: init.port ?? 0 }, () => {
          srv.off('error', reject)
          resolve()
        })
      })
      server = srv
      const address = srv.address()
      boundPort = typeof address === 'object' && address !== null ? address.port : 0
      await libp2p.handle(
        LANE_PROTOCOL,
        async (stream, connection) => {
          try {
            const reader = createMessageReader(stream)
            const request = await reader.readBytes(1, { signal: AbortSignal.timeout(helloTimeoutMs) })
            if (request.get(0) !== SESSION_REQUEST_VERSION)
              throw new DecodeError('unknown lane session request')
            const s = sessionFor(connection.remotePeer)
            const reply = Buffer.alloc(SESSION_REPLY_BYTES)
            reply.writeUInt8(0, 0)
            reply.writeUInt16BE(boundPort, 1)
            Buffer.from(s.id, 'hex').copy(reply, 3)
            s.key.copy(reply, 19)
            reply.writeUInt32BE(Math.floor(ttlMs / 1000), 51)
            stream.send(reply)
            await stream.close({ signal: AbortSignal.timeout(helloTimeoutMs) })
          } catch (err) {
            stream.abort(err instanceof Error ? err : new Error(String(err)))
          }
        },
        { runOnLimitedConnection: false },
      )
      log?.info({ host: init.host, port: boundPort }, 'piece lane listening')
    },
    async stop() {
      const srv = server
      if (srv === undefined) return
      server = undefined
      await libp2p.unhandle(LANE_PROTOCOL)
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => srv.close(() => resolve()))
      sessions.clear()
      byPeer.clear()
    },
    port: () => boundPort,
    streamsServed: () => served,
  }
}

/** A session as the client holds it. */
interface ClientSession {
  host: string
  port: number
  id: Buffer
  key: Buffer
  expiresAt: number
}

/** Options for createLaneDialer. */
export interface LaneDialerInit {
  /** After a peer showed it has no lane (or its lane failed), ask it again after this. @default 60000 */
  retryAfterMs?: number
  /**
   * The TCP connect to a lane must finish within this, or the peer is used over libp2p
   * (a firewall that drops the lane port). The hello after it runs under the request's
   * deadline. @default 3000
   */
  connectTimeoutMs?: number
  /**
   * Deadline of asking a peer for a lane session over libp2p. Every request waiting for
   * that session shares the one exchange and waits under its own signal. @default 10000
   */
  sessionTimeoutMs?: number
  logger?: Logger
  /** Opens the TCP socket to a lane (tests put a proxy in between). */
  connect?: (host: string, port: number) => Socket
}

/** Opens lane streams to peers that serve a lane. */
export interface LaneDialer {
  /**
   * A lane stream to `peer` for `protocol`, or undefined when the peer serves no lane
   * (then use libp2p). Throws when the peer cannot be reached at all, or the signal's
   * reason.
   */
  open(
    key: string,
    peer: PeerId | Multiaddr | Multiaddr[],
    protocol: string,
    options: { signal: AbortSignal },
  ): Promise<LaneStream | undefined>
}

/** Creates a lane dialer over a libp2p node (for sessions and the peer's address). */
export function createLaneDialer(
  components: { libp2p: Pick<Libp2p, 'dial'> },
  init: LaneDialerInit = {},
): LaneDialer {
  const { libp2p } = components
  const retryAfterMs = init.retryAfterMs ?? 60_000
  const connectTimeoutMs = init.connectTimeoutMs ?? 3_000
  const sessionTimeoutMs = init.sessionTimeoutMs ?? 10_000
  const connectSocket =
    init.connect ?? ((host: string, port: number) => netConnect({ host, port, noDelay: true }))
  const sessions = new Map<string, ClientSession>()
  const pending = new Map<string, Promise<ClientSession | undefined>>()
  const noLaneUntil = new Map<string, number>()

  async function requestSession(
    peer: PeerId | Multiaddr | Multiaddr[],
    signal: AbortSignal,
  ): Promise<ClientSession | undefined> {
    const connection = await libp2p.dial(peer, { signal })
    const host = connection.remoteAddr
      .getComponents()
      .find((c) => c.name === 'ip4' || c.name === 'ip6')?.value
    // Not a TCP/IP connection (a relay, say): no lane to dial.
    if (host === undefined) return undefined
    let stream: Awaited<ReturnType<typeof connection.newStream>>
    try {
      stream = await connection.newStream(LANE_PROTOCOL, { signal })
    } catch (err) {
      if (err instanceof Error && err.name === 'UnsupportedProtocolError') return undefined
      throw err
    }
    try {
      stream.send(Uint8Array.of(SESSION_REQUEST_VERSION))
      const reader = createMessageReader(stream)
      const reply = (await reader.readBytes(SESSION_REPLY_BYTES, { signal })).subarray()
      // The exchange is over whatever the answer: a refusal closes the stream too.
      await stream.close({ signal }).catch(() => {})
      if (reply[0] !== 0) return undefined
      const view = Buffer.from(reply.buffer, reply.byteOffset, reply.byteLength)
      const port = view.readUInt16BE(1)
      const ttlMs = view.readUInt32BE(51) * 1000
      if (port === 0) return undefined
      return {
        host,
        port,
        id: Buffer.from(view.subarray(3, 19)),
        key: Buffer.from(view.subarray(19, 51)),
        // Renewed well before the server forgets it.
        expiresAt: Date.now() + Math.max(0, ttlMs / 2),
      }
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
      throw err
    }
  }

  async function session(
    name: string,
    peer: PeerId | Multiaddr | Multiaddr[],
    signal: AbortSignal,
  ): Promise<ClientSession | undefined> {
    const s = sessions.get(name)
    if (s !== undefined && s.expiresAt > Date.now()) return s
    let p = pending.get(name)
    if (p === undefined) {
      // Shared by every request that waits for this peer's session, so it runs under a
      // deadline of its own: the first caller giving up must not fail the others.
      // What it finds is kept even when every waiter has given up meanwhile.
      p = requestSession(peer, AbortSignal.timeout(sessionTimeoutMs))
        .then((got) => {
          if (got === undefined) noLaneUntil.set(name, Date.now() + retryAfterMs)
          else sessions.set(name, got)
          return got
        })
        .finally(() => pending.delete(name))
      pending.set(name, p)
    }
    return raceSignal(p, signal)
  }

  /**
   * Connects and runs the hello. Only the TCP connect is held to connectTimeoutMs: the
   * kernel completes it however busy the peer is, so a connect that takes longer means
   * a port that drops packets. The hello needs the peer's event loop, which on a
   * starved node can lag seconds; it runs under the request's own deadline, as a libp2p
   * stream's negotiation does.
   */
  async function connectLane(
    s: ClientSession,
    signal: AbortSignal,
  ): Promise<LaneStream | 'unknown-session' | 'busy'> {
    const socket = connectSocket(s.host, s.port)
    socket.on('error', () => {})
    const connectSignal = AbortSignal.any([signal, AbortSignal.timeout(connectTimeoutMs)])
    try {
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => reject(connectSignal.reason)
        connectSignal.addEventListener('abort', onAbort, { once: true })
        socket.once('connect', () => {
          connectSignal.removeEventListener('abort', onAbort)
          resolve()
        })
        socket.once('error', (err) => {
          connectSignal.removeEventListener('abort', onAbort)
          reject(err)
        })
      })
      const clientSalt = randomBytes(16)
      socket.write(Buffer.concat([MAGIC, s.id, clientSalt]))
      const { head, rest } = await readExactly(socket, SERVER_HELLO_BYTES, signal)
      if (!head.subarray(0, 4).equals(MAGIC)) throw new DecodeError('not a lane hello')
      if (head[4] === 1 || head[4] === 2) {
        socket.destroy()
        return head[4] === 1 ? 'unknown-session' : 'busy'
      }
      if (head[4] !== 0) throw new DecodeError(`lane hello status ${head[4]}`)
      const stream = new LaneStream(socket, deriveKeys(s.key, clientSalt, head.subarray(5, 21), true), rest)
      socket.resume()
      return stream
    } catch (err) {
      socket.destroy()
      throw err
    }
  }

  return {
    async open(name, peer, protocol, { signal }) {
      if ((noLaneUntil.get(name) ?? 0) > Date.now()) return undefined
      for (let attempt = 0; attempt < 2; attempt++) {
        const s = await session(name, peer, signal)
        if (s === undefined) return undefined
        let lane: LaneStream | 'unknown-session' | 'busy'
        try {
          lane = await connectLane(s, signal)
        } catch (err) {
          signal.throwIfAborted()
          // The peer answers on libp2p but its lane does not: use libp2p for a while.
          noLaneUntil.set(name, Date.now() + retryAfterMs)
          sessions.delete(name)
          init.logger?.debug(
            { err, peer: name, host: s.host, port: s.port },
            'piece lane unreachable, using libp2p',
          )
          return undefined
        }
        // This request goes over libp2p; the lane is used again when sockets free up.
        if (lane === 'busy') return undefined
        if (lane === 'unknown-session') {
          sessions.delete(name)
          continue
        }
        lane.open(protocol)
        return lane
      }
      return undefined
    },
  }
}
