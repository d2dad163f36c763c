/**
 * Content digests as the OCI image spec defines them: `algorithm:encoded`. shoal
 * accepts sha256 and sha512 and rejects anything else with DigestInvalidError.
 */
import { createHash, type Hash } from 'node:crypto'
import { DigestInvalidError, DigestMismatchError } from './errors.js'

/** A digest algorithm shoal can compute. */
export type DigestAlgorithm = 'sha256' | 'sha512'

/** A validated digest string such as `sha256:e3b0…`. */
export type Digest = `${DigestAlgorithm}:${string}`

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 }
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/

/** True when `s` is a well-formed digest with a supported algorithm. */
export function isDigest(s: string): s is Digest {
  try {
    parseDigest(s)
    return true
  } catch {
    return false
  }
}

/**
 * Parses and validates a digest. Throws DigestInvalidError for a malformed digest, an
 * unsupported algorithm, or an encoded part of the wrong length or alphabet.
 */
export function parseDigest(s: string): { algorithm: DigestAlgorithm; hex: string; digest: Digest } {
  if (typeof s !== 'string' || s.length > 200 || !DIGEST_GRAMMAR.test(s)) {
    throw new DigestInvalidError(`invalid digest: ${String(s).slice(0, 200)}`)
  }
  const i = s.indexOf(':')
  const algorithm = s.slice(0, i)
  const hex = s.slice(i + 1)
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new DigestInvalidError(`unsupported digest algorithm: ${algorithm}`)
  }
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[a-f0-9]+$/.test(hex)) {
    throw new DigestInvalidError(`invalid ${algorithm} digest: ${s}`)
  }
  return { algorithm, hex, digest: s as Digest }
}

/** The digest of `data` with the given algorithm (sha256 by default). */
export function digestOf(data: Uint8Array | string, algorithm: DigestAlgorithm = 'sha256'): Digest {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}` as Digest
}

/** An incremental digester: feed chunks, then read the digest. */
export class Digester {
  readonly algorithm: DigestAlgorithm
  private readonly hash: Hash
  private bytes = 0

  constructor(algorithm: DigestAlgorithm = 'sha256') {
    this.algorithm = algorithm
    this.hash = createHash(algorithm)
  }

  update(chunk: Uint8Array): void {
    this.hash.update(chunk)
    this.bytes += chunk.byteLength
  }

  /** Number of bytes fed so far. */
  get size(): number {
    return this.bytes
  }

  /** The digest of everything fed; can be called once. */
  digest(): Digest {
    return `${this.algorithm}:${this.hash.digest('hex')}` as Digest
  }
}

/** Throws DigestMismatchError when `actual` differs from `expected`. */
export function assertDigest(expected: Digest, actual: Digest): void {
  if (expected !== actual) {
    throw new DigestMismatchError(undefined, { expected, actual })
  }
}
