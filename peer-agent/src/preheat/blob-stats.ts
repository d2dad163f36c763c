/**
 * Per-blob byte accounting for the live view: wraps the blob sources the mirror layers
 * (the swarm, the upstream) and counts, per digest, the bytes each hands on by where
 * they came from (peer, seed, upstream; bytes the swarm already held count as cache).
 * The heartbeat reports the most recent blobs to the tracker.
 */
import { pipeline, Transform } from 'node:stream'
import type { Digest } from '../../../protocol/src/index.js'
import type { BlobOrigin, BlobSource } from '../mirror/sources.js'

/** Bytes of one blob by source. */
export interface BlobBytes {
  digest: Digest
  peer: number
  seed: number
  upstream: number
}

/** The per-blob counters. */
export interface BlobStats {
  /** Wraps a source so the bytes it hands on are counted. */
  wrap<S extends BlobSource>(source: S): BlobSource
  /** The most recently active blobs first, at most `limit`. */
  snapshot(limit?: number): BlobBytes[]
}

/** Creates the counters, keeping at most `maxBlobs` blobs (least recently active dropped). */
export function createBlobStats(init: { maxBlobs?: number } = {}): BlobStats {
  const maxBlobs = init.maxBlobs ?? 64
  const blobs = new Map<Digest, BlobBytes>()

  function add(digest: Digest, source: BlobOrigin, n: number): void {
    if (source !== 'peer' && source !== 'seed' && source !== 'upstream') return
    let entry = blobs.get(digest)
    if (entry === undefined) entry = { digest, peer: 0, seed: 0, upstream: 0 }
    else blobs.delete(digest)
    entry[source] += n
    blobs.set(digest, entry)
    if (blobs.size > maxBlobs) blobs.delete(blobs.keys().next().value as Digest)
  }

  return {
    wrap(source) {
      return {
        stat: (ref, options) => source.stat(ref, options),
        async open(ref, range, options) {
          const opened = await source.open(ref, range, options)
          let position = opened.range.start
          const counter = new Transform({
            transform(chunk: Buffer, _enc, done) {
              add(ref.digest, opened.sourceAt?.(position) ?? opened.source, chunk.byteLength)
              position += chunk.byteLength
              done(null, chunk)
            },
          })
          const stream = pipeline(opened.stream, counter, () => {})
          return { ...opened, stream }
        },
      }
    },
    snapshot(limit = 32) {
      return [...blobs.values()]
        .reverse()
        .slice(0, limit)
        .map((b) => ({ ...b }))
    },
  }
}
