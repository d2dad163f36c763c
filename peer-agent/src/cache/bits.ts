/**
 * Bit operations on the cache's persisted bitfield bytes (most significant bit first,
 * the BitTorrent order): bit i is `0x80 >> (i % 8)` of byte `i >> 3`.
 */

/** Number of bytes needed for `count` bits. */
export function bitBytes(count: number): number {
  return Math.ceil(count / 8)
}

/** True when bit `index` is set. */
export function getBit(bits: Uint8Array, index: number): boolean {
  const byte = bits[index >> 3]
  return byte !== undefined && (byte & (0x80 >> (index & 7))) !== 0
}

/** The value byte `index >> 3` takes once bit `index` is set. */
export function withBit(bits: Uint8Array, index: number): number {
  return (bits[index >> 3] ?? 0) | (0x80 >> (index & 7))
}

/** Number of set bits among the first `count`. */
export function countBits(bits: Uint8Array, count: number): number {
  let n = 0
  for (let i = 0; i < count; i++) if (getBit(bits, i)) n++
  return n
}
