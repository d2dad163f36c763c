/** The node's registry mirror: the Koa app, its content sources and their layering. */
export { createMirrorApp, MIRROR_ROUTES, type MirrorAppComponents, type MirrorAppInit } from './app.js'
export { type CachingBlobSourceComponents, createCachingBlobSource } from './caching-blob-source.js'
export {
  type CachingManifestSourceComponents,
  createCachingManifestSource,
} from './caching-manifest-source.js'
export { createManifestCache, type ManifestCache, type ManifestCacheInit } from './manifest-cache.js'
export { createMirrorMetrics, type MirrorMetrics } from './metrics.js'
export { DOCKER_HUB, repositoryOf, upstreamHostOf } from './names.js'
export type {
  BlobOrigin,
  BlobRef,
  BlobSource,
  ByteRange,
  Manifest,
  ManifestInfo,
  ManifestRef,
  ManifestSource,
  OpenedBlob,
  SourceOptions,
} from './sources.js'
