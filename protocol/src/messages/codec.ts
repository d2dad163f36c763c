/**
 * Wire codecs of the shoal piece protocols. Every message is one frame:
 *
 * ```
 * u32 body length (big-endian, at most MAX_MESSAGE_BYTES) | body
 * body = u8 type | fields
 *
 * type 1 piece-request      digest | u16 count (1..MAX_PIECES_PER_REQUEST) | u32 index * count
 * type 2 have-request       digest
 * type 3 have-reply         u8 status (0 ok, 1 not-found) | u32 bit count | bitfield bytes (MSB first)
 * type 4 piece-header       u32 index | u32 length (<= MAX_PIECE_SIZE, 0 unless ok) | u8 status
 *                           (0 ok, 1 not-held, 2 busy, 3 not-found); when ok, `length` raw
 *                           bytes of the piece follow the frame, outside it
 * type 5 error              u16 code | u16 message length (<= MAX_ERROR_MESSAGE_BYTES) | utf-8 message
 * type 6 piece-map-request  digest
 * type 7 piece-map-reply    u8 status (0 ok, 1 not-found) | signed piece map (binary form, when ok)
 * type 8 have-update        u16 count (1..MAX_HAVE_UPDATE_INDEXES) | u32 index * count: pieces
 *                           the sender gained since its last have-reply or have-update
 *
 * digest = u8 algorithm (1 sha256, 2 sha512) | 32 or 64 digest bytes
 * ```
 *
 * Decoders check every length against its bound before reading or allocating and throw
 * DecodeError for anything else, including trailing bytes.
 */
import { Bitfield } from '../bitfield.js'
import type { Digest } from '../digest.js'
import { parseDigest } from '../digest.js'
import { DecodeError } from '../errors.js'
import {
  decodeSignedPieceMap,
  encodeSignedPieceMap,
  MAX_PIECE_COUNT,
  MAX_PIECE_SIZE,
  type SignedPieceMap,
} from '../piece-map.js'

/** Largest frame body (a signed piece map of MAX_PIECE_COUNT pieces fits). */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024
/** Most piece indexes one piece-request may ask for. */
export const MAX_PIECES_PER_REQUEST = 64
/** Most piece indexes one have-update carries (a sender splits longer lists). */
export const MAX_HAVE_UPDATE_INDEXES = 4096
/** Longest error message text, in bytes. */
export const MAX_ERROR_MESSAGE_BYTES = 1024
/** Size of the length prefix of a frame. */
export const FRAME_HEADER_BYTES = 4

/** Why a peer did not send a piece. */
export type PieceStatus = 'ok' | 'not-held' | 'busy' | 'not-found'
/** Error codes of the error message. */
export type WireErrorCode = 'bad-request' | 'not-found' | 'busy' | 'internal' | 'forbidden'

/** Ask for pieces of a blob; answered by one piece-header (+ bytes) per index, in order. */
export interface PieceRequest {
  type: 'piece-request'
  digest: Digest
  indexes: number[]
}
/** Ask which pieces of a blob a peer holds. */
export interface HaveRequest {
  type: 'have-request'
  digest: Digest
}
/** What a peer holds of a blob (`bitfield` is present when status is ok). */
export interface HaveReply {
  type: 'have-reply'
  status: 'ok' | 'not-found'
  bitfield?: Bitfield
}
/**
 * Pieces the sender gained since what it last said it holds (HAVE_WATCH_PROTOCOL): a
 * watcher adds them to the bitfield of the have-reply that opened the watch.
 */
export interface HaveUpdate {
  type: 'have-update'
  indexes: number[]
}
/** Precedes one piece's raw bytes (`length` bytes follow when status is ok). */
export interface PieceHeader {
  type: 'piece-header'
  index: number
  length: number
  status: PieceStatus
}
/** A request could not be served at all. */
export interface ErrorReply {
  type: 'error'
  code: WireErrorCode
  message: string
}
/** Ask for the signed piece map of a blob. */
export interface PieceMapRequest {
  type: 'piece-map-request'
  digest: Digest
}
/** The signed piece map (`signed` present when status is ok); verify it before use. */
export interface PieceMapReply {
  type: 'piece-map-reply'
  status: 'ok' | 'not-found'
  signed?: SignedPieceMap
}

/** Any shoal wire message. */
export type Message =
  | PieceRequest
  | HaveRequest
  | HaveReply
  | PieceHeader
  | ErrorReply
  | PieceMapRequest
  | PieceMapReply
  | HaveUpdate

const TYPE_CODES = {
  'piece-request': 1,
  'have-request': 2,
  'have-reply': 3,
  'piece-header': 4,
  error: 5,
  'piece-map-request': 6,
  'piece-map-reply': 7,
  'have-update': 8,
} as const satisfies Record<Message['type'], number>

