/**
 * The seed's signed piece maps: computed from a blob's bytes (computePieceMap, once;
 * the store verified the digest at commit), signed with the seed's libp2p key, and stored
 * beside the blob through the storage driver so they survive restarts and go away
 * with the blob. A blob that has none yet (stored before the seed existed, or whose
 * commit hook was missed) gets one on first request. Concurrent requests for one blob
 * share one computation.
 */
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { Logger } from 'pino'
import { type Digest, raceSignal } from '../../../protocol/src/index.js'
import {
  computePieceMap,
  decodeSignedPieceMap,
  encodeSignedPieceMap,
  type SignedPieceMap,
  signPieceMap,
  verifyPieceMap,
} from '../../../protocol/src/piece-map.js'
import { type StorageDriver, StoragePathNotFoundError } from '../storage/index.js'
import { blobPieceMapPath } from '../storage/paths.js'
import type { BlobContent } from './blob-content.js'

/** Options of the piece map store. */
export interface PieceMapStoreInit {
  /** Piece size of new maps; by default choosePieceSize picks it from the blob size. */
  pieceSize?: number
  /** Signed maps kept in memory. @default 4096 */
  cacheEntries?: number
  /** Called after a map was computed and stored. */
  onComputed?: (digest: Digest) => void
}

/** Gets (computing when needed) the seed's signed piece maps. */
export interface PieceMapStore {
  /** The signer's peer id. */
  readonly signer: PeerId
  /**
   * The signed piece map of a held blob, computed and stored first when it has none;
   * undefined when the blob is not held.
   */
  get(digest: Digest, options?: { signal?: AbortSignal }): Promise<SignedPieceMap | undefined>
  /** Piece maps computed (not read back) since start, for tests and logs. */
  computed(): number
}

/** Creates the piece map store. */
export function createPieceMapStore(
  components: { driver: StorageDriver; content: BlobContent; privateKey: PrivateKey; logger?: Logger },
  init: PieceMapStoreInit = {},
): PieceMapStore {
  const { driver, content, privateKey, logger } = components
  const signer = peerIdFromPrivateKey(privateKey)
  const maxEntries = init.cacheEntries ?? 4096
  const cache = new Map<Digest, SignedPieceMap>()
  const running = new Map<Digest, Promise<SignedPieceMap | undefined>>()
  let computedCount = 0

  function remember(digest: Digest, signed: SignedPieceMap): void {
    cache.delete(digest)
    cache.set(digest, signed)
    if (cache.size > maxEntries) cache.delete(cache.keys().next().value as Digest)
  }

  /** The stored map, when there is one signed by this seed for a blob of this size. */
  async function readStored(
    digest: Digest,
    size: number,
    signal?: AbortSignal,
  ): Promise<SignedPieceMap | undefined> {
    let bytes: Uint8Array
    try {
      bytes = await driver.getContent(blobPieceMapPath(digest), { signal })
    } catch (err) {
      if (err instanceof StoragePathNotFoundError) return undefined
      throw err
    }
    try {
      const signed = decodeSignedPieceMap(bytes)
      const map = await verifyPieceMap(signed, signer)
      if (map.digest === digest && map.size === size) return signed
    } catch (err) {
      // A damaged file, or one signed under an earlier key: compute it again.
      logger?.warn({ err, digest }, 'stored piece map unusable, recomputing')
    }
    return undefined
  }

  async function load(digest: Digest, signal?: AbortSignal): Promise<SignedPieceMap | undefined> {
    const size = await content.size(digest, { signal })
    if (size === undefined) return undefined
    const stored = await readStored(digest, size, signal)
    if (stored) return stored
    // computePieceMap hashes each chunk before it asks for the next, so the chunks may
    // share one reused buffer (no allocation per chunk over the whole blob).
    const body = await content.scan(digest, size, { signal })
    if (body === undefined) return undefined
    let map: Awaited<ReturnType<typeof computePieceMap>>
    try {
      // The blob store verified this digest when the blob was committed and never
      // exposes partial blobs; agents check the whole blob again before completing it.
      // Skipping the second whole-blob hash saves a full pass over every pushed byte.
      map = await computePieceMap(body, digest, size, {
        verifyDigest: false,
        ...(init.pieceSize !== undefined ? { pieceSize: init.pieceSize } : {}),
        ...(signal ? { signal } : {}),
      })
    } finally {
      if ('destroy' in body && typeof body.destroy === 'function') body.destroy()
    }
    const signed = await signPieceMap(map, privateKey)
    // Gone meanwhile (garbage collection): do not leave a map without its blob behind.
    if ((await content.size(digest, { signal })) === undefined) return undefined
    await driver.putContent(blobPieceMapPath(digest), encodeSignedPieceMap(signed), { signal })
    computedCount++
    init.onComputed?.(digest)
    logger?.debug({ digest, pieces: map.pieces.length }, 'piece map computed')
    return signed
  }

  return {
    signer,

    async get(digest, options = {}) {
      const hit = cache.get(digest)
      if (hit) {
        // A blob collected as garbage must not keep being offered.
        if ((await content.size(digest, options)) !== undefined) return hit
        cache.delete(digest)
        return undefined
      }
      let pending = running.get(digest)
      if (pending === undefined) {
        // Shared by every caller, so one caller's abort must not cancel it.
        pending = load(digest).finally(() => running.delete(digest))
        running.set(digest, pending)
      }
      const signed = await raceSignal(pending, options.signal)
      if (signed) remember(digest, signed)
      return signed
    },

    computed() {
      return computedCount
    },
  }
}
