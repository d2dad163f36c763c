/** Piece choice and the download scheduler of the peer agent. */
export {
  createDownloadManager,
  type DownloadManager,
  type DownloadManagerComponents,
  type DownloadOptions,
} from './download-manager.js'
export { SwarmUnavailableError } from './errors.js'
export {
  createRng,
  isEndgame,
  type PickedPiece,
  type PickPieceInput,
  type PieceSet,
  pickPiece,
  pieceSetOf,
} from './piece-picker.js'
export {
  type DownloadComponents,
  type DownloadInit,
  type DownloadResult,
  downloadBlob,
  type SwarmPeer,
  type WasteReason,
} from './scheduler.js'
