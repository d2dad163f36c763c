/**
 * The piece lane (ADR 0008, ADR 0009): piece and have exchanges on TCP sockets of their
 * own, each running TLS 1.3 with a pre-shared key handed out over the peers'
 * noise-encrypted libp2p connection.
 *
 * Why: on a libp2p connection every piece byte passes noise's 64 KiB frames, yamux and
 * the stream event layers, each with its own buffers and events per socket read; in
 * bench:transfer that costs twice the CPU of the cipher and the hash themselves. A lane
 * socket carries one stream, and its bytes are sealed and opened by OpenSSL in C++
 * (AES-GCM with the CPU's AES and carry-less multiply instructions), not by a cipher
 * object and an output buffer per frame in JS (ADR 0009).
 *
 * Trust: a peer asks for a session over LANE_PROTOCOL on its libp2p connection (noise,
 * the node's allow-list or swarm key apply). The server answers with a port, a random
 * session id and a random 32-byte key, bound to the asking peer's id. A lane socket runs
 * TLS 1.3 from its first byte, with the session key as its external PSK (identity: the
 * session id in hex, which names the session; psk_dhe_ke, so with a fresh X25519
 * exchange too) and no certificate: only a holder of the key finishes it (the client
 * refuses a server that answers with a certificate instead). TLS's fresh
 * randoms and key shares on both sides make a recorded socket replayed to the server
 * useless: the server's answer differs, and the replayed Finished does not verify. Every
 * record is authenticated (AES-128-GCM or ChaCha20-Poly1305, SHA-256 suites, as PSK
 * requires); a record that does not open fails the socket.
 *
 * Wire (ADR 0011; all integers big-endian):
 *
 *   handshake      TLS 1.3 from the socket's first byte (PSK: the session key, identity:
 *                  the session id in hex). An identity that names no live session gets
 *                  no key: the server fails the handshake (alert handshake_failure, which
 *                  the client takes for "unknown session" and asks for a new one).
 *   server status  inside TLS, the server's first bytes: 'SHL3' | u8 status (0 ok, 1 too
 *                  many sockets of this peer: the server then ends the socket). The
 *                  client sends nothing before it has the status.
 *   frame          u32 length (1 .. MAX_FRAME_PAYLOAD + 1) | u8 kind | payload
 *   kind           0 data, 1 open (payload: protocol id, utf-8; the client's first frame),
 *                  2 end (the sender sends no more), 3 reset (payload: reason, utf-8)
 *
 * Receiving (the client): node's TLS decrypts each record straight into memory the lane
 * names (tls.connect's `onread`), not into a new buffer per record: a piece's data bytes
 * into the piece itself when the reader reads into it (`landInto`), everything else into
 * a scratch buffer from which it is parsed (and data copied out).
 */
