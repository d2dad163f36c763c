/**
 * The data phase of a libp2p /noise connection, after the handshake: the same wire
 * format as @chainsafe/libp2p-noise's own (each message a 2-byte big-endian length,
 * then at most 65 535 bytes of ChaCha20-Poly1305 ciphertext with its 16-byte tag, the
 * nonce counting up from 0 in each direction), with less work per frame:
 *
 * - one send is sealed into ONE buffer (every frame's length prefix, ciphertext and
 *   tag), so the transport makes one socket write per send, not two or more per frame;
 * - received bytes go through a small frame parser that decrypts a frame straight
 *   from the received chunk, or from the chunks it spans without joining them, and
 *   hands every plaintext of one received chunk up at once, with no intermediate
 *   list, event or copy per frame.
 *
 * The cipher itself (keys, nonces, the AEAD) stays with the handshake's cipher states:
 * this stream only calls the `encrypt` / `decrypt` of the package's handshake result.
 * A frame that fails authentication aborts the connection; nothing of it is passed on.
 */
import type { MessageStream, MessageStreamDirection, StreamCloseEvent } from '@libp2p/interface'
import { AbstractMessageStream, type SendResult } from '@libp2p/utils'
import { Uint8ArrayList } from 'uint8arraylist'

/** Largest noise message on the wire (ciphertext and tag), fixed by the noise spec. */
export const NOISE_MAX_MESSAGE_BYTES = 65_535
/** Poly1305 tag length. */
export const NOISE_TAG_BYTES = 16
/** Largest plaintext per noise message. */
export const NOISE_MAX_PLAINTEXT_BYTES = NOISE_MAX_MESSAGE_BYTES - NOISE_TAG_BYTES
/** Plaintext sealed into one outgoing buffer at most (16 full frames, just under 1 MiB). */
const MAX_SEND_PLAINTEXT_BYTES = 16 * NOISE_MAX_PLAINTEXT_BYTES

/** What a byte sequence handed to or returned by the cipher states can be. */
type Bytes = Uint8Array | (Iterable<Uint8Array> & { byteLength: number })

/** The two cipher operations of a finished noise handshake (its split cipher states). */
export interface NoiseSession {
  /** Seals one message (at most NOISE_MAX_PLAINTEXT_BYTES) with the next send nonce. */
  encrypt(plaintext: Uint8Array | Uint8ArrayList): Bytes
  /** Opens one message with the next receive nonce; throws when it fails authentication. */
  decrypt(ciphertext: Uint8Array | Uint8ArrayList): Bytes
}

/** Thrown (and the connection aborted) when a received noise message is malformed. */
export class NoiseFrameError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'NoiseFrameError'
  }
}

/** Options for NoiseFrameStream. */
export interface NoiseFrameStreamInit {
  /** Plaintext sealed into one outgoing buffer at most. @default 16 full frames */
  maxSendBytes?: number
}

function append(out: Uint8Array[], bytes: Bytes): void {
  if (bytes instanceof Uint8Array) {
    if (bytes.byteLength > 0) out.push(bytes)
    return
  }
  for (const part of bytes) if (part.byteLength > 0) out.push(part)
}

/**
 * The encrypted connection handed to the stream muxer: a MessageStream over the raw
 * (or pre-shared-key protected) connection the handshake ran on.
 */
export class NoiseFrameStream extends AbstractMessageStream {
  private readonly connection: MessageStream
  private readonly session: NoiseSession
  /** Ciphertext parts received so far of the frame being read. */
  private parts: Uint8Array[] = []
  private partBytes = 0
  /** Length of the frame being read; -1 while its length prefix is read. */
  private frameLength = -1
  /** The first byte of a length prefix split across two chunks; -1 if none. */
  private prefixHigh = -1
  private failed = false

