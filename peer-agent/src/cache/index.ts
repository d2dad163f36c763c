/** The peer agent's content-addressed blob cache. */
export {
  type BlobCache,
  type BlobCacheComponents,
  type BlobCacheEvents,
  type BlobCacheInit,
  type BlobStat,
  createBlobCache,
  type HeldBlob,
  type PieceLayout,
  type ReadRangeOptions,
} from './blob-cache.js'