import { constants as cryptoConstants, randomBytes } from 'node:crypto'
import { type ConnectOpts, type Server, type Socket, createServer } from 'node:net'
import {
  type ConnectionOptions,
  type SecureContext,
  type TLSSocketOptions,
  type TlsOptions,
  TLSSocket,
  connect as tlsConnect,
  createSecureContext,
} from 'node:tls'
import type { Libp2p, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { Uint8ArrayList } from 'uint8arraylist'
import { raceSignal } from '../abort.js'
import { DecodeError, ShoalError } from '../errors.js'
import { createMessageReader, type LandingSource } from '../messages/index.js'
import { LANE_PROTOCOL } from '../protocols.js'
import type { PieceStream } from './stream-io.js'

const MAGIC = Buffer.from('SHL3', 'latin1')
/** The server's status, its first bytes inside TLS: magic and a status byte. */
const STATUS_BYTES = 4 + 1
const STATUS_OK = 0
const STATUS_BUSY = 1
/** OpenSSL's name for the alert a server sends when it has no key for the identity. */
const UNKNOWN_SESSION_ALERT = 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE'
/** What node's TLS decrypts at most per read (one record's plaintext). */
const SCRATCH_BYTES = 16 * 1024
/** Frame head: u32 length (kind + payload) and the kind byte. */
const HEAD_BYTES = 5
/** Frames with payloads up to this are written as one buffer (head and payload joined). */
const MAX_JOINED_PAYLOAD = 16 * 1024
/** Largest payload of one frame; larger sends are split. */
export const MAX_FRAME_PAYLOAD = 1024 * 1024
const MAX_PROTOCOL_BYTES = 256
/** Largest payload of an open, end or reset frame (a reset's reason is cut to 200 characters). */
const MAX_CONTROL_PAYLOAD = 1024
const KIND_DATA = 0
const KIND_OPEN = 1
const KIND_END = 2
const KIND_RESET = 3
/**
 * TCP keepalive on lane sockets, both ends: the kernel probes a peer idle for a minute.
 * A have watch holds its socket idle for minutes, and a peer that vanished without
 * closing it must not hold it (and its watch) for good.
 */
const KEEPALIVE = { keepAlive: true, keepAliveInitialDelay: 60_000 } as const
/** Unread plaintext above which a lane stops reading its socket. */
const READ_HIGH_WATER = 8 * 1024 * 1024
const SESSION_REQUEST_VERSION = 1
const SESSION_REPLY_BYTES = 1 + 2 + 16 + 32 + 4

/**
 * TLS of the lane: 1.3 only, the two SHA-256 suites (a PSK is tied to its hash; the
 * client's key is offered for SHA-256). No certificate is involved.
 */
const TLS_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256'

function laneSecureContext(server: boolean): SecureContext {
  return createSecureContext({
    ciphers: TLS_CIPHERS,
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    // Sessions are never resumed (each socket runs a full PSK handshake).
    ...(server ? { secureOptions: cryptoConstants.SSL_OP_NO_TICKET } : {}),
  })
}

/** The lane socket failed or the far end reset it; named as libp2p's stream reset. */
export class LaneResetError extends ShoalError {
  constructor(message: string, detail?: unknown) {
    super(message, detail)
    this.name = 'StreamResetError'
  }
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
 * Where node's TLS puts a client lane socket's plaintext (tls.connect's `onread`): made
 * before the socket, as onread must be given to tls.connect; the socket's LaneStream
 * takes it over once the handshake is done. Bytes before that (none are expected: the
 * server sends its status only after the handshake) are kept for it.
 */
export class LaneReads {
  readonly scratch = Buffer.allocUnsafe(SCRATCH_BYTES)
  private lane: LaneStream | undefined
  private early: Buffer[] = []
  readonly onread = {
    buffer: (): Uint8Array => this.lane?.readBuffer() ?? this.scratch,
    callback: (n: number, buf: Uint8Array): boolean => {
      if (this.lane !== undefined) return this.lane.readDone(n, buf)
      this.early.push(Buffer.from(buf.subarray(0, n)))
      return true
    },
  }

  /** Hands reading over to `lane`, with the bytes that came before. */
  attach(lane: LaneStream): Buffer[] {
    this.lane = lane
    const early = this.early
    this.early = []
    return early
  }
}

/** A read into a caller's buffer in progress (LandingSource.landInto). */
interface Landing {
  target: Uint8Array
  /** target[0, at) is filled. */
  at: number
}

/**
 * One stream over one lane socket (its TLS socket, handshake done), with the shape the
 * piece client and server use from a libp2p stream (PieceStream): send with
 * back-pressure, half-close, reset, async iteration of received bytes, `drain` and
 * `close` events; and `landInto`, which the message reader uses to read a piece
 * straight into place.
 */
export class LaneStream extends EventTarget implements PieceStream, LandingSource {
  status: 'open' | 'closing' | 'closed' | 'aborted' | 'reset' = 'open'
  writeStatus: 'writable' | 'closing' | 'closed' = 'writable'
  readStatus: 'readable' | 'closed' = 'readable'
  remoteWriteStatus: 'writable' | 'closed' = 'writable'
  remoteReadStatus: 'readable' | 'closed' = 'readable'
  protocol = ''

  private readonly socket: Socket
  /** A frame head split across chunks. */
  private readonly head = Buffer.alloc(HEAD_BYTES)
  private headHave = 0
  /** Kind of the frame being read, and its payload bytes still to come. */
  private kind = -1
  private payloadLeft = 0
  /** Payload of an open or reset frame, as it arrives. */
  private control: Buffer[] = []
  /** Received data, as subarrays of the socket's chunks. */
  private queue: Uint8Array[] = []
  private queued = 0
  private waiter: (() => void) | undefined
  private wakeScheduled = false
  private failure: Error | undefined
  private paused = false
  private readonly onOpenFrame: ((protocol: string) => void) | undefined
  private readonly remoteEnded = deferred()
  /** Bytes of the server's status still to come (client side), and those in. */
  private statusLeft = 0
  private readonly statusBytes = Buffer.alloc(STATUS_BYTES)
  private readonly statusKnown: Promise<number>
  private settleStatus: { resolve: (status: number) => void; reject: (err: Error) => void } = {
    resolve: () => {},
    reject: () => {},
  }
  /** Where reads land when the socket reads through `onread`: its scratch, else undefined. */
  private readonly scratch: Buffer | undefined
  /** The part of a landing's target handed to the socket for its next read. */
  private region: Uint8Array | undefined
  private landing: Landing | undefined
  /** Data bytes node's TLS decrypted straight into a landing's target (not copied). */
  landedInPlace = 0

  /**
   * `socket`: a TLS socket, handshake done. `onOpen`: server side, told the protocol.
   * `reads`: client side, the socket reads through them (tls.connect's `onread`) and the
   * server's status comes first (`serverStatus()`). Without them the socket's `data`
   * events are read.
   */
  constructor(socket: Socket, onOpen?: (protocol: string) => void, reads?: LaneReads) {
    super()
    this.socket = socket
    this.onOpenFrame = onOpen
    this.remoteEnded.promise.catch(() => {})
    this.statusKnown = new Promise<number>((resolve, reject) => {
      this.settleStatus = { resolve, reject }
    })
    this.statusKnown.catch(() => {})
    if (reads === undefined) {
      this.settleStatus.resolve(STATUS_OK)
      socket.on('data', (chunk: Buffer) => this.receive(chunk, true))
    } else {
      this.statusLeft = STATUS_BYTES
      this.scratch = reads.scratch
      for (const chunk of reads.attach(this)) this.receive(chunk, true)
    }
    socket.on('drain', () => this.dispatchEvent(new Event('drain')))
    socket.on('error', (err) => this.fail(new LaneResetError(`lane socket failed: ${err.message}`)))
    socket.on('close', () => {
      if (this.remoteWriteStatus === 'writable' || this.writeStatus !== 'closed') {
        this.fail(new LaneResetError('lane socket closed'))
      } else {
        this.finish('closed')
      }
    })
  }

  /** Sends `data` in frames of at most MAX_FRAME_PAYLOAD; false when the socket is full. */
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

  /**
   * True when everything sent so far has left the stream's hands: the socket holds no
   * queued write, so TLS has sealed every byte and the kernel took the records. Memory
   * passed to send() before is then no longer read and may be reused.
   */
  flushed(): boolean {
    return this.socket.writableLength === 0
  }

  /** Client side: names the protocol (the first frame). */
  open(protocol: string): void {
    this.protocol = protocol
    this.writeFrame(KIND_OPEN, Buffer.from(protocol, 'utf8'))
  }

  /**
   * A small frame goes out as one buffer. A large one goes out as two writes, the head
   * and then the payload as it is: corked, the two would reach TLS as one writev, and
   * node's TLS joins a writev's buffers into a fresh one before sealing it (a copy and,
   * at 1 MiB, a newly mapped buffer per frame: 15-30% more CPU on the sending side in
   * a loopback test). The head then travels in a TLS record of its own.
   */
  private writeFrame(kind: number, payload: Uint8Array): boolean {
    const n = payload.byteLength
    if (n <= MAX_JOINED_PAYLOAD) {
      const frame = Buffer.allocUnsafe(HEAD_BYTES + n)
      frame.writeUInt32BE(1 + n, 0)
      frame[4] = kind
      frame.set(payload, HEAD_BYTES)
      return this.socket.write(frame)
    }
    const head = Buffer.allocUnsafe(HEAD_BYTES)
    head.writeUInt32BE(1 + n, 0)
    head[4] = kind
    this.socket.write(head)
    return this.socket.write(payload)
  }

  /** Client side: the server's status (STATUS_OK or STATUS_BUSY); rejects when the socket fails first. */
  serverStatus(): Promise<number> {
    return this.statusKnown
  }

  /**
   * Where the socket's next read goes (onread's `buffer`): inside a data frame's payload
   * that a landing waits for, the next free part of its target, no longer than the
   * payload left, so only payload bytes land there; anything else into the scratch.
   */
  readBuffer(): Uint8Array {
    const landing = this.landing
    const scratch = this.scratch as Buffer
    if (landing === undefined || this.kind !== KIND_DATA || this.payloadLeft === 0) return scratch
    const n = Math.min(this.payloadLeft, landing.target.byteLength - landing.at)
    if (n === 0) return scratch
    this.region = landing.target.subarray(landing.at, landing.at + n)
    return this.region
  }

  /** The socket read `n` bytes into `buf`, what readBuffer() gave it (onread's `callback`). */
  readDone(n: number, buf: Uint8Array): boolean {
    if (buf !== this.region) {
      this.receive((this.scratch as Buffer).subarray(0, n), false)
      return true
    }
    this.region = undefined
    const landing = this.landing
    // A region is handed out only while its landing waits, and the landing ends only
    // when its target is full or the socket is destroyed: this holds.
    if (
      landing === undefined ||
      this.status === 'closed' ||
      this.status === 'aborted' ||
      this.status === 'reset'
    )
      return false
    landing.at += n
    this.landedInPlace += n
    this.payloadLeft -= n
    if (this.payloadLeft === 0) this.kind = -1
    this.wakeSoon()
    return true
  }

  /**
   * `owned`: the chunk stays ours (a 'data' chunk) and data is queued as subarrays of it;
   * otherwise (the scratch) data is copied out.
   */
  private receive(chunk: Buffer, owned: boolean): void {
    const before = this.queued
    const landedBefore = this.landing?.at
    try {
      this.parse(chunk, owned)
    } catch (err) {
      this.abort(err instanceof Error ? err : new Error(String(err)))
      return
    }
    if (this.queued > before) {
      if (this.queued > READ_HIGH_WATER && !this.paused) {
        this.paused = true
        this.socket.pause()
      }
      this.wakeSoon()
    } else if (this.landing !== undefined && this.landing.at !== landedBefore) {
      this.wakeSoon()
    }
  }

  /**
   * Wakes the reader once the socket's pending reads are handled rather than at once.
   * Node's TLS hands decrypted data over 16 KiB at a time (a record), each in a callback
   * of its own after which promises run: waking the reader at once made it take every
   * record alone (a generator step, a reader pull and a copy per 16 KiB). Deferred to
   * the loop's check phase, it takes everything that one poll of the socket decrypted
   * (up to hundreds of KiB on a busy socket) in one go.
   */
  private wakeSoon(): void {
    if (this.waiter === undefined || this.wakeScheduled) return
    this.wakeScheduled = true
    setImmediate(() => {
      this.wakeScheduled = false
      this.wake()
    })
  }

  /** Reads frames straight from `chunk`; data payloads go to a landing or the queue. */
  private parse(chunk: Buffer, owned: boolean): void {
    let at = 0
    const end = chunk.byteLength
    while (at < end) {
      // A reset frame, or a failure, ends the stream: nothing after it is read.
      if (this.status !== 'open' && this.status !== 'closing') return
      if (this.statusLeft > 0) {
        const take = Math.min(this.statusLeft, end - at)
        chunk.copy(this.statusBytes, STATUS_BYTES - this.statusLeft, at, at + take)
        this.statusLeft -= take
        at += take
        if (this.statusLeft > 0) return
        if (!this.statusBytes.subarray(0, 4).equals(MAGIC)) throw new DecodeError('not a lane status')
        this.settleStatus.resolve(this.statusBytes[4] as number)
        continue
      }
      if (this.kind < 0) {
        let length: number
        let kind: number
        if (this.headHave === 0 && end - at >= HEAD_BYTES) {
          length = chunk.readUInt32BE(at)
          kind = chunk[at + 4] as number
          at += HEAD_BYTES
        } else {
          const take = Math.min(HEAD_BYTES - this.headHave, end - at)
          chunk.copy(this.head, this.headHave, at, at + take)
          this.headHave += take
          at += take
          if (this.headHave < HEAD_BYTES) return
          this.headHave = 0
          length = this.head.readUInt32BE(0)
          kind = this.head[4] as number
        }
        this.startFrame(length, kind)
        if (this.payloadLeft === 0) {
          this.endFrame()
          continue
        }
      }
      const take = Math.min(this.payloadLeft, end - at)
      const part = chunk.subarray(at, at + take)
      at += take
      this.payloadLeft -= take
      if (this.kind === KIND_DATA) this.takeData(part, owned)
      else this.control.push(owned ? part : Buffer.from(part))
      if (this.payloadLeft === 0) this.endFrame()
    }
  }

  /** Data payload bytes parsed from a chunk: into the landing's target, or queued. */
  private takeData(part: Buffer, owned: boolean): void {
    let rest = part
    const landing = this.landing
    if (landing !== undefined) {
      const n = Math.min(rest.byteLength, landing.target.byteLength - landing.at)
      landing.target.set(rest.subarray(0, n), landing.at)
      landing.at += n
      rest = rest.subarray(n)
      if (rest.byteLength === 0) return
    }
    this.queue.push(owned ? rest : Buffer.from(rest))
    this.queued += rest.byteLength
  }

  /** Checks a frame's head before any of its payload is taken. */
  private startFrame(length: number, kind: number): void {
    if (length < 1 || length > MAX_FRAME_PAYLOAD + 1) throw new DecodeError(`lane frame of ${length} bytes`)
    if (kind > KIND_RESET) throw new DecodeError(`unknown lane frame kind ${kind}`)
    const payload = length - 1
    if (kind !== KIND_DATA && payload > MAX_CONTROL_PAYLOAD)
      throw new DecodeError(`lane frame of kind ${kind} with ${payload} bytes`)
    if (this.onOpenFrame !== undefined && this.protocol === '' && kind !== KIND_OPEN) {
      throw new DecodeError('lane stream used before it was opened')
    }
    if (kind === KIND_DATA && this.remoteWriteStatus !== 'writable')
      throw new DecodeError('lane data after end')
    if (kind === KIND_OPEN) {
      if (this.onOpenFrame === undefined || this.protocol !== '')
        throw new DecodeError('unexpected lane open')
      if (payload > MAX_PROTOCOL_BYTES) throw new DecodeError('lane protocol id too long')
    }
    this.kind = kind
    this.payloadLeft = payload
  }

  /** Acts on a frame whose payload is all in. */
  private endFrame(): void {
    const kind = this.kind
    this.kind = -1
    if (kind === KIND_DATA) return
    const payload = this.control.length === 1 ? (this.control[0] as Buffer) : Buffer.concat(this.control)
    this.control = []
    if (kind === KIND_OPEN) {
      this.protocol = payload.toString('utf8')
      // An empty protocol id names nothing: the handler lookup fails and resets the stream.
      this.onOpenFrame?.(this.protocol)
    } else if (kind === KIND_END) {
      this.remoteWriteStatus = 'closed'
      this.remoteEnded.resolve()
      this.wake()
      if (this.writeStatus === 'closed') this.socket.end()
    } else {
      // Reset by the peer: no reset goes back, the stream is simply gone.
      const reason = payload.toString('utf8').slice(0, 200)
      this.fail(new LaneResetError(`the peer reset the lane stream: ${reason}`))
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
    this.settleStatus.reject(err)
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
    this.settleStatus.reject(err)
    this.socket.end()
    this.finish('aborted')
  }

  /**
   * LandingSource: the stream's next `target.byteLength` data bytes into `target`. What
   * is queued already is copied; then, on a socket that reads through `onread`, node's
   * TLS decrypts the payload records straight into `target` (records that also hold a
   * frame head come through the scratch and their payload is copied). On a `data`
   * socket every byte is copied. `onLanded` is told as bytes come, once per turn of the
   * event loop, not per record. On abort of `signal` the stream is reset first: a
   * region of `target` may be the socket's next read buffer.
   */
  async landInto(
    target: Uint8Array,
    options: { signal?: AbortSignal; onLanded: (end: number) => void },
  ): Promise<number> {
    if (this.landing !== undefined) throw new Error('a lane stream lands one read at a time')
    const landing: Landing = { target, at: 0 }
    while (this.queue.length > 0 && landing.at < target.byteLength) {
      const part = this.queue[0] as Uint8Array
      const n = Math.min(part.byteLength, target.byteLength - landing.at)
      target.set(part.subarray(0, n), landing.at)
      landing.at += n
      this.queued -= n
      if (n === part.byteLength) this.queue.shift()
      else this.queue[0] = part.subarray(n)
    }
    if (this.paused && this.queued <= READ_HIGH_WATER) {
      this.paused = false
      this.socket.resume()
    }
    let told = 0
    const { signal } = options
    this.landing = landing
    try {
      for (;;) {
        if (landing.at > told) {
          told = landing.at
          options.onLanded(told)
        }
        if (landing.at === target.byteLength) return landing.at
        if (this.failure !== undefined) throw this.failure
        if (this.remoteWriteStatus === 'closed' || this.status === 'closed') return landing.at
        signal?.throwIfAborted()
        await new Promise<void>((resolve, reject) => {
          const onAbort = (): void => reject(signal?.reason)
          signal?.addEventListener('abort', onAbort, { once: true })
          this.waiter = () => {
            signal?.removeEventListener('abort', onAbort)
            resolve()
          }
        })
      }
    } catch (err) {
      this.waiter = undefined
      if (signal?.aborted) this.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
      throw err
    } finally {
      this.landing = undefined
      this.region = undefined
    }
  }

  /** Yields what has arrived since the last read, all of it at once. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array | Uint8ArrayList> {
    for (;;) {
      if (this.queue.length > 0) {
        const parts = this.queue
        this.queue = []
        this.queued = 0
        if (this.paused) {
          this.paused = false
          this.socket.resume()
        }
        yield parts.length === 1 ? (parts[0] as Uint8Array) : new Uint8ArrayList(...parts)
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

/**
 * Resolves when `socket`'s TLS handshake is done (`event`); rejects with a LaneResetError
 * when the socket fails or closes first, or with the signal's reason.
 */
function handshake(socket: TLSSocket, event: 'secure' | 'secureConnect', signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason)
      return
    }
    const cleanup = (): void => {
      socket.off(event, onSecure)
      socket.off('error', onError)
      socket.off('close', onClose)
      signal.removeEventListener('abort', onAbort)
    }
    const onSecure = (): void => {
      cleanup()
      resolve()
    }
    const onError = (err: Error): void => {
      cleanup()
      reject(new LaneResetError(`lane TLS handshake failed: ${err.message}`))
    }
    const onClose = (): void => {
      cleanup()
      reject(new LaneResetError('lane socket closed during the TLS handshake'))
    }
    const onAbort = (): void => {
      cleanup()
      reject(signal.reason)
    }
    signal.addEventListener('abort', onAbort, { once: true })
    socket.once(event, onSecure)
    socket.on('error', onError)
    socket.on('close', onClose)
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
  /**
   * A new socket must finish its TLS handshake within this (and a session request over
   * libp2p its exchange). @default 10000
   */
  helloTimeoutMs?: number
  /** Lane sockets open at once, handshakes included. @default 4096 */
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
  /** The TLS sockets over those of `sockets`. */
  const secured = new Set<TLSSocket>()
  const serverContext = laneSecureContext(true)
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

  /**
   * Server side of a lane socket: the TLS handshake (the PSK identity names the session),
   * the status, then its one stream.
   */
  async function accept(socket: Socket): Promise<void> {
    let session: Session | undefined
    // Node's TLSSocket takes pskCallback (as tls.Server does); its typings leave it out.
    const options: TLSSocketOptions & Pick<TlsOptions, 'pskCallback'> = {
      isServer: true,
      secureContext: serverContext,
      // The key of the session the identity names; no key (the handshake fails with a
      // handshake_failure alert) for an unknown or expired one.
      pskCallback: (_socket, identity) => {
        const s = sessions.get(identity)
        if (s === undefined || s.expiresAt <= Date.now()) return null
        session = s
        return s.key
      },
    }
    const secure = new TLSSocket(socket, options)
    secured.add(secure)
    secure.on('close', () => secured.delete(secure))
    secure.on('error', () => {})
    try {
      await handshake(secure, 'secure', AbortSignal.timeout(helloTimeoutMs))
      // The server has no certificate, so only a PSK handshake can finish; checked anyway.
      if (!secure.isSessionReused() || session === undefined)
        throw new DecodeError('lane TLS did not use a session key')
    } catch (err) {
      secure.destroy()
      throw err
    }
    const peer = session.peer
    const held = perPeer.get(peer) ?? 0
    if (held >= maxSocketsPerPeer) {
      secure.end(Buffer.concat([MAGIC, Uint8Array.of(STATUS_BUSY)]))
      return
    }
    perPeer.set(peer, held + 1)
    secure.once('close', () => {
      const n = (perPeer.get(peer) ?? 1) - 1
      if (n <= 0) perPeer.delete(peer)
      else perPeer.set(peer, n)
    })
    secure.write(Buffer.concat([MAGIC, Uint8Array.of(STATUS_OK)]))
    const { remotePeer } = session
    const stream: LaneStream = new LaneStream(secure, (protocol) => {
      const handle = handlers.get(protocol)
      if (handle === undefined) {
        stream.abort(new Error(`protocol ${protocol} is not served on the lane`))
        return
      }
      served++
      handle(stream, { remotePeer }).catch((err: unknown) => {
        log?.debug({ err, peer }, 'lane stream failed')
        stream.abort(err instanceof Error ? err : new Error(String(err)))
      })
    })
  }

  return {
    async start() {
      if (server !== undefined) return
      const srv = createServer({ noDelay: true, ...KEEPALIVE }, (socket) => {
        if (sockets.size >= maxSockets) {
          socket.destroy()
          return
        }
        sockets.add(socket)
        socket.on('close', () => sockets.delete(socket))
        socket.on('error', () => {})
        accept(socket).catch((err: unknown) => {
          log?.debug({ err }, 'lane handshake failed')
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
      for (const socket of secured) socket.destroy()
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

/**
 * What a lane dialer passes to tls.connect: node honours `onread` there (for the socket
 * tls.connect creates), though its tls typings leave it out.
 */
export type LaneConnectOptions = ConnectionOptions & Pick<ConnectOpts, 'onread'>

/** Options for createLaneDialer. */
export interface LaneDialerInit {
  /** After a peer showed it has no lane (or its lane failed), ask it again after this. @default 60000 */
  retryAfterMs?: number
  /**
   * How long a request waits for the TCP connect to a lane before it goes over libp2p.
   * The connect goes on (see connectGiveUpMs): on a link whose queues are full the SYN
   * waits behind them for seconds (the 2 Mbit testbed saw 51 lanes called unreachable
   * this way in one N = 10 pull, and their pieces went over libp2p for a minute at the
   * cost of noise and yamux in JS). A lane that connects late is kept for the next
   * request. The TLS handshake after the connect runs under the request's deadline.
   * @default 3000
   */
  connectTimeoutMs?: number
  /**
   * A lane whose TCP connect has not finished after this long (a firewall that drops
   * the lane port), or that failed, is not tried again for `retryAfterMs`: the peer is
   * used over libp2p. @default 30000
   */
  connectGiveUpMs?: number
  /**
   * Deadline of asking a peer for a lane session over libp2p. Every request waiting for
   * that session shares the one exchange and waits under its own signal. @default 10000
   */
  sessionTimeoutMs?: number
  logger?: Logger
  /**
   * Opens the TLS socket to a lane: tls.connect with `options` (host, port, the TLS
   * options and `onread`), which must create the socket itself for `onread` to take
   * effect (tests put a proxy in between or hold the connect back).
   */
  connect?: (options: LaneConnectOptions) => TLSSocket
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
  /** True while `key`'s lane is known not to work (requests to it go over libp2p). */
  blocked(key: string): boolean
  /** Closes the lane sockets it keeps for later requests. */
  close(): void
}

/** Lane sockets that connected after their request had gone over libp2p, kept per peer. */
const MAX_SPARE_LANES = 4
/** How long such a socket is kept for a request. */
const SPARE_LANE_MS = 45_000

/** Creates a lane dialer over a libp2p node (for sessions and the peer's address). */
export function createLaneDialer(
  components: { libp2p: Pick<Libp2p, 'dial'> },
  init: LaneDialerInit = {},
): LaneDialer {
  const { libp2p } = components
  const retryAfterMs = init.retryAfterMs ?? 60_000
  const connectTimeoutMs = init.connectTimeoutMs ?? 3_000
  const connectGiveUpMs = init.connectGiveUpMs ?? 30_000
  const sessionTimeoutMs = init.sessionTimeoutMs ?? 10_000
  const connectSocket = init.connect ?? tlsConnect
  const sessions = new Map<string, ClientSession>()
  const pending = new Map<string, Promise<ClientSession | undefined>>()
  const noLaneUntil = new Map<string, number>()
  /** Lanes that connected after their request stopped waiting, for the next requests. */
  const spares = new Map<string, Array<{ lane: LaneStream; timer: ReturnType<typeof setTimeout> }>>()
  const clientContext = laneSecureContext(false)

  function dropSpare(name: string, lane: LaneStream): void {
    const list = spares.get(name) ?? []
    const at = list.findIndex((spare) => spare.lane === lane)
    if (at < 0) return
    clearTimeout(list[at]?.timer)
    list.splice(at, 1)
    if (list.length === 0) spares.delete(name)
  }

  function keepSpare(name: string, lane: LaneStream): void {
    const list = spares.get(name) ?? []
    if (list.length >= MAX_SPARE_LANES) {
      lane.abort(new Error('spare lane not needed'))
      return
    }
    const timer = setTimeout(() => {
      dropSpare(name, lane)
      lane.abort(new Error('spare lane unused'))
    }, SPARE_LANE_MS)
    timer.unref?.()
    list.push({ lane, timer })
    spares.set(name, list)
    lane.addEventListener('close', () => dropSpare(name, lane), { once: true })
  }

  function takeSpare(name: string): LaneStream | undefined {
    const list = spares.get(name)
    while (list !== undefined && list.length > 0) {
      const { lane, timer } = list.pop() as { lane: LaneStream; timer: ReturnType<typeof setTimeout> }
      clearTimeout(timer)
      if (list.length === 0) spares.delete(name)
      if (lane.status === 'open') return lane
    }
    return undefined
  }

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
   * Connects and runs the TLS handshake, then waits for the server's status. Only the
   * TCP connect is held to connectTimeoutMs: the kernel completes it however busy the
   * peer is, so a connect that takes longer means a port that drops packets. The
   * handshake and the status need the peer's event loop, which on a starved node can lag
   * seconds; they run under the request's own deadline, as a libp2p stream's negotiation
   * does. A handshake that fails (a wrong key, a tampered record) throws, and the caller
   * uses libp2p; one the server fails for want of a key means it forgot the session.
   */
  async function connectLane(
    s: ClientSession,
    signal: AbortSignal,
    onConnected: () => void,
  ): Promise<LaneStream | 'unknown-session' | 'busy'> {
    const identity = s.id.toString('hex')
    const reads = new LaneReads()
    const options: LaneConnectOptions = {
      host: s.host,
      port: s.port,
      secureContext: clientContext,
      pskCallback: () => ({ psk: s.key, identity }),
      // The server proves itself by finishing the PSK handshake. Node asks this only of
      // a server that answered with a certificate instead: whoever that is, it does not
      // hold the key (a certificate trusted by the system's CAs must not do either).
      checkServerIdentity: () => new LaneResetError('a lane server presented a certificate'),
      onread: reads.onread,
    }
    const secure = connectSocket(options)
    let tlsError: (Error & { code?: string }) | undefined
    secure.on('error', (err) => {
      tlsError ??= err
    })
    const connectSignal = AbortSignal.any([signal, AbortSignal.timeout(connectGiveUpMs)])
    try {
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => reject(connectSignal.reason)
        connectSignal.addEventListener('abort', onAbort, { once: true })
        secure.once('connect', () => {
          connectSignal.removeEventListener('abort', onAbort)
          // tls.connect passes neither to the socket it makes.
          secure.setNoDelay(true)
          secure.setKeepAlive(KEEPALIVE.keepAlive, KEEPALIVE.keepAliveInitialDelay)
          onConnected()
          resolve()
        })
        secure.once('error', (err) => {
          connectSignal.removeEventListener('abort', onAbort)
          reject(err)
        })
      })
      await handshake(secure, 'secureConnect', signal)
      // The same, as OpenSSL tells it: the handshake ran on the PSK.
      if (!secure.isSessionReused()) throw new LaneResetError('lane TLS did not use the session key')
      const lane = new LaneStream(secure, undefined, reads)
      const status = await raceSignal(lane.serverStatus(), signal)
      if (status === STATUS_BUSY) {
        secure.destroy()
        return 'busy'
      }
      if (status !== STATUS_OK) throw new DecodeError(`lane status ${status}`)
      return lane
    } catch (err) {
      secure.destroy()
      if (tlsError?.code === UNKNOWN_SESSION_ALERT && !signal.aborted) return 'unknown-session'
      throw err
    }
  }

  function blocked(name: string): boolean {
    return (noLaneUntil.get(name) ?? 0) > Date.now()
  }

  return {
    blocked,

    async open(name, peer, protocol, { signal }) {
      if (blocked(name)) return undefined
      const spare = takeSpare(name)
      if (spare !== undefined) {
        spare.open(protocol)
        return spare
      }
      for (let attempt = 0; attempt < 2; attempt++) {
        const s = await session(name, peer, signal)
        if (s === undefined) return undefined
        // The connect runs under a deadline of its own (connectGiveUpMs, then the lane is
        // given up); the request waits for it connectTimeoutMs, then goes over libp2p and
        // leaves the lane, should it connect, to the next request.
        let connected = false
        let waiting = true
        const connecting = connectLane(s, AbortSignal.timeout(connectGiveUpMs + sessionTimeoutMs), () => {
          connected = true
        })
        const failed = (err: unknown): undefined => {
          noLaneUntil.set(name, Date.now() + retryAfterMs)
          sessions.delete(name)
          init.logger?.debug(
            { err, peer: name, host: s.host, port: s.port },
            'piece lane unreachable, using libp2p',
          )
          return undefined
        }
        // What a connect the request stopped waiting for comes to.
        connecting.then(
          (lane) => {
            if (waiting) return
            if (lane instanceof LaneStream) keepSpare(name, lane)
            else if (lane === 'unknown-session') sessions.delete(name)
          },
          (err: unknown) => {
            if (!waiting) failed(err)
          },
        )
        let timer: ReturnType<typeof setTimeout> | undefined
        let lane: LaneStream | 'unknown-session' | 'busy' | 'slow'
        try {
          lane = await raceSignal(
            Promise.race([
              connecting,
              // Resolves only while the TCP connect is still pending.
              new Promise<'slow'>((resolve) => {
                timer = setTimeout(() => {
                  if (!connected) resolve('slow')
                }, connectTimeoutMs)
              }),
            ]),
            signal,
          )
        } catch (err) {
          signal.throwIfAborted()
          // The peer answers on libp2p but its lane does not: use libp2p for a while.
          return failed(err)
        } finally {
          // From here on, what the connect comes to is for the next request.
          waiting = false
          clearTimeout(timer)
        }
        if (lane === 'slow') {
          init.logger?.debug({ peer: name }, 'piece lane slow to connect: this request goes over libp2p')
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

    close() {
      const all = [...spares.values()].flat()
      spares.clear()
      for (const spare of all) {
        clearTimeout(spare.timer)
        spare.lane.abort(new Error('lane dialer closed'))
      }
    },
  }
}
