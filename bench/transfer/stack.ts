/**
 * The piece paths the transfer benchmark compares. `default` is the path the agent and
 * the seed run: the libp2p stack protocol/src/p2p/node.ts builds (its
 * shoalConnectionEncrypters and shoalStreamMuxers) for the lane session, and pieces on
 * the piece lane (lane.ts, ADR 0008, 0009). `libp2p-streams` keeps pieces on libp2p streams
 * of that stack; the other variants are that with one thing changed: the connection
 * encrypter (stock @chainsafe/libp2p-noise, with its default cipher or
 * createNoiseCrypto), shoalNoise's send size, the yamux stream window (set on both
 * ends, LIBP2P.md pitfall 4), or, on the serving side, the size of the writes the piece
 * server makes (the cache's read chunk).
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { Libp2p } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { shoalConnectionEncrypters, shoalStreamMuxers } from '../../protocol/src/p2p/node.js'
import { createNoiseCrypto } from '../../protocol/src/p2p/noise-crypto.js'
import { shoalNoise } from '../../protocol/src/p2p/noise-encrypter.js'

/** One configuration of the shoal piece path under test (plain data: it is sent to the workers). */
export interface StackVariant {
  /** Short name used on the command line and in the report. */
  name: string
  /** What it changes, for the report. */
  description: string
  /**
   * The connection encrypter: node.ts's (shoalNoise) when absent, else stock
   * @chainsafe/libp2p-noise with the package's default cipher or createNoiseCrypto.
   */
  stockNoise?: 'default-crypto' | 'node-crypto' | 'node-crypto-tag'
  /** shoalNoise's maxSendBytes (plaintext sealed into one socket write); undefined keeps node.ts's. */
  noiseSendBytes?: number
  /** yamux initial and maximum stream window in bytes (both ends); undefined keeps node.ts's yamux. */
  streamWindowBytes?: number
  /** Bytes per piece-server write (the cache's read chunk). @default 1 MiB */
  writeBytes?: number
  /**
   * Pieces and bitfields over libp2p streams instead of the piece lane (lane.ts, ADR
   * 0008) the agent and seed use; the variants that change the libp2p stack set it.
   */
  libp2pStreams?: boolean
}

const MiB = 1 << 20

/** Every variant the benchmark knows; `--variants` picks among them. */
export const STACK_VARIANTS: StackVariant[] = [
  {
    name: 'default',
    description:
      "as the agent runs it: pieces on the piece lane (ADR 0008, 0009, 0011; own TCP socket, TLS 1.3 from its first byte with a PSK handed out over node.ts's libp2p, records decrypted into the pieces)",
  },
  {
    name: 'libp2p-streams',
    description:
      'pieces on libp2p streams as node.ts runs them: shoalNoise (package handshake, shoal data phase), yamux defaults, 1 MiB writes (the agent before ADR 0008)',
    libp2pStreams: true,
  },
  {
    name: 'stock-noise',
    description: 'stock @chainsafe/libp2p-noise data phase with its default crypto (node.ts before ADR 0007)',
    stockNoise: 'default-crypto',
    libp2pStreams: true,
  },
  {
    name: 'node-crypto',
    description: 'stock noise data phase with createNoiseCrypto',
    stockNoise: 'node-crypto',
    libp2pStreams: true,
  },
  {
    name: 'node-crypto-tag',
    description: 'stock noise data phase, createNoiseCrypto with the tag as its own chunk',
    stockNoise: 'node-crypto-tag',
    libp2pStreams: true,
  },
  {
    name: 'send-256k',
    description:
      'libp2p-streams with shoalNoise sealing at most 4 frames (256 KiB) per socket write instead of 16',
    noiseSendBytes: 4 * 65_519,
    libp2pStreams: true,
  },
  {
    name: 'window-4m',
    description: 'libp2p-streams with a yamux stream window of 4 MiB on both ends',
    streamWindowBytes: 4 * MiB,
    libp2pStreams: true,
  },
  {
    name: 'writes-4m',
    description: 'default with 4 MiB piece-server writes',
    writeBytes: 4 * MiB,
  },
]

/** Looks variants up by name. @throws {RangeError} for an unknown name */
export function findVariants(names: string[]): StackVariant[] {
  return names.map((name) => {
    const variant = STACK_VARIANTS.find((v) => v.name === name)
    if (variant === undefined) {
      throw new RangeError(`unknown variant ${name}; known: ${STACK_VARIANTS.map((v) => v.name).join(', ')}`)
    }
    return variant
  })
}

/** Starts a libp2p node with the variant's transport stack, listening on loopback. */
export async function startStack(variant: StackVariant): Promise<Libp2p> {
  const window = variant.streamWindowBytes
  const stock = variant.stockNoise
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters:
      stock === undefined
        ? variant.noiseSendBytes === undefined
          ? shoalConnectionEncrypters()
          : [shoalNoise({ maxSendBytes: variant.noiseSendBytes })]
        : [
            noise(
              stock === 'default-crypto'
                ? {}
                : { crypto: createNoiseCrypto({ tagChunk: stock === 'node-crypto-tag' }) },
            ),
          ],
    streamMuxers:
      window === undefined
        ? shoalStreamMuxers()
        : [yamux({ streamOptions: { initialStreamWindowSize: window, maxStreamWindowSize: window } })],
    connectionManager: { allow: ['/ip4/127.0.0.0/ipcidr/8'] },
  })
  return node
}
