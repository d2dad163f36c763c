/**
 * shoal's libp2p connection encrypter: libp2p /noise (Noise_XX_25519_ChaChaPoly_SHA256)
 * as @chainsafe/libp2p-noise speaks it, wire-compatible with it both ways (ADR 0007).
 *
 * The XX handshake, identity payload checks, early muxer negotiation and the cipher
 * states are the package's own, unchanged: this module asks the package's Noise object
 * to run the handshake and keeps the result's `encrypt` / `decrypt`. Only the data
 * phase is replaced, by NoiseFrameStream (one socket write per send, no per-frame
 * lists or events), and the per-message cipher is createNoiseCrypto's (node's
 * chacha20-poly1305 with a cached key object).
 */
import { noise, type NoiseComponents, type NoiseExtensions, type NoiseInit } from '@chainsafe/libp2p-noise'
import { publicKeyFromProtobuf } from '@libp2p/crypto/keys'
import {
  type ConnectionEncrypter,
  InvalidCryptoExchangeError,
  type Logger,
  type MessageStream,
  type PrivateKey,
  type PublicKey,
  type SecureConnectionOptions,
  type SecuredConnection,
  serviceCapabilities,
  type StreamMuxerFactory,
} from '@libp2p/interface'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { type LengthPrefixedStream, lpStream } from '@libp2p/utils'
import type { Uint8ArrayList } from 'uint8arraylist'
import { createNoiseCrypto } from './noise-crypto.js'
import {
  NOISE_MAX_MESSAGE_BYTES,
  NoiseFrameStream,
  type NoiseFrameStreamInit,
  type NoiseSession,
} from './noise-frame-stream.js'

/** Options for shoalNoise: the package's own (its `crypto` is replaced) and the stream's. */
export interface ShoalNoiseInit extends Omit<NoiseInit, 'crypto'> {
  /** Plaintext sealed into one socket write at most. @default 16 noise frames */
  maxSendBytes?: number
}

/** The handshake result of @chainsafe/libp2p-noise 17 (not exported by the package). */
interface HandshakeResult extends NoiseSession {
  payload: {
    identityKey: Uint8Array
    extensions?: NoiseExtensions & { streamMuxers?: string[] }
  }
}

type RunHandshake = (
  connection: LengthPrefixedStream,
  privateKey: PrivateKey,
  log: Logger,
  remoteIdentityKey: PublicKey | undefined,
  options: SecureConnectionOptions | undefined,
) => Promise<HandshakeResult>

/**
 * The two handshake methods of the package's Noise class (TypeScript-private in 17.x,
 * hence the check at construction: an upgrade that renames them fails loudly at start,
 * not on the first connection).
 */
interface NoiseHandshakes {
  performHandshakeInitiator: RunHandshake
  performHandshakeResponder: RunHandshake
}

/** Thrown at construction when the installed noise package lacks the handshake methods used. */
export class NoiseHandshakeUnavailableError extends Error {
  constructor() {
    super('@chainsafe/libp2p-noise does not expose performHandshakeInitiator/Responder (expected 17.x)')
    this.name = 'NoiseHandshakeUnavailableError'
  }
}

function uint16BEEncode(value: number): Uint8Array {
  return Uint8Array.of(value >> 8, value & 0xff)
}
uint16BEEncode.bytes = 2

function uint16BEDecode(data: Uint8ArrayList | Uint8Array): number {
  if (data.byteLength < 2) throw new RangeError('Could not decode int16BE')
  return data instanceof Uint8Array ? (data[0]! << 8) | data[1]! : data.getUint16(0)
}
uint16BEDecode.bytes = 2

class ShoalNoise implements ConnectionEncrypter<NoiseExtensions> {
  readonly protocol = '/noise'
  readonly [Symbol.toStringTag] = 'shoal-noise'
  readonly [serviceCapabilities] = ['@libp2p/connection-encryption', '@chainsafe/libp2p-noise']

