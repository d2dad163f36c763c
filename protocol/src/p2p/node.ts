/**
 * The libp2p node of a shoal peer: TCP, noise (shoalNoise, ADR 0007), yamux, identify, ping and shoal's own
 * Kademlia DHT, configured as LIBP2P.md prescribes for a LAN (server mode, addresses
 * kept as they are, the cluster ranges allow-listed in the connection manager). A
 * cluster can be closed with a pre-shared key (libp2p private network) and/or an
 * allow-list of peer ids.
 */
import { yamux } from '@chainsafe/libp2p-yamux'
import { type Identify, identify } from '@libp2p/identify'
import type { ConnectionGater, Libp2p, PeerId, PeerInfo, PrivateKey } from '@libp2p/interface'
import { type KadDHT, kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { type Ping, ping } from '@libp2p/ping'
import { generateKey, preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { createLibp2p, type Libp2pInit } from 'libp2p'
import type { Logger } from 'pino'
import { blobCid } from '../cid.js'
import type { Digest } from '../digest.js'
import { KAD_PROTOCOL } from '../protocols.js'
import { shoalNoise } from './noise-encrypter.js'

/** The libp2p services a shoal node runs. */
export type P2PServices = {
  identify: Identify
  ping: Ping
  dht: KadDHT
}

/** Options for createP2PNode. */
export interface P2PNodeInit {
  /** Multiaddrs to listen on. @default ['/ip4/127.0.0.1/tcp/0'] */
  listen?: string[]
  /** Multiaddrs to announce instead of the listen addresses. */
  announce?: string[]
  /** The node's identity; a fresh Ed25519 key when absent. */
  privateKey?: PrivateKey
  /**
   * Pre-shared key of a private network, in the swarm key file format
   * (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits); see generateSwarmKey.
   * Nodes without the same key cannot connect.
   */
  psk?: Uint8Array
  /**
   * Peer ids (string form) allowed to connect either way; undefined lets anyone
   * (who passes the PSK, if any) in.
   */
  allowPeers?: string[]
  /** Multiaddrs (with /p2p/<id>) dialled at start so the DHT has somewhere to begin. */
  bootstrap?: string[]
  /** DHT protocol id. @default KAD_PROTOCOL */
  dhtProtocol?: string
  /**
   * Networks whose peers skip the connection manager's per-IP inbound limits (many
   * peers share one address in tests and testbeds).
   * @default loopback and 198.18.0.0/15
   */
  allowNetworks?: string[]
  /** @default 300 */
  maxConnections?: number
  /** How often a node without connections dials its bootstrap peers again. @default 30000 */
  rebootstrapIntervalMs?: number
}

/** A started-or-stopped shoal libp2p node. */
export interface P2PNode {
  readonly libp2p: Libp2p<P2PServices>
  readonly peerId: PeerId
  /** Starts libp2p and dials the bootstrap peers (failures are logged, not thrown). */
  start(options?: { signal?: AbortSignal }): Promise<void>
  /** Stops libp2p; safe to call twice. */
  stop(): Promise<void>
  /** The addresses other peers can dial, each ending in /p2p/<id>. */
  getMultiaddrs(): Multiaddr[]
  /** Announces in the DHT that this node provides `digest`. Throws when the DHT refuses. */
  provide(digest: Digest, options?: { signal?: AbortSignal }): Promise<void>
  /**
   * Looks the DHT up for peers providing `digest` and stops as soon as `limit` usable
   * ones are found (not this node, on the allow-list, passing `filter`); returns what
   * was found when the lookup ends or `signal` aborts (the DHT walks to exhaustion if
   * it is not stopped: LIBP2P.md pitfall 7).
   */
  findProviders(
    digest: Digest,
    options?: { signal?: AbortSignal; limit?: number; filter?: (peer: PeerInfo) => boolean },
  ): Promise<PeerInfo[]>
}

/** The collaborators of a node. */
export interface P2PNodeComponents {
  logger?: Logger
}

/** Queries in flight per lookup path (see the kadDHT options below). */
const DHT_ALPHA = 3
/** Disjoint paths of one DHT lookup. */
const DHT_DISJOINT_PATHS = 2

/** Default networks allow-listed in the connection manager. */
export const DEFAULT_ALLOW_NETWORKS = [
  '/ip4/127.0.0.0/ipcidr/8',
  '/ip6/::1/ipcidr/128',
  '/ip4/198.18.0.0/ipcidr/15',
]

/**
 * The connection encrypters every shoal node offers: libp2p /noise with shoal's data
 * phase (wire-compatible with stock @chainsafe/libp2p-noise; ADR 0007). Shared with the
 * transfer benchmark, whose `default` variant must be exactly this stack.
 */
export function shoalConnectionEncrypters(): NonNullable<Libp2pInit['connectionEncrypters']> {
  return [shoalNoise()]
}

/**
 * Yamux's keepalive interval. Its ping finds no dead connection (a failed ping is only
 * logged; the piece protocols' deadlines and TCP find them), but it is what keeps an idle
 * connection alive: the TCP transport closes a socket with no traffic for 2 minutes, and
 * every peer of an idle agent is then dialled again (a noise handshake and identify at
 * both ends: without pings, 20 idle agents on loopback spent 50-60 ms of CPU per second
 * each for about 20 s every 2 minutes). Every 90 s keeps the sockets open with a third
 * of yamux's default 30 s pings, which were about 8% of an idle agent's busy time.
 */
export const YAMUX_KEEPALIVE_MS = 90_000

/** The stream muxers every shoal node offers: yamux with its default windows (LIBP2P.md pitfall 4). */
export function shoalStreamMuxers(): NonNullable<Libp2pInit['streamMuxers']> {
  return [yamux({ keepAliveInterval: YAMUX_KEEPALIVE_MS })]
}

/** A new random pre-shared key in the swarm key file format, for `P2PNodeInit.psk`. */
export function generateSwarmKey(): Uint8Array {
  const key = new Uint8Array(95)
  generateKey(key)
  return key
}

function allowListGater(allowPeers: string[] | undefined): ConnectionGater {
  if (allowPeers === undefined) return {}
  const allowed = new Set(allowPeers)
  const deny = (peerId: PeerId): boolean => !allowed.has(peerId.toString())
  return {
    denyDialPeer: deny,
    denyInboundEncryptedConnection: deny,
    denyOutboundEncryptedConnection: deny,
  }
}

/**
 * Creates (without starting) a libp2p node for shoal. Throws when an address, the PSK
 * or a bootstrap address is malformed.
 */
export async function createP2PNode(components: P2PNodeComponents, init: P2PNodeInit = {}): Promise<P2PNode> {
  const log = components.logger
  const allowed = init.allowPeers === undefined ? undefined : new Set(init.allowPeers)
  const bootstrap = (init.bootstrap ?? []).map((a) => multiaddr(a))
  const libp2p = await createLibp2p({
    start: false,
    ...(init.privateKey ? { privateKey: init.privateKey } : {}),
    addresses: {
      listen: init.listen ?? ['/ip4/127.0.0.1/tcp/0'],
      ...(init.announce ? { announce: init.announce } : {}),
    },
    transports: [tcp()],
    connectionEncrypters: shoalConnectionEncrypters(),
    streamMuxers: shoalStreamMuxers(),
    ...(init.psk ? { connectionProtector: preSharedKey({ psk: init.psk }) } : {}),
    connectionGater: allowListGater(init.allowPeers),
    // When a whole cluster starts a pull, every agent dials a dozen peers and is dialled
    // by as many in the same second. On a node that busy a noise handshake can take
    // longer than libp2p's defaults (6 s per address, 10 s per dial and per inbound
    // upgrade, 10 upgrades pending): at 50 agents on two cores about 200 of the
    // handshakes timed out, and every one was redone from scratch. Waiting costs less.
    connectionManager: {
      allow: init.allowNetworks ?? DEFAULT_ALLOW_NETWORKS,
      maxConnections: init.maxConnections ?? 300,
      dialTimeout: 30_000,
      addressDialTimeout: 25_000,
      inboundUpgradeTimeout: 25_000,
      maxIncomingPendingConnections: 64,
    },
    // libp2p's connection monitor pings every connection every 10 s on a new stream and
    // aborts the connection when a ping misses its adaptive deadline. On a busy link a
    // ping waits behind megabytes of queued pieces, so it killed healthy connections
    // with every transfer on them (the 25-node testbed lost 680 connections in one pull).
    // Dead peers are found by the piece protocols' own deadlines and TCP.
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      ping: ping(),
      // kad-dht's defaults (10 queries in flight on each of 10 disjoint paths) suit the
      // public IPFS network. In a cluster of tens to thousands of agents on one LAN
      // Kademlia's own alpha of 3 on 2 disjoint paths still finds the closest peers of
      // a key in a few hops, with fewer queries per lookup. (At 25 agents a provide cost
      // about 0.75 CPU-s; this change alone measured within noise of that, 1.08 -> 1.01
      // idle cores after a pull. What cut the cost was providing less: see the agent's
      // combined router.)
      dht: kadDHT({
        protocol: init.dhtProtocol ?? KAD_PROTOCOL,
        clientMode: false,
        peerInfoMapper: passthroughMapper,
        alpha: DHT_ALPHA,
        disjointPaths: DHT_DISJOINT_PATHS,
      }),
    },
  })

  let rebootstrap: ReturnType<typeof setInterval> | undefined

  async function dialBootstrap(signal?: AbortSignal): Promise<void> {
    await Promise.all(
      bootstrap.map(async (addr) => {
        try {
          await libp2p.dial(addr, { signal: signal ?? AbortSignal.timeout(10_000) })
        } catch (err) {
          log?.warn({ err, addr: addr.toString() }, 'could not dial bootstrap peer')
        }
      }),
    )
  }

  function usable(peer: PeerInfo): boolean {
    if (peer.id.equals(libp2p.peerId)) return false
    return allowed === undefined || allowed.has(peer.id.toString())
  }

  return {
    libp2p,
    peerId: libp2p.peerId,

    async start(options = {}) {
      await libp2p.start()
      await dialBootstrap(options.signal)
      if (bootstrap.length > 0) {
        // A node that lost every connection (or started before its bootstrap peers)
        // tries them again, so the DHT heals without a restart.
        rebootstrap = setInterval(() => {
          if (libp2p.getConnections().length === 0) void dialBootstrap()
        }, init.rebootstrapIntervalMs ?? 30_000)
        rebootstrap.unref()
      }
    },

    async stop() {
      clearInterval(rebootstrap)
      rebootstrap = undefined
      await libp2p.stop()
    },

    getMultiaddrs() {
      return libp2p.getMultiaddrs()
    },

    async provide(digest, options = {}) {
      await libp2p.contentRouting.provide(blobCid(digest), {
        signal: options.signal ?? AbortSignal.timeout(30_000),
      })
    },

    async findProviders(digest, options = {}) {
      const limit = options.limit ?? 1
      const found: PeerInfo[] = []
      const seen = new Set<string>()
      // Our own controller ends the walk once enough providers are found.
      const stop = new AbortController()
      const signal = AbortSignal.any([stop.signal, options.signal ?? AbortSignal.timeout(30_000)])
      try {
        for await (const peer of libp2p.contentRouting.findProviders(blobCid(digest), { signal })) {
          const key = peer.id.toString()
          if (seen.has(key) || !usable(peer) || (options.filter && !options.filter(peer))) continue
          seen.add(key)
          found.push(peer)
          if (found.length >= limit) break
        }
      } catch (err) {
        // A lookup cut short by the deadline returns what it found so far.
        if (!signal.aborted) throw err
      } finally {
        stop.abort()
      }
      return found
    },
  }
}
