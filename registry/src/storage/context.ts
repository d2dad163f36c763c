/**
 * What the storage stores share: the driver, the logger, the lock that orders pushes
 * against the GC sweep, and the GC's record of what was linked while it was marking.
 */
import type { Logger } from 'pino'
import type { Digest } from '../../../protocol/src/index.js'
import type { StorageDriver } from './driver/index.js'
import { ReadWriteLock } from './lock.js'

/** Shared state of one storage-backed registry instance. */
export interface StorageContext {
  driver: StorageDriver
  logger?: Logger
  /**
   * Pushes hold it shared while they check and link content; the GC sweep holds it
   * exclusively, so a blob is never deleted between a push's check and its link.
   */
  lock: ReadWriteLock
  /** Set while a GC runs: everything linked or stored meanwhile survives its sweep. */
  gcProtect?: GcProtectSet
  /** Current time in ms (replaceable in tests). */
  now(): number
}

/** What a running GC must not sweep: blob digests and (repository, manifest) pairs. */
export interface GcProtectSet {
  blobs: Set<Digest>
  manifests: Map<string, Set<Digest>>
}

/** Creates a context around a driver. */
export function createStorageContext(
  driver: StorageDriver,
  logger?: Logger,
  now?: () => number,
): StorageContext {
  return { driver, logger, lock: new ReadWriteLock(), now: now ?? Date.now }
}

/** Records that a blob was linked or stored while a GC may be running. */
export function protectBlob(ctx: StorageContext, digest: Digest): void {
  ctx.gcProtect?.blobs.add(digest)
}

/** Records that a manifest was stored in `repository` while a GC may be running. */
export function protectManifest(ctx: StorageContext, repository: string, digest: Digest): void {
  if (!ctx.gcProtect) return
  let set = ctx.gcProtect.manifests.get(repository)
  if (!set) {
    set = new Set()
    ctx.gcProtect.manifests.set(repository, set)
  }
  set.add(digest)
  ctx.gcProtect.blobs.add(digest)
}
