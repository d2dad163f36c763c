/**
 * Manifests the proxy fetched but the local store would not keep yet: the storage
 * registry refuses a manifest whose blobs (or child manifests) it does not hold, and a
 * pull-through cache sees the manifest before the layers. These wait here, bounded by
 * total bytes (least recently used out first), until a retry stores them durably.
 */
import type { ManifestRecord } from '../service.js'

/** A pending manifest and the references (digest, tags) it should be stored under. */
export interface PendingManifest {
  repository: string
  record: ManifestRecord
  references: Set<string>
}

/** The in-memory side cache of manifests. */
export interface ManifestCache {
  get(repository: string, digest: string): ManifestRecord | undefined
  /** Adds (or refreshes) a manifest waiting to be stored under `reference`. */
  add(repository: string, record: ManifestRecord, reference: string): void
  /** Every manifest of `repository` still waiting. */
  pending(repository: string): PendingManifest[]
  delete(repository: string, digest: string): void
  readonly size: number
}

/** Creates a manifest cache holding at most `maxBytes` of manifest bodies. */
export function createManifestCache(init: { maxBytes?: number } = {}): ManifestCache {
  const maxBytes = init.maxBytes ?? 64 * 1024 * 1024
  const entries = new Map<string, PendingManifest>()
  let bytes = 0
  const keyOf = (repository: string, digest: string) => `${repository}@${digest}`

  const remove = (key: string) => {
    const e = entries.get(key)
    if (e === undefined) return
    entries.delete(key)
    bytes -= e.record.body.byteLength
  }

  return {
    get(repository, digest) {
      const key = keyOf(repository, digest)
      const e = entries.get(key)
      if (e === undefined) return undefined
      // Refresh its place in the LRU order.
      entries.delete(key)
      entries.set(key, e)
      return e.record
    },
    add(repository, record, reference) {
      const key = keyOf(repository, record.digest)
      const existing = entries.get(key)
      const references = existing?.references ?? new Set<string>()
      references.add(reference)
      remove(key)
      entries.set(key, { repository, record, references })
      bytes += record.body.byteLength
      while (bytes > maxBytes && entries.size > 1) {
        const oldest = entries.keys().next().value
        if (oldest === undefined || oldest === key) break
        remove(oldest)
      }
    },
    pending(repository) {
      return [...entries.values()].filter((e) => e.repository === repository)
    },
    delete(repository, digest) {
      remove(keyOf(repository, digest))
    },
    get size() {
      return entries.size
    },
  }
}