  constructor(connection: MessageStream, session: NoiseSession, init: NoiseFrameStreamInit = {}) {
    super({
      log: connection.log,
      inactivityTimeout: connection.inactivityTimeout,
      maxReadBufferLength: connection.maxReadBufferLength,
      direction: connection.direction as MessageStreamDirection,
      maxMessageSize: init.maxSendBytes ?? MAX_SEND_PLAINTEXT_BYTES,
    })
    this.connection = connection
    this.session = session

    connection.addEventListener('message', (evt) => {
      if (this.failed) return
      const plaintext: Uint8Array[] = []
      let error: unknown
      try {
        this.receive(evt.data, plaintext)
      } catch (err) {
        error = err
      }
      // Frames authenticated before a bad one are passed on, in order, as the package does.
      if (plaintext.length === 1) this.onData(plaintext[0]!)
      else if (plaintext.length > 1) this.onData(new Uint8ArrayList(...plaintext))
      if (error !== undefined) {
        this.failed = true
        this.abort(error instanceof Error ? error : new NoiseFrameError(String(error)))
      }
    })
    connection.addEventListener('close', (evt: StreamCloseEvent) => {
      if (evt.error != null) {
        if (evt.local === true) this.abort(evt.error)
        else this.onRemoteReset()
      } else {
        this.onTransportClosed()
      }
    })
    connection.addEventListener('drain', () => {
      this.safeDispatchEvent('drain')
    })
    connection.addEventListener('remoteCloseWrite', () => {
      this.onRemoteCloseWrite()
    })
  }

  /** Parses and opens every frame completed by `data`, adding their plaintexts to `out` in order. */
  private receive(data: Uint8Array | Uint8ArrayList, out: Uint8Array[]): void {
    if (data instanceof Uint8Array) this.receiveChunk(data, out)
    else for (const chunk of data) this.receiveChunk(chunk, out)
  }

  private receiveChunk(chunk: Uint8Array, out: Uint8Array[]): void {
    let at = 0
    const end = chunk.byteLength
    while (at < end) {
      if (this.frameLength < 0) {
        if (this.prefixHigh >= 0) {
          this.startFrame((this.prefixHigh << 8) | chunk[at]!)
          this.prefixHigh = -1
          at += 1
        } else if (at + 1 < end) {
          this.startFrame((chunk[at]! << 8) | chunk[at + 1]!)
          at += 2
        } else {
          this.prefixHigh = chunk[at]!
          at += 1
        }
        continue
      }
      const want = this.frameLength - this.partBytes
      const have = end - at
      if (this.partBytes === 0 && have >= want) {
        // The whole frame lies in this chunk: open it in place.
        append(out, this.session.decrypt(chunk.subarray(at, at + want)))
        at += want
        this.frameLength = -1
        continue
      }
      const take = Math.min(want, have)
      this.parts.push(chunk.subarray(at, at + take))
      this.partBytes += take
      at += take
      if (this.partBytes === this.frameLength) {
        // A frame spread over chunks is opened part by part, never joined.
        const frame = new Uint8ArrayList(...this.parts)
        this.parts = []
        this.partBytes = 0
        this.frameLength = -1
        append(out, this.session.decrypt(frame))
      }
    }
  }

  private startFrame(length: number): void {
    // An empty message carries nothing (the package's decoder skips it too).
    if (length === 0) return
    if (length < NOISE_TAG_BYTES)
      throw new NoiseFrameError(`noise message of ${length} bytes is shorter than its tag`)
    this.frameLength = length
  }

  override sendData(data: Uint8ArrayList): SendResult {
    const total = data.byteLength
    const frames = Math.ceil(total / NOISE_MAX_PLAINTEXT_BYTES)
    const out = Buffer.allocUnsafe(total + frames * (2 + NOISE_TAG_BYTES))
    let at = 0
    for (let start = 0; start < total; start += NOISE_MAX_PLAINTEXT_BYTES) {
      const stop = Math.min(start + NOISE_MAX_PLAINTEXT_BYTES, total)
      const sealed = this.session.encrypt(data.sublist(start, stop))
      const length = sealed.byteLength
      out[at] = length >> 8
      out[at + 1] = length & 0xff
      at += 2
      if (sealed instanceof Uint8Array) {
        out.set(sealed, at)
        at += length
      } else {
        for (const part of sealed) {
          out.set(part, at)
          at += part.byteLength
        }
      }
    }
    return {
      sentBytes: total,
      canSendMore: this.connection.send(at === out.byteLength ? out : out.subarray(0, at)),
    }
  }

  override close(options?: { signal?: AbortSignal }): Promise<void> {
    return this.connection.close(options)
  }

  override sendPause(): void {
    this.connection.pause()
  }

  override sendResume(): void {
    this.connection.resume()
  }

  override sendReset(err: Error): void {
    this.connection.abort(err)
  }
}
