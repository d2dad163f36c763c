/**
 * The swarm's Prometheus metrics. Creating them twice on one prom-client Registry (two
 * agents sharing a registry) reuses the metrics already there.
 */
import { Counter, Gauge, type Registry } from 'prom-client'

/** The metrics the swarm updates. */
export interface SwarmMetrics {
  /** Pieces fetched and stored, by source (peer, seed). */
  pieces: Counter<'source'>
  /** Piece bytes fetched and stored, by source (peer, seed). */
  pieceBytes: Counter<'source'>
  /** Pieces already held when a download started (resumed, not fetched again). */
  resumedPieces: Counter
  /** Pieces that failed their sha256 (each bans its sender). */
  badPieces: Counter
  /** Downloads finished, by result (complete, failed). */
  downloads: Counter<'result'>
  /** Opens the swarm refused as unavailable (the mirror then uses the upstream). */
  unavailable: Counter
  /** Blob opens below the swarm's minimum size, sent to the seed or upstream. */
  small: Counter
  /** findPeers calls answered by the DHT because the tracker was unreachable. */
  dhtFallbacks: Counter
  /** Piece bytes served to other peers. */
  uploadedBytes: Counter
  /** Piece requests whose upload was spent for nothing, by reason (WasteReason). */
  wastedRequests: Counter<'reason'>
  /** Piece bytes received for those requests before they were given up, by reason. */
  wastedBytes: Counter<'reason'>
  haveWatches: Counter<'outcome'>
  /** libp2p connections opened, by direction (inbound, outbound). */
  connectionsOpened: Counter<'direction'>
  /** libp2p connections closed, by direction; against opened, this shows churn. */
  connectionsClosed: Counter<'direction'>
  /** Piece and have streams opened to peers, by transport (lane, libp2p). */
  streamsOpened: Counter<'transport'>
  /** Piece requests being served now. */
  activeUploads: Gauge
}

/** Creates (or finds) the swarm metrics on `registry`. */
export function createSwarmMetrics(registry: Registry, activeUploads: () => number): SwarmMetrics {
  const counter = <T extends string>(name: string, help: string, labelNames: readonly T[] = []) => {
    const existing = registry.getSingleMetric(name)
    if (existing instanceof Counter) return existing as Counter<T>
    return new Counter<T>({ name, help, labelNames, registers: [registry] })
  }
  const existingGauge = registry.getSingleMetric('shoal_agent_swarm_active_uploads')
  return {
    pieces: counter('shoal_agent_swarm_pieces_total', 'Pieces fetched and stored, by source.', ['source']),
    pieceBytes: counter('shoal_agent_swarm_piece_bytes_total', 'Piece bytes fetched and stored, by source.', [
      'source',
    ]),
    resumedPieces: counter(
      'shoal_agent_swarm_resumed_pieces_total',
      'Pieces already held when a download started, not fetched again.',
    ),
    badPieces: counter('shoal_agent_swarm_bad_pieces_total', 'Pieces that failed their sha256 check.'),
    downloads: counter('shoal_agent_swarm_downloads_total', 'Swarm downloads finished, by result.', [
      'result',
    ]),
    unavailable: counter(
      'shoal_agent_swarm_unavailable_total',
      'Blob opens the swarm refused as unavailable (served from the upstream instead).',
    ),
    small: counter(
      'shoal_agent_swarm_small_blobs_total',
      'Blob opens below swarmMinBlobBytes, fetched from the seed or upstream directly.',
    ),
    dhtFallbacks: counter(
      'shoal_agent_swarm_dht_fallbacks_total',
      'Peer lookups answered by the DHT because the tracker was unreachable.',
    ),
    uploadedBytes: counter('shoal_agent_swarm_uploaded_bytes_total', 'Piece bytes served to other peers.'),
    wastedRequests: counter(
      'shoal_agent_swarm_wasted_requests_total',
      'Piece requests whose upload was spent for nothing, by reason (duplicate, superseded, slow, timeout).',
      ['reason'],
    ),
    wastedBytes: counter(
      'shoal_agent_swarm_wasted_bytes_total',
      'Piece bytes received for requests given up or whose piece came from another peer first, by reason (duplicate: the whole piece; superseded, slow, timeout: what had arrived).',
      ['reason'],
    ),
    haveWatches: counter(
      'shoal_agent_swarm_have_watches_total',
      'Have watches of other agents ended, by outcome (followed: to the peer holding every piece or the download ending; fell-back: failed or ended early, the peer was asked instead).',
      ['outcome'],
    ),
    connectionsOpened: counter(
      'shoal_agent_p2p_connections_opened_total',
      'libp2p connections opened, by direction.',
      ['direction'],
    ),
    connectionsClosed: counter(
      'shoal_agent_p2p_connections_closed_total',
      'libp2p connections closed, by direction.',
      ['direction'],
    ),
    streamsOpened: counter(
      'shoal_agent_p2p_streams_opened_total',
      'Piece and have streams opened to other peers, by transport (lane: the piece lane, libp2p: libp2p streams).',
      ['transport'],
    ),
    activeUploads:
      existingGauge instanceof Gauge
        ? existingGauge
        : new Gauge({
            name: 'shoal_agent_swarm_active_uploads',
            help: 'Piece requests being served to other peers now.',
            registers: [registry],
            collect() {
              this.set(activeUploads())
            },
          }),
  }
}
