/**
 * A compact bitfield of held pieces: bit i is set when piece i is held. Encoded MSB
 * first (piece 0 is the high bit of byte 0), `ceil(length / 8)` bytes, spare bits zero.
 * Used in tracker announces (base64) and in the have-message (raw bytes).
 */
import { DecodeError } from './errors.js'
import { MAX_PIECE_COUNT } from './piece-map.js'

/** Largest number of bits a bitfield may have (the piece-count limit). */
export const MAX_BITFIELD_BITS = MAX_PIECE_COUNT

/** A fixed-length set of piece indexes. */
export class Bitfield {
  readonly length: number
  private readonly bytes: Uint8Array
  private setCount = 0

  /** An empty bitfield of `length` bits. Throws RangeError beyond MAX_BITFIELD_BITS. */
  constructor(length: number) {
    if (!Number.isInteger(length) || length < 0 || length > MAX_BITFIELD_BITS) {
      throw new RangeError(`invalid bitfield length: ${length}`)
    }
    this.length = length
    this.bytes = new Uint8Array(Math.ceil(length / 8))
  }

  /** A bitfield with every bit set. */
  static full(length: number): Bitfield {
    const b = new Bitfield(length)
    for (let i = 0; i < length; i++) b.set(i)
    return b
  }

  /**
   * Decodes `bytes` as a bitfield of `length` bits. Throws DecodeError when the length is
   * out of bounds, the byte count is wrong, or a spare bit is set.
   */
  static decode(bytes: Uint8Array, length: number): Bitfield {
    if (!Number.isInteger(length) || length < 0 || length > MAX_BITFIELD_BITS) {
      throw new DecodeError(`bitfield: invalid length ${length}`)
    }
    if (!(bytes instanceof Uint8Array) || bytes.byteLength !== Math.ceil(length / 8)) {
      throw new DecodeError('bitfield: wrong byte count')
    }
    const spare = length % 8
    if (spare !== 0 && (bytes[bytes.byteLength - 1]! & (0xff >> spare)) !== 0) {
      throw new DecodeError('bitfield: spare bits set')
    }
    const b = new Bitfield(length)
    b.bytes.set(bytes)
    let n = 0
    for (const byte of bytes) n += popcount(byte)
    b.setCount = n
    return b
  }

  /** Decodes the base64 form (as sent in announces). Throws DecodeError. */
  static fromBase64(s: string, length: number): Bitfield {
    if (
      typeof s !== 'string' ||
      s.length > Math.ceil(MAX_BITFIELD_BITS / 8 / 3) * 4 + 4 ||
      !/^[A-Za-z0-9+/]*={0,2}$/.test(s)
    ) {
      throw new DecodeError('bitfield: invalid base64')
    }
    return Bitfield.decode(new Uint8Array(Buffer.from(s, 'base64')), length)
  }

  private check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.length)
      throw new RangeError(`bit ${i} out of range [0, ${this.length})`)
  }

  /** True when bit `i` is set. Throws RangeError out of range. */
  get(i: number): boolean {
    this.check(i)
    return (this.bytes[i >> 3]! & (0x80 >> (i & 7))) !== 0
  }

  /** Sets bit `i`. Throws RangeError out of range. */
  set(i: number): void {
    if (this.get(i)) return
    this.bytes[i >> 3]! |= 0x80 >> (i & 7)
    this.setCount++
  }

  /** Clears bit `i`. Throws RangeError out of range. */
  unset(i: number): void {
    if (!this.get(i)) return
    this.bytes[i >> 3]! &= ~(0x80 >> (i & 7))
    this.setCount--
  }

  /** Number of set bits. */
  count(): number {
    return this.setCount
  }

  /** True when every bit is set. */
  isComplete(): boolean {
    return this.setCount === this.length
  }

  /** The set indexes, ascending. */
  *indexes(): Generator<number> {
    for (let i = 0; i < this.length; i++) if (this.get(i)) yield i
  }

  /** The encoded bytes (a copy). */
  encode(): Uint8Array {
    return this.bytes.slice()
  }

  /** The base64 form of encode(). */
  toBase64(): string {
    return Buffer.from(this.bytes).toString('base64')
  }

  /** A copy of this bitfield. */
  clone(): Bitfield {
    return Bitfield.decode(this.bytes, this.length)
  }
}

function popcount(b: number): number {
  let n = 0
  for (let x = b; x !== 0; x &= x - 1) n++
  return n
}
