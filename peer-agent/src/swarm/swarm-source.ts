/**
 * The swarm as a BlobSource for the mirror: a blob is fetched piece by piece from other
 * agents (and, when the tracker grants an origin slot, from the seed registry's peer)
 * into the cache, and streamed to the client in order as verified pieces land, with
 * byte ranges. One download per blob, however many clients read it. Pieces failing
 * their sha256 ban their sender, who is reported to the tracker. When the swarm cannot
 * serve (no trusted piece map, no piece arriving for the stall timeout) the open, or
 * the stream, fails with SwarmUnavailableError so the mirror moves on to the upstream.
 */
import type { Readable } from 'node:stream'
import { peerIdFromString } from '@libp2p/peer-id'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { RangeInvalidError } from '../../../protocol/src/index.js'
import type { Digest } from '../../../protocol/src/index.js'
import { type PeerTarget, type PieceClient, PieceUnavailableError } from '../../../protocol/src/p2p/index.js'
import type { PieceMap } from '../../../protocol/src/piece-map.js'
import type { BlobCache } from '../cache/index.js'
import type {
  BlobOrigin,
  BlobRef,
  BlobSource,
  ByteRange,
  OpenedBlob,
  SourceOptions,
} from '../mirror/sources.js'
import type { ContentRouter, ProviderRecord } from '../routing/index.js'
import {
  createDownloadManager,
  type DownloadManager,
  type DownloadOptions,
  type SwarmPeer,
  SwarmUnavailableError,
} from '../transfer/index.js'
import type { SwarmMetrics } from './metrics.js'
import type { PieceMapStore } from './piece-maps.js'

/** Collaborators of the swarm source. */
export interface SwarmBlobSourceComponents {
  cache: BlobCache
  client: Pick<PieceClient, 'fetchPiece' | 'fetchHave'> & Partial<Pick<PieceClient, 'watchHave'>>
  maps: Pick<PieceMapStore, 'get' | 'seedPeerId'>
  router: ContentRouter & { originAllowed?(digest: Digest): boolean }
  /** This agent's peer id (never returned as a peer). */
  selfPeerId: string
  metrics: SwarmMetrics
  logger?: Logger
}

/** Options of the swarm source. */
export interface SwarmBlobSourceInit {
  /**
   * Give up (SwarmUnavailableError) after this long without a new piece while no peer
   * could send one (see DownloadInit.stallTimeoutMs). @default 20000
   */
  stallTimeoutMs?: number
  /** Agents used at once per download (the seed not counted). @default 16 */
  maxPeers?: number
  /** Agents used at once while a download starts (DownloadInit.startingPeers). @default STARTING_PEERS */
  startingPeers?: number
  /** Piece requests in flight per download, in all (0: no cap). @default MAX_IN_FLIGHT (0) */
  maxInFlight?: number
  /** Deadline of one piece request. @default 30000 */
  pieceTimeoutMs?: number
  /** How often a download re-asks a peer still downloading what it holds. @default 1000 */
  haveRefreshMs?: number
  /**
   * Blobs smaller than this are not fetched from the swarm: open() throws
   * SwarmUnavailableError at once and the mirror asks the seed or upstream.
   * @default 0
   */
  minBlobBytes?: number
}

/** The swarm source with its lifecycle. */
export interface SwarmBlobSource extends BlobSource {
  /** Aborts every download; safe to call twice. */
  stop(): Promise<void>
  /** Peers this agent banned for bad pieces, by digest. */
  banned(digest: Digest): string[]
  /**
   * Whether a piece is a first copy: this process took it from the seed and has sent it
   * to fewer than FIRST_COPY_UPLOADS peers. The piece server serves such pieces
   * beyond its upload cap: nobody else holds them yet (the seed sends each piece once).
   */
  isFirstCopy(digest: Digest, index: number): boolean
  /** Counts a send of a piece to a peer as it starts (the piece server's onPieceStarting). */
  uploaded(digest: Digest, index: number): void
}

/**
 * Uploads of a piece taken from the seed that are served beyond the upload cap. In the
 * simulator (N = 50, 20 Mbit nodes, two layers) serving them first cut the last node
 * from 33.2 to 30.9 s with 2, and at N = 1,000 from 59.1 to 44.7 s.
 */
export const FIRST_COPY_UPLOADS = 2

const FROM_PEER = 1
const FROM_SEED = 2