  private readonly components: NoiseComponents
  private readonly handshakes: NoiseHandshakes
  private readonly streamInit: NoiseFrameStreamInit

  constructor(components: NoiseComponents, init: ShoalNoiseInit) {
    this.components = components
    const { maxSendBytes, ...noiseInit } = init
    this.streamInit = {}
    if (maxSendBytes !== undefined) this.streamInit.maxSendBytes = maxSendBytes
    // tagChunk: a sealed message comes back as its parts, copied once into the send buffer.
    const inner = noise({ ...noiseInit, crypto: createNoiseCrypto({ tagChunk: true }) })(
      components,
    ) as unknown as Partial<NoiseHandshakes>
    if (
      typeof inner.performHandshakeInitiator !== 'function' ||
      typeof inner.performHandshakeResponder !== 'function'
    ) {
      throw new NoiseHandshakeUnavailableError()
    }
    this.handshakes = {
      performHandshakeInitiator: inner.performHandshakeInitiator.bind(inner),
      performHandshakeResponder: inner.performHandshakeResponder.bind(inner),
    }
  }

  secureOutbound(
    connection: MessageStream,
    options?: SecureConnectionOptions,
  ): Promise<SecuredConnection<NoiseExtensions>> {
    return this.secure(connection, this.handshakes.performHandshakeInitiator, options)
  }

  secureInbound(
    connection: MessageStream,
    options?: SecureConnectionOptions,
  ): Promise<SecuredConnection<NoiseExtensions>> {
    return this.secure(connection, this.handshakes.performHandshakeResponder, options)
  }

  private async secure(
    connection: MessageStream,
    handshake: RunHandshake,
    options: SecureConnectionOptions | undefined,
  ): Promise<SecuredConnection<NoiseExtensions>> {
    const log = connection.log.newScope('noise')
    const framed = lpStream(connection, {
      lengthEncoder: uint16BEEncode,
      lengthDecoder: uint16BEDecode,
      maxDataLength: NOISE_MAX_MESSAGE_BYTES,
    })
    const result = await handshake(
      framed,
      this.components.privateKey,
      log,
      options?.remotePeer?.publicKey,
      options,
    )
    const remotePeer = peerIdFromPublicKey(publicKeyFromProtobuf(result.payload.identityKey))
    const secured: SecuredConnection<NoiseExtensions> = {
      connection: new NoiseFrameStream(framed.unwrap(), result, this.streamInit),
      remotePeer,
    }
    if (result.payload.extensions !== undefined) secured.remoteExtensions = result.payload.extensions
    if (options?.skipStreamMuxerNegotiation !== true) {
      const muxer = this.streamMuxer(result.payload.extensions?.streamMuxers)
      if (muxer !== undefined) secured.streamMuxer = muxer
    }
    return secured
  }

  /** The first muxer the remote offered in the handshake that this node has (as the package picks). */
  private streamMuxer(protocols: string[] | undefined): StreamMuxerFactory | undefined {
    if (protocols === undefined || protocols.length === 0) return undefined
    const muxers = this.components.upgrader.getStreamMuxers()
    for (const protocol of protocols) {
      const muxer = muxers.get(protocol)
      if (muxer !== undefined) return muxer
    }
    throw new InvalidCryptoExchangeError(
      'Early muxer negotiation was requested but the initiator and responder had no common muxers',
    )
  }
}

/**
 * The connection encrypter for `createLibp2p({ connectionEncrypters: [shoalNoise()] })`:
 * libp2p /noise, interoperable with `noise()` of @chainsafe/libp2p-noise, with a leaner
 * data phase. Throws NoiseHandshakeUnavailableError when the node is built against a
 * noise package whose handshake it cannot reach.
 */
export function shoalNoise(
  init: ShoalNoiseInit = {},
): (components: NoiseComponents) => ConnectionEncrypter<NoiseExtensions> {
  return (components) => new ShoalNoise(components, init)
}
