/**
 * The agent's side of the shared piece server: its blob cache already has the shape of
 * a PieceSource (stat, hasPiece, bitfield, readRange pinning the blob while a piece is
 * read); this adds the signed piece maps the agent can pass on to other peers.
 */
import type { Digest } from '../../protocol/src/digest.js'
import type { SignedPieceMap } from '../../protocol/src/piece-map.js'
import { createPieceWatchers, type PieceSource } from '../../protocol/src/p2p/index.js'
import type { BlobCache } from './cache/index.js'

/**
 * The PieceSource the agent's piece server reads: `cache`, and when `pieceMaps` is given
 * the signed piece maps it returns (served on PIECE_MAP_PROTOCOL; receivers verify them
 * against the seed's peer id). Have watchers are told of the cache's stored pieces
 * through one listener per cache event, not one per watcher.
 */
export function cachePieceSource(
  cache: Pick<BlobCache, 'stat' | 'hasPiece' | 'bitfield' | 'readRange' | 'events'>,
  pieceMaps?: { get(digest: Digest): SignedPieceMap | undefined | Promise<SignedPieceMap | undefined> },
): PieceSource {
  const onPiece = (e: { digest: Digest; index: number }): void => watchers.piece(e.digest, e.index)
  const onGone = (e: { digest: Digest }): void => watchers.gone(e.digest)
  // The cache's events are listened to only while someone watches.
  const watchers = createPieceWatchers((watched) => {
    if (watched) {
      cache.events.on('piece', onPiece)
      cache.events.on('evicted', onGone)
      cache.events.on('discarded', onGone)
    } else {
      cache.events.off('piece', onPiece)
      cache.events.off('evicted', onGone)
      cache.events.off('discarded', onGone)
    }
  })
  const source: PieceSource = {
    stat: (digest) => cache.stat(digest),
    hasPiece: (digest, index) => cache.hasPiece(digest, index),
    bitfield: (digest) => cache.bitfield(digest),
    readRange: (digest, start, end, options) => cache.readRange(digest, start, end, options),
    watch: (digest, watcher) => watchers.watch(digest, watcher),
  }
  if (pieceMaps) source.signedPieceMap = (digest) => pieceMaps.get(digest)
  return source
}
