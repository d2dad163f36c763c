/**
 * shoal's libp2p layer, shared by the peer agent and the seed registry: the node
 * factory, both ends of the piece protocols, and the PieceSource the server reads from.
 */
export { PeerRefusedError, PieceHashMismatchError, PieceUnavailableError } from './errors.js'
export {
  createP2PNode,
  DEFAULT_ALLOW_NETWORKS,
  generateSwarmKey,
  type P2PNode,
  type P2PNodeComponents,
  type P2PNodeInit,
  type P2PServices,
} from './node.js'
export {
  createPieceClient,
  type FetchPieceOptions,
  type HaveWatchEvent,
  type PeerTarget,
  type PieceClient,
  type PieceClientComponents,
  type PieceClientInit,
  type PieceFetchOptions,
  type PieceResult,
  type PieceWant,
} from './piece-client.js'
export {
  createLaneDialer,
  createLaneServer,
  type LaneDialer,
  type LaneServer,
  LaneStream,
  laneHostOf,
} from './lane.js'
export { createMemoryPieceSource, type MemoryPieceSource } from './memory-piece-source.js'
export {
  createPieceBufferPool,
  type PieceBufferPool,
  type PieceBufferPoolInit,
} from './piece-buffers.js'
export {
  createPieceHasher,
  inlinePieceHash,
  MIN_WORKER_PIECE_BYTES,
  type PieceHash,
  type PieceHasher,
  type PieceHasherInit,
} from './piece-hasher.js'
export {
  createPieceServer,
  MAX_CONCURRENT_UPLOADS,
  MAX_UPLOADS_PER_PIECE,
  type PieceSentEvent,
  type PieceServer,
  type PieceServerComponents,
  type PieceServerInit,
} from './piece-server.js'
export {
  createPieceWatchers,
  type MaybePromise,
  type PieceSource,
  type PieceSourceStat,
  type PieceWatcher,
  type PieceWatchers,
} from './piece-source.js'
export { type PieceStream, sendWithBackpressure, waitDrain } from './stream-io.js'
export { createTokenBucket, type TokenBucket, type TokenBucketInit } from './token-bucket.js'
export { createUploadCap, type UploadCap, type UploadCapInit } from './upload-cap.js'
export {
  createUploadTurns,
  UPLOAD_TURN_HOLD_MS,
  type UploadTurns,
  type UploadTurnsInit,
} from './upload-turns.js'