const PIECE_STATUSES: PieceStatus[] = ['ok', 'not-held', 'busy', 'not-found']
const ERROR_CODES: WireErrorCode[] = ['bad-request', 'not-found', 'busy', 'internal', 'forbidden']
const FOUND_STATUSES = ['ok', 'not-found'] as const

class Writer {
  private readonly parts: Uint8Array[] = []
  private size = 0
  u8(n: number): this {
    return this.bytes(Uint8Array.of(n))
  }
  u16(n: number): this {
    const b = new Uint8Array(2)
    new DataView(b.buffer).setUint16(0, n)
    return this.bytes(b)
  }
  u32(n: number): this {
    const b = new Uint8Array(4)
    new DataView(b.buffer).setUint32(0, n)
    return this.bytes(b)
  }
  bytes(b: Uint8Array): this {
    this.parts.push(b)
    this.size += b.byteLength
    return this
  }
  /** u16 count (1..`max`) and that many u32 piece indexes; `what` names the message in errors. */
  indexes(list: readonly number[], max: number, what: string): this {
    if (list.length < 1 || list.length > max) throw new RangeError(`${what} holds 1..${max} indexes`)
    this.u16(list.length)
    for (const i of list) {
      checkIndex(i)
      this.u32(i)
    }
    return this
  }
  digest(d: Digest): this {
    const { algorithm, hex } = parseDigest(d)
    return this.u8(algorithm === 'sha256' ? 1 : 2).bytes(Buffer.from(hex, 'hex'))
  }
  /** The frame: length prefix and body. */
  frame(): Uint8Array {
    if (this.size > MAX_MESSAGE_BYTES) throw new RangeError('message too large')
    const out = new Uint8Array(FRAME_HEADER_BYTES + this.size)
    new DataView(out.buffer).setUint32(0, this.size)
    let o = FRAME_HEADER_BYTES
    for (const p of this.parts) {
      out.set(p, o)
      o += p.byteLength
    }
    return out
  }
}

class Reader {
  private o = 0
  private readonly view: DataView
  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }
  private need(n: number): void {
    if (this.o + n > this.buf.byteLength) throw new DecodeError('message truncated')
  }
  u8(): number {
    this.need(1)
    return this.view.getUint8(this.o++)
  }
  u16(): number {
    this.need(2)
    const v = this.view.getUint16(this.o)
    this.o += 2
    return v
  }
  u32(): number {
    this.need(4)
    const v = this.view.getUint32(this.o)
    this.o += 4
    return v
  }
  bytes(n: number): Uint8Array {
    this.need(n)
    const b = this.buf.subarray(this.o, this.o + n)
    this.o += n
    return b
  }
  rest(): Uint8Array {
    return this.bytes(this.buf.byteLength - this.o)
  }
  /** What Writer.indexes wrote; `what` names the message in errors. */
  indexes(max: number, what: string): number[] {
    const count = this.u16()
    if (count < 1 || count > max) throw new DecodeError(`${what} with ${count} indexes`)
    const indexes: number[] = []
    for (let i = 0; i < count; i++) {
      const index = this.u32()
      if (index >= MAX_PIECE_COUNT) throw new DecodeError(`piece index ${index} out of range`)
      indexes.push(index)
    }
    return indexes
  }
  digest(): Digest {
    const code = this.u8()
    if (code === 1) return `sha256:${Buffer.from(this.bytes(32)).toString('hex')}` as Digest
    if (code === 2) return `sha512:${Buffer.from(this.bytes(64)).toString('hex')}` as Digest
    throw new DecodeError(`unknown digest algorithm ${code}`)
  }
  end(): void {
    if (this.o !== this.buf.byteLength) throw new DecodeError('trailing bytes in message')
  }
}

function checkIndex(i: number): void {
  if (!Number.isInteger(i) || i < 0 || i >= MAX_PIECE_COUNT) throw new RangeError(`invalid piece index ${i}`)
}

/**
 * Encodes one message as a frame (length prefix and body). Throws RangeError or
 * DigestInvalidError for a message that breaks the format's bounds; a piece-header's
 * bytes are not part of the frame and are sent after it.
 */
