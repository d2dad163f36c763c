/**
 * Versioned libp2p protocol ids spoken between shoal peers. A change to a wire format
 * gets a new version; peers negotiate through multistream-select.
 */

/** Piece transfer: a PieceRequest answered by PieceHeader + bytes per piece (messages/). */
export const PIECES_PROTOCOL = '/shoal/pieces/1.0.0'
/** What a peer holds of a blob: a HaveRequest answered by a HaveReply with a bitfield. */
export const HAVE_PROTOCOL = '/shoal/have/1.0.0'
/**
 * What a peer holds of a blob, kept up to date: a HaveRequest answered by a HaveReply,
 * then a HaveUpdate whenever the peer gains pieces, until it holds them all (it then
 * ends the stream) or the watcher closes it. Pushed instead of polled: a swarm asking
 * every peer every second what it holds spent a tenth of its agents' CPU on it.
 */
export const HAVE_WATCH_PROTOCOL = '/shoal/have-watch/1.0.0'
/** The signed piece map of a blob: a PieceMapRequest answered by a PieceMapReply. */
export const PIECE_MAP_PROTOCOL = '/shoal/piece-map/1.0.0'
/**
 * A session for the piece lane (p2p/lane.ts, ADR 0008, ADR 0009, ADR 0011): a u8 version (1)
 * answered by status, lane port, session id and key, session lifetime.
 */
export const LANE_PROTOCOL = '/shoal/lane/3.0.0'
/** shoal's own Kademlia DHT, kept apart from the public IPFS DHT. */
export const KAD_PROTOCOL = '/shoal/kad/1.0.0'

/** Every shoal stream protocol (not the DHT). */
export const SHOAL_PROTOCOLS = [
  PIECES_PROTOCOL,
  HAVE_PROTOCOL,
  HAVE_WATCH_PROTOCOL,
  PIECE_MAP_PROTOCOL,
  LANE_PROTOCOL,
] as const
