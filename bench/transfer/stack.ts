/**
 * The libp2p transport stacks the transfer benchmark compares. Each variant is the
 * node's own stack (TCP, noise, yamux) with one thing changed: the noise cipher, the
 * yamux stream window (set on both ends, LIBP2P.md pitfall 4) or, on the serving side,
 * the size of the writes the piece server makes (the cache's read chunk).
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { Libp2p } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { createNoiseCrypto } from '../../protocol/src/p2p/noise-crypto.js'
import { shoalNoise } from '../../protocol/src/p2p/noise-encrypter.js'

/** One configuration of the shoal piece path under test. */
export interface StackVariant {
  /** Short name used on the command line and in the report. */
  name: string
  /** What it changes, for the report. */
  description: string
  /** The noise cipher: the package default or createNoiseCrypto. */
  cipher: 'default' | 'node' | 'node-tag-chunk'
  /** The noise data phase: the package's own stream or shoal's NoiseFrameStream (shoalNoise). */
  encrypter?: 'package' | 'shoal'
  /** yamux initial and maximum stream window in bytes (both ends); undefined keeps the default (256 KiB / 16 MiB). */
  streamWindowBytes?: number
  /** Bytes per piece-server write (the cache's read chunk). @default 1 MiB */
  writeBytes?: number
}

const MiB = 1 << 20

/** Every variant the benchmark knows; `--variants` picks among them. */
export const STACK_VARIANTS: StackVariant[] = [
  {
    name: 'default',
    description: 'as node.ts runs it: noise default crypto, yamux defaults, 1 MiB writes',
    cipher: 'default',
  },
  {
    name: 'shoal-noise',
    description: 'shoalNoise: package handshake, shoal data phase (one write per send, no per-frame lists)',
    cipher: 'node-tag-chunk',
    encrypter: 'shoal',
  },
  { name: 'node-crypto', description: 'noise with createNoiseCrypto', cipher: 'node' },
  {
    name: 'node-crypto-tag',
    description: 'createNoiseCrypto, tag as its own chunk (no copy, one more write)',
    cipher: 'node-tag-chunk',
  },
  {
    name: 'window-4m',
    description: 'createNoiseCrypto, yamux stream window 4 MiB both ends',
    cipher: 'node',
    streamWindowBytes: 4 * MiB,
  },
  {
    name: 'writes-4m',
    description: 'createNoiseCrypto, 4 MiB piece-server writes',
    cipher: 'node',
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
  const crypto =
    variant.cipher === 'default'
      ? undefined
      : createNoiseCrypto({ tagChunk: variant.cipher === 'node-tag-chunk' })
  const window = variant.streamWindowBytes
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [variant.encrypter === 'shoal' ? shoalNoise() : noise(crypto ? { crypto } : {})],
    streamMuxers: [
      yamux(
        window === undefined
          ? {}
          : { streamOptions: { initialStreamWindowSize: window, maxStreamWindowSize: window } },
      ),
    ],
    connectionManager: { allow: ['/ip4/127.0.0.0/ipcidr/8'] },
  })
  return node
}