export function encodeMessage(msg: Message): Uint8Array {
  const w = new Writer().u8(TYPE_CODES[msg.type])
  switch (msg.type) {
    case 'piece-request':
      w.digest(msg.digest).indexes(msg.indexes, MAX_PIECES_PER_REQUEST, 'a piece request')
      break
    case 'have-request':
    case 'piece-map-request':
      w.digest(msg.digest)
      break
    case 'have-reply':
      if (msg.status === 'ok') {
        if (msg.bitfield === undefined) throw new RangeError('have-reply ok needs a bitfield')
        w.u8(0).u32(msg.bitfield.length).bytes(msg.bitfield.encode())
      } else {
        w.u8(1).u32(0)
      }
      break
    case 'piece-header': {
      checkIndex(msg.index)
      const length = msg.status === 'ok' ? msg.length : 0
      if (!Number.isInteger(length) || length < 0 || length > MAX_PIECE_SIZE)
        throw new RangeError('invalid piece length')
      w.u32(msg.index).u32(length).u8(PIECE_STATUSES.indexOf(msg.status))
      break
    }
    case 'error': {
      let text = Buffer.from(msg.message, 'utf8')
      if (text.byteLength > MAX_ERROR_MESSAGE_BYTES) {
        text = Buffer.from(
          text
            .subarray(0, MAX_ERROR_MESSAGE_BYTES)
            .toString('utf8')
            .replace(/\uFFFD$/, ''),
          'utf8',
        )
        if (text.byteLength > MAX_ERROR_MESSAGE_BYTES) text = text.subarray(0, MAX_ERROR_MESSAGE_BYTES - 3)
      }
      w.u16(ERROR_CODES.indexOf(msg.code)).u16(text.byteLength).bytes(text)
      break
    }
    case 'have-update':
      w.indexes(msg.indexes, MAX_HAVE_UPDATE_INDEXES, 'a have-update')
      break
    case 'piece-map-reply':
      if (msg.status === 'ok') {
        if (msg.signed === undefined) throw new RangeError('piece-map-reply ok needs a signed map')
        w.u8(0).bytes(encodeSignedPieceMap(msg.signed))
      } else {
        w.u8(1)
      }
      break
  }
  return w.frame()
}

/**
 * Decodes one frame body (without its length prefix). Throws DecodeError for an unknown
 * type, a bad length or count, an unknown status or code, or trailing bytes.
 */
export function decodeMessage(body: Uint8Array): Message {
  if (!(body instanceof Uint8Array)) throw new DecodeError('message is not bytes')
  if (body.byteLength > MAX_MESSAGE_BYTES) throw new DecodeError('message too large')
  const r = new Reader(body)
  const type = r.u8()
  let msg: Message
  switch (type) {
    case 1: {
      const digest = r.digest()
      msg = { type: 'piece-request', digest, indexes: r.indexes(MAX_PIECES_PER_REQUEST, 'piece request') }
      break
    }
    case 2:
      msg = { type: 'have-request', digest: r.digest() }
      break
    case 3: {
      const status = FOUND_STATUSES[r.u8()]
      if (status === undefined) throw new DecodeError('unknown have-reply status')
      const bits = r.u32()
      if (status === 'ok') {
        if (bits > MAX_PIECE_COUNT) throw new DecodeError('bitfield too long')
        msg = { type: 'have-reply', status, bitfield: Bitfield.decode(r.bytes(Math.ceil(bits / 8)), bits) }
      } else {
        if (bits !== 0) throw new DecodeError('not-found have-reply with a bitfield')
        msg = { type: 'have-reply', status }
      }
      break
    }
    case 4: {
      const index = r.u32()
      const length = r.u32()
      const status = PIECE_STATUSES[r.u8()]
      if (status === undefined) throw new DecodeError('unknown piece status')
      if (index >= MAX_PIECE_COUNT) throw new DecodeError(`piece index ${index} out of range`)
      if (length > MAX_PIECE_SIZE) throw new DecodeError(`piece length ${length} too large`)
      if (status !== 'ok' && length !== 0) throw new DecodeError('piece length without a piece')
      msg = { type: 'piece-header', index, length, status }
      break
    }
    case 5: {
      const code = ERROR_CODES[r.u16()]
      if (code === undefined) throw new DecodeError('unknown error code')
      const n = r.u16()
      if (n > MAX_ERROR_MESSAGE_BYTES) throw new DecodeError('error message too long')
      msg = { type: 'error', code, message: Buffer.from(r.bytes(n)).toString('utf8') }
      break
    }
    case 6:
      msg = { type: 'piece-map-request', digest: r.digest() }
      break
    case 7: {
      const status = FOUND_STATUSES[r.u8()]
      if (status === undefined) throw new DecodeError('unknown piece-map-reply status')
      msg =
        status === 'ok'
          ? { type: 'piece-map-reply', status, signed: decodeSignedPieceMap(r.rest()) }
          : { type: 'piece-map-reply', status }
      break
    }
    case 8:
      msg = { type: 'have-update', indexes: r.indexes(MAX_HAVE_UPDATE_INDEXES, 'have-update') }
      break
    default:
      throw new DecodeError(`unknown message type ${type}`)
  }
  r.end()
  return msg
}

/** Narrows a decoded message to the expected type; throws DecodeError for any other type. */
export function expectMessage<T extends Message['type']>(
  msg: Message,
  type: T,
): Extract<Message, { type: T }> {
  if (msg.type !== type) throw new DecodeError(`expected ${type}, got ${msg.type}`)
  return msg as Extract<Message, { type: T }>
}
