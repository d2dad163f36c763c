/**
 * A leaner implementation of the noise transport cipher for Node (the `crypto` option
 * of @chainsafe/libp2p-noise). The wire format is unchanged (ChaCha20-Poly1305, 16-byte
 * tag, the nonce and key noise hands in), so a node using it talks to one using the
 * default; only the per-frame work differs:
 *
 * - the key is turned into a KeyObject once per session key, not once per frame;
 * - frames are encrypted without the wasm detour for small frames, and a frame
 *   handed in as several parts (yamux header + data) comes back as one buffer with
 *   its tag, so @libp2p/tcp makes one socket write per frame instead of one per
 *   part (or, with `tagChunk`, as parts without any copy);
 * - decryption of a frame spread over several received chunks feeds each chunk to the
 *   decipher as it is, never joining them first.
 *
 * Key agreement, hashing and HKDF are the package defaults. shoalNoise (node.ts's
 * encrypter, ADR 0007) runs the package's handshake and data-phase cipher states on it
 * with `tagChunk`.
 */
import { type KeyObject, createCipheriv, createDecipheriv, createSecretKey } from 'node:crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { Uint8ArrayList } from 'uint8arraylist'

/** What noise accepts back from the cipher (its own uint8arraylist major version). */
type Sealed = ReturnType<ICryptoInterface['chaCha20Poly1305Encrypt']>

/** Our uint8arraylist (v3) is read by noise's (v2) through the shared list symbol. */
function asSealed(list: Uint8ArrayList): Sealed {
  return list as unknown as Sealed
}

const ALGORITHM = 'chacha20-poly1305'
const TAG_BYTES = 16
const KEY_CACHE_LIMIT = 1024

/** Options for createNoiseCrypto. */
export interface NoiseCryptoInit {
  /**
   * Return the 16-byte tag as its own chunk (a Uint8ArrayList of ciphertext and tag)
   * instead of copying ciphertext and tag into one buffer. Saves a copy per frame but
   * costs one more socket write per frame in @libp2p/tcp.
   * @default false
   */
  tagChunk?: boolean
}

/** Thrown when a frame fails authentication (wrong key, nonce, or tampered bytes). */
export class NoiseDecryptError extends Error {
  constructor(cause?: unknown) {
    super('invalid chacha20-poly1305 frame', { cause })
    this.name = 'NoiseDecryptError'
  }
}

/**
 * KeyObjects by key bytes. Noise uses one key per direction per connection for the
 * connection's whole life, so a small map is hit on nearly every frame; it is emptied
 * when it grows past KEY_CACHE_LIMIT (many short connections).
 */
function createKeyCache(): (k: Uint8Array) => KeyObject {
  const keys = new Map<string, KeyObject>()
  return (k) => {
    const id = Buffer.from(k.buffer, k.byteOffset, k.byteLength).toString('latin1')
    let key = keys.get(id)
    if (key === undefined) {
      if (keys.size >= KEY_CACHE_LIMIT) keys.clear()
      key = createSecretKey(Buffer.from(k))
      keys.set(id, key)
    }
    return key
  }
}

/**
 * Creates the noise crypto for `noise({ crypto })`. Wire-compatible with the package's
 * default crypto.
 */
export function createNoiseCrypto(init: NoiseCryptoInit = {}): ICryptoInterface {
  const tagChunk = init.tagChunk ?? false
  const keyFor = createKeyCache()

  return {
    hashSHA256: defaultCrypto.hashSHA256,
    getHKDF: defaultCrypto.getHKDF,
    generateX25519KeyPair: defaultCrypto.generateX25519KeyPair,
    generateX25519KeyPairFromSeed: defaultCrypto.generateX25519KeyPairFromSeed,
    generateX25519SharedKey: defaultCrypto.generateX25519SharedKey,

    chaCha20Poly1305Encrypt(plaintext, nonce, ad, k) {
      const cipher = createCipheriv(ALGORITHM, keyFor(k), nonce, { authTagLength: TAG_BYTES })
      if (ad.byteLength > 0) cipher.setAAD(ad, { plaintextLength: plaintext.byteLength })
      if (plaintext instanceof Uint8Array) {
        const body = cipher.update(plaintext)
        cipher.final()
        const tag = cipher.getAuthTag()
        if (tagChunk) return asSealed(new Uint8ArrayList(body, tag))
        const out = Buffer.allocUnsafe(body.byteLength + TAG_BYTES)
        body.copy(out, 0)
        tag.copy(out, body.byteLength)
        return out
      }
      // A yamux frame arrives as a list (its 12-byte header, then data): the parts are
      // sealed into one buffer so @libp2p/tcp makes one socket write per frame, not one
      // per part.
      const parts: Buffer[] = []
      for (const chunk of plaintext) parts.push(cipher.update(chunk))
      cipher.final()
      if (tagChunk) {
        const out = new Uint8ArrayList(...parts)
        out.append(cipher.getAuthTag())
        return asSealed(out)
      }
      const out = Buffer.allocUnsafe(plaintext.byteLength + TAG_BYTES)
      let offset = 0
      for (const part of parts) offset += part.copy(out, offset)
      cipher.getAuthTag().copy(out, offset)
      return out
    },

    chaCha20Poly1305Decrypt(ciphertext, nonce, ad, k) {
      const length = ciphertext.byteLength - TAG_BYTES
      if (length < 0) throw new NoiseDecryptError()
      const decipher = createDecipheriv(ALGORITHM, keyFor(k), nonce, { authTagLength: TAG_BYTES })
      if (ad.byteLength > 0) decipher.setAAD(ad, { plaintextLength: length })
      try {
        if (ciphertext instanceof Uint8Array) {
          decipher.setAuthTag(ciphertext.subarray(length))
          const out = decipher.update(ciphertext.subarray(0, length))
          decipher.final()
          return out
        }
        decipher.setAuthTag(ciphertext.subarray(length))
        const out = new Uint8ArrayList()
        for (const chunk of ciphertext.sublist(0, length)) {
          if (chunk.byteLength > 0) out.append(decipher.update(chunk))
        }
        decipher.final()
        return asSealed(out)
      } catch (err) {
        throw new NoiseDecryptError(err)
      }
    },
  }
}
