/**
 * The seed's Prometheus metrics. Bytes sent to peers are added to the same
 * shoal_registry_blob_bytes_sent_total the HTTP layer counts for clients (found on the
 * shared prom-client Registry, or registered here first with the same definition, which
 * the HTTP layer then finds and reuses).
 */
import { Counter, type Registry } from 'prom-client'

/** What the seed counts. */
export interface SeedMetrics {
  /** Blob bytes sent, to clients (HTTP) and peers (libp2p) alike. */
  blobBytesSent: Counter
  /** Pieces sent to peers. */
  piecesSent: Counter
  /** Piece requests refused by the first-copy rule. */
  piecesDeferred: Counter
  /** Pieces sent again to another peer, by reason (expired, gone). */
  piecesRepeated: Counter<'reason'>
  /** Piece maps computed and stored. */
  pieceMapsComputed: Counter
  /** Tracker announces, by result (ok or error). */
  announces: Counter<'result'>
}

function counter<T extends string>(
  registry: Registry,
  config: { name: string; help: string; labelNames: readonly T[] },
): Counter<T> {
  const existing = registry.getSingleMetric(config.name)
  if (existing instanceof Counter) return existing as Counter<T>
  return new Counter({ ...config, registers: [registry] })
}

/** Creates (or finds) the seed's metrics on `registry`. */
export function createSeedMetrics(registry: Registry): SeedMetrics {
  return {
    blobBytesSent: counter(registry, {
      // Same name, help and labels as registry/src/http/metrics.ts: one counter, two writers.
      name: 'shoal_registry_blob_bytes_sent_total',
      help: 'Blob bytes sent to clients.',
      labelNames: [] as const,
    }),
    piecesSent: counter(registry, {
      name: 'shoal_registry_seed_pieces_sent_total',
      help: 'Pieces the seed sent to peers over libp2p.',
      labelNames: [] as const,
    }),
    piecesDeferred: counter(registry, {
      name: 'shoal_registry_seed_pieces_deferred_total',
      help: 'Piece requests the seed answered not-held under the first-copy rule.',
      labelNames: [] as const,
    }),
    piecesRepeated: counter(registry, {
      name: 'shoal_registry_seed_pieces_repeated_total',
      help: 'Pieces the seed sent again to another peer: expired (the first-copy hold ran out) or gone (the last recipient left).',
      labelNames: ['reason'] as const,
    }),
    pieceMapsComputed: counter(registry, {
      name: 'shoal_registry_seed_piece_maps_computed_total',
      help: 'Piece maps the seed computed and stored (at commit or on first request).',
      labelNames: [] as const,
    }),
    announces: counter(registry, {
      name: 'shoal_registry_seed_announces_total',
      help: 'Announces the seed sent to the tracker, by result (ok or error).',
      labelNames: ['result'] as const,
    }),
  }
}