/** Creates the swarm source (see the file comment). */
export function createSwarmBlobSource(
  components: SwarmBlobSourceComponents,
  init: SwarmBlobSourceInit = {},
): SwarmBlobSource {
  const { cache, maps, router, metrics, selfPeerId } = components
  const log = components.logger
  /** What each target object stands for, so the origin gate can recognise seeds. */
  const targets = new WeakMap<object, { peerId: string; seed: boolean }>()
  const bans = new Map<Digest, Set<string>>()
  /** Which source each piece fetched by this process came from (0: held before). */
  const provenance = new Map<Digest, Uint8Array>()
  /** Uploads started of each piece taken from the seed, by digest. */
  const firstCopyUploads = new Map<Digest, Uint8Array>()
  let stopping = false

  const watchHave = components.client.watchHave?.bind(components.client)
  const gatedClient: Pick<PieceClient, 'fetchPiece' | 'fetchHave'> & Partial<Pick<PieceClient, 'watchHave'>> =
    {
      fetchHave: (target, digest, options) => components.client.fetchHave(target, digest, options),
      ...(watchHave === undefined ? {} : { watchHave }),
      fetchPiece(target, digest, index, options) {
        const who = targets.get(target as object)
        // The tracker rations the origin: without a slot the seed is treated as busy.
        if (who?.seed && router.originAllowed?.(digest) === false) {
          return Promise.reject(new PieceUnavailableError('busy'))
        }
        return components.client.fetchPiece(target, digest, index, options)
      },
    }

  const downloads: DownloadManager = createDownloadManager({
    cache,
    client: gatedClient,
    ...(log ? { logger: log } : {}),
  })

  function targetOf(record: ProviderRecord): PeerTarget {
    const addrs: Multiaddr[] = []
    for (const text of record.multiaddrs) {
      try {
        const withId = text.includes('/p2p/') ? text : `${text}/p2p/${record.peerId}`
        addrs.push(multiaddr(withId))
      } catch {
        // A malformed address from a router is skipped.
      }
    }
    return addrs.length > 0 ? addrs : peerIdFromString(record.peerId)
  }

  function peersFor(map: PieceMap) {
    return async ({ signal }: { signal: AbortSignal }): Promise<SwarmPeer[]> => {
      const found = await router.findPeers(map.digest, { signal, pieceCount: map.pieces.length })
      log?.trace(
        { digest: map.digest, found: found.map((p) => `${p.peerId.slice(-6)}${p.seed ? ':seed' : ''}`) },
        'found peers',
      )
      const banned = bans.get(map.digest)
      const seedId = maps.seedPeerId()
      const peers: SwarmPeer[] = []
      for (const record of found) {
        if (record.peerId === selfPeerId || banned?.has(record.peerId)) continue
        const seed = record.seed === true || record.peerId === seedId
        // A seed the tracker did not hand out (no origin slot) is not used.
        if (record.peerId === seedId && record.seed !== true) continue
        try {
          const target = targetOf(record)
          targets.set(target as object, { peerId: record.peerId, seed })
          peers.push({
            id: record.peerId,
            target,
            ...(seed ? { origin: true } : {}),
            ...(record.bitfield === undefined ? {} : { has: record.bitfield }),
          })
        } catch {
          // An unparseable peer id is skipped.
        }
      }
      return peers
    }
  }

  function downloadOptions(map: PieceMap): DownloadOptions {
    const digest = map.digest
    return {
      findPeers: peersFor(map),
      ...(init.stallTimeoutMs === undefined ? {} : { stallTimeoutMs: init.stallTimeoutMs }),
      ...(init.maxPeers === undefined ? {} : { maxPeers: init.maxPeers }),
      ...(init.startingPeers === undefined ? {} : { startingPeers: init.startingPeers }),
      ...(init.maxInFlight === undefined ? {} : { maxInFlight: init.maxInFlight }),
      ...(init.pieceTimeoutMs === undefined ? {} : { pieceTimeoutMs: init.pieceTimeoutMs }),
      ...(init.haveRefreshMs === undefined ? {} : { haveRefreshMs: init.haveRefreshMs }),
      onVerified(peer, index) {
        // Marked before the piece reaches the cache: a client reading the blob may get
        // it the moment it is written, and an unmarked piece counts as held before.
        let marks = provenance.get(digest)
        if (marks === undefined) {
          marks = new Uint8Array(map.pieces.length)
          provenance.set(digest, marks)
        }
        marks[index] = peer.origin ? FROM_SEED : FROM_PEER
      },
      onPiece(peer, index, bytes) {
        const source = peer.origin ? 'seed' : 'peer'
        log?.trace({ digest, index, peer: peer.id, source }, 'piece stored')
        metrics.pieces.inc({ source })
        metrics.pieceBytes.inc({ source }, bytes)
      },
      onHaveWatch(outcome) {
        metrics.haveWatches.inc({ outcome })
      },
      onWaste(peer, index, reason, bytes) {
        log?.trace({ digest, index, peer: peer.id, reason, bytes }, 'piece request wasted')
        metrics.wastedRequests.inc({ reason })
        metrics.wastedBytes.inc({ reason }, bytes)
      },
      onBadPiece(peer, index) {
        metrics.badPieces.inc()
        let set = bans.get(digest)
        if (set === undefined) {
          set = new Set()
          bans.set(digest, set)
        }
        set.add(peer.id)
        void router.reportBadPeer?.(
          { peerId: peer.id, digest, pieceIndex: index, reason: 'piece failed its sha256 check' },
          { signal: AbortSignal.timeout(5_000) },
        )
      },
    }
  }

  /** Starts the download of `map` unless one runs or the blob is complete. */
  function ensureDownload(map: PieceMap): void {
    const digest = map.digest
    if (downloads.active().includes(digest) || cache.stat(digest)?.complete) return
    const held = cache.stat(digest)
    if (held && held.pieceSize === map.pieceSize && held.piecesHeld > 0) {
      metrics.resumedPieces.inc(held.piecesHeld)
    }
    downloads.fetch(map, downloadOptions(map)).then(
      (result) => {
        if (result !== undefined) metrics.downloads.inc({ result: 'complete' })
        log?.debug(
          {
            digest,
            resumed: result?.resumedPieces,
            banned: result?.bannedPeers,
            bytesByPeer: result ? Object.fromEntries(result.bytesByPeer) : undefined,
          },
          'swarm download finished',
        )
      },
      (err: unknown) => {
        if (stopping) return
        metrics.downloads.inc({ result: 'failed' })
        log?.warn({ err, digest }, 'swarm download failed')
      },
    )
  }

  async function mapOf(ref: BlobRef, signal: AbortSignal | undefined): Promise<PieceMap> {
    try {
      return await maps.get(ref.digest, signal ? { signal } : {})
    } catch (err) {
      if (signal?.aborted) throw err
      metrics.unavailable.inc()
      if (err instanceof SwarmUnavailableError) throw err
      throw new SwarmUnavailableError(`swarm unavailable: ${(err as Error).message}`, { digest: ref.digest })
    }
  }

  function sourceAt(map: PieceMap, position: number): BlobOrigin {
    const mark = provenance.get(map.digest)?.[Math.floor(position / map.pieceSize)] ?? 0
    return mark === FROM_SEED ? 'seed' : mark === FROM_PEER ? 'peer' : 'cache'
  }

  return {
    async stat(ref: BlobRef, options: SourceOptions = {}) {
      const map = await mapOf(ref, options.signal)
      return { digest: map.digest, size: map.size }
    },

    async open(ref: BlobRef, range: ByteRange | undefined, options: SourceOptions = {}): Promise<OpenedBlob> {
      const { signal } = options
      const map = await mapOf(ref, signal)
      const start = range?.start ?? 0
      const end = range?.end ?? map.size - 1
      if (start < 0 || end >= map.size || (start > end && map.size > 0)) {
        throw new RangeInvalidError(`range ${start}-${end} outside the blob`, { size: map.size })
      }
      if (map.size < (init.minBlobBytes ?? 0) && !cache.stat(map.digest)?.complete) {
        metrics.small.inc()
        throw new SwarmUnavailableError(`blob of ${map.size} bytes is below the swarm's minimum`, {
          digest: map.digest,
        })
      }
      ensureDownload(map)
      let stream: Readable
      try {
        stream = await downloads.read(map, start, end + 1, {
          ...downloadOptions(map),
          ...(signal ? { signal } : {}),
        })
      } catch (err) {
        if (signal?.aborted) throw err
        metrics.unavailable.inc()
        throw err
      }
      let first: BlobOrigin | undefined
      return {
        size: map.size,
        stream,
        range: { start, end },
        get source() {
          first ??= sourceAt(map, start)
          return first === 'cache' ? 'peer' : first
        },
        sourceAt: (position: number) => sourceAt(map, position),
      }
    },

    banned(digest) {
      return [...(bans.get(digest) ?? [])]
    },

    isFirstCopy(digest, index) {
      return (
        provenance.get(digest)?.[index] === FROM_SEED &&
        (firstCopyUploads.get(digest)?.[index] ?? 0) < FIRST_COPY_UPLOADS
      )
    },

    uploaded(digest, index) {
      if (provenance.get(digest)?.[index] !== FROM_SEED) return
      let counts = firstCopyUploads.get(digest)
      if (counts === undefined) {
        counts = new Uint8Array(provenance.get(digest)?.length ?? 0)
        firstCopyUploads.set(digest, counts)
      }
      if (index < counts.length && counts[index]! < 255) counts[index]!++
    },

    async stop() {
      stopping = true
      await downloads.stop()
    },
  }
}
