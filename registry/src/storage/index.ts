/**
 * The registry's storage layer: a RegistryService over a dumb storage driver
 * (filesystem or memory), with uploads that survive restarts, atomic blob commits,
 * referrers, and mark-and-sweep GC.
 */
export { createFilesystemDriver, type FilesystemDriverInit } from './driver/filesystem.js'
export {
  type DriverOptions,
  type FileInfo,
  type FileWriter,
  parseDriverPath,
  type ReadRange,
  type StorageDriver,
  StoragePathInvalidError,
  StoragePathNotFoundError,
} from './driver/index.js'
export { createMemoryDriver } from './driver/memory.js'
export { DEFAULT_GC_GRACE_MS, type GcOptions, type GcReport } from './gc.js'
export {
  type CacheManifestOptions,
  type CachedTagRecord,
  createStorageRegistry,
  DEFAULT_MAX_MANIFEST_BYTES,
  DEFAULT_UPLOAD_TTL_MS,
  type StorageRegistry,
  type StorageRegistryComponents,
  type StorageRegistryInit,
} from './registry.js'
