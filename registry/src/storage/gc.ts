/**
 * Mark-and-sweep garbage collection that runs while the registry serves.
 *
 * Mark (no lock): in every repository, the roots are tagged manifests and, when
 * untagged manifests are collected, manifests younger than the grace period. A live
 * manifest keeps alive its body, config, layers and the child manifests of an index
 * (recursively); a manifest whose subject is live is live too (signatures, SBOMs).
 * Manifests stored by a pull-through cache (cacheManifest) may reference blobs and
 * child manifests that were never fetched: what is absent is marked by digest only,
 * which keeps nothing and breaks nothing, and the mark carries on.
 *
 * Sweep (exclusive lock, so no push is between its checks and its links): whatever
 * was linked or stored since the GC began is recorded in the protect set and marked
 * first; then dead revisions are removed, then blob content that is unmarked, older
 * than the grace period and not linked into any repository within it, together with
 * the links to it. Upload sessions idle longer than their TTL go last.
 */
import { type Digest, parseManifest } from '../../../protocol/src/index.js'
import type { BlobStore } from './blob-store.js'
import type { GcProtectSet, StorageContext } from './context.js'
import type { ManifestStore, RevisionRecord } from './manifest-store.js'
import { BLOBS_ROOT, digestFromParts, layerLinkPath, layerLinksDir, revisionLinkPath } from './paths.js'
import { listRepositories } from './repositories.js'
import type { UploadStore } from './upload-store.js'

/** Options of one GC run. */
export interface GcOptions {
  /**
   * Content and untagged manifests younger than this survive, so pushes in flight keep
   * what they uploaded before their manifest arrives.
   * @default 3_600_000 (1 hour)
   */
  graceMs?: number
  /** Report what would be removed without removing anything. @default false */
  dryRun?: boolean
  /** Remove manifests that no tag, index or live subject references. @default true */
  deleteUntagged?: boolean
  signal?: AbortSignal
}

/** What a GC run found and did. */
export interface GcReport {
  dryRun: boolean
  repositories: number
  manifestsMarked: number
  manifestsDeleted: number
  blobsMarked: number
  blobsDeleted: number
  bytesFreed: number
  linksDeleted: number
  uploadsDeleted: number
  durationMs: number
}

/** The default grace period. */
export const DEFAULT_GC_GRACE_MS = 3_600_000

interface RepoSnapshot {
  revisions: Map<Digest, RevisionRecord & { modifiedAt: number }>
  tags: Digest[]
  /** Blob links: digest → link mtime. */
  links: Map<Digest, number>
}

/** Runs one collection; callers serialise runs. */
export async function collectGarbage(
  ctx: StorageContext,
  stores: { blobs: BlobStore; manifests: ManifestStore; uploads: UploadStore },
  init: { uploadTtlMs: number },
  options: GcOptions = {},
): Promise<GcReport> {
  const { driver } = ctx
  const { blobs, manifests, uploads } = stores
  const started = ctx.now()
  const graceMs = options.graceMs ?? DEFAULT_GC_GRACE_MS
  const dryRun = options.dryRun ?? false
  const deleteUntagged = options.deleteUntagged ?? true
  const signal = options.signal
  const opts = { signal }
  const cutoff = started - graceMs
  const report: GcReport = {
    dryRun,
    repositories: 0,
    manifestsMarked: 0,
    manifestsDeleted: 0,
    blobsMarked: 0,
    blobsDeleted: 0,
    bytesFreed: 0,
    linksDeleted: 0,
    uploadsDeleted: 0,
    durationMs: 0,
  }

  const protect: GcProtectSet = { blobs: new Set(), manifests: new Map() }
  ctx.gcProtect = protect
  try {
    // ---- mark ----
    const snapshots = new Map<string, RepoSnapshot>()
    for (const repository of await listRepositories(ctx, opts)) {
      signal?.throwIfAborted()
      const snap: RepoSnapshot = { revisions: new Map(), tags: [], links: new Map() }
      for (const digest of await manifests.revisions(repository, opts)) {
        const record = await manifests.revision(repository, digest, opts)
        const st = await driver.stat(revisionLinkPath(repository, digest), opts)
        if (record) snap.revisions.set(digest, { ...record, modifiedAt: st?.modifiedAt ?? started })
      }
      for (const tag of await manifests.tags(repository, opts)) {
        const d = await manifests.tag(repository, tag, opts)
        if (d) snap.tags.push(d)
      }
      for (const alg of await driver.list(layerLinksDir(repository), opts)) {
        for (const hex of await driver.list(layerLinksDir(repository, alg), opts)) {
          const d = digestFromParts(alg, hex)
          if (!d) continue
          const st = await driver.stat(layerLinkPath(repository, d), opts)
          if (st) snap.links.set(d, st.modifiedAt)
        }
      }
      snapshots.set(repository, snap)
    }
    report.repositories = snapshots.size

    const live = new Map<string, Set<Digest>>()
    const marked = new Set<Digest>()

    function liveSet(repository: string): Set<Digest> {
      let set = live.get(repository)
      if (!set) {
        set = new Set()
        live.set(repository, set)
      }
      return set
    }

    async function markManifest(repository: string, digest: Digest): Promise<void> {
      const set = liveSet(repository)
      if (set.has(digest)) return
      set.add(digest)
      marked.add(digest)
      // Absent for a child of a cached index that was never fetched: nothing to follow.
      const body = await blobs.readSmall(digest, opts)
      if (!body) return
      let parsed: ReturnType<typeof parseManifest>
      try {
        parsed = parseManifest(body)
      } catch (err) {
        ctx.logger?.warn({ err, repository, digest }, 'gc: stored manifest does not parse')
        return
      }
      if (parsed.config) marked.add(parsed.config.digest)
      for (const l of parsed.layers) marked.add(l.digest)
      for (const m of parsed.manifests) await markManifest(repository, m.digest)
    }

    async function markReferrers(repository: string, snap: RepoSnapshot): Promise<void> {
      const set = liveSet(repository)
      let changed = true
      while (changed) {
        changed = false
        for (const [digest, record] of snap.revisions) {
          if (!set.has(digest) && record.subject && set.has(record.subject)) {
            await markManifest(repository, digest)
            changed = true
          }
        }
      }
    }

    for (const [repository, snap] of snapshots) {
      signal?.throwIfAborted()
      for (const d of snap.tags) await markManifest(repository, d)
      for (const [digest, record] of snap.revisions) {
        if (!deleteUntagged || record.modifiedAt > cutoff) await markManifest(repository, digest)
      }
      await markReferrers(repository, snap)
    }

    // Blob content on storage, walked before the sweep: content that arrives later is
    // not in this list and so cannot be deleted by this run.
    const content: Array<{ digest: Digest; size: number; modifiedAt: number }> = []
    for (const alg of await driver.list(BLOBS_ROOT, opts)) {
      for (const prefix of await driver.list(`${BLOBS_ROOT}/${alg}`, opts)) {
        for (const hex of await driver.list(`${BLOBS_ROOT}/${alg}/${prefix}`, opts)) {
          signal?.throwIfAborted()
          const d = digestFromParts(alg, hex)
          if (!d) continue
          const st = await driver.stat(`${BLOBS_ROOT}/${alg}/${prefix}/${hex}/data`, opts)
          if (st && !st.isDirectory) content.push({ digest: d, size: st.size, modifiedAt: st.modifiedAt })
        }
      }
    }

    // ---- sweep ----
    await ctx.lock.exclusive(async () => {
      signal?.throwIfAborted()
      for (const [repository, digests] of protect.manifests) {
        for (const d of digests) {
          if (await manifests.revision(repository, d, opts)) await markManifest(repository, d)
        }
        const snap = snapshots.get(repository)
        if (snap) await markReferrers(repository, snap)
      }
      for (const d of protect.blobs) marked.add(d)

      for (const [repository, snap] of snapshots) {
        const set = live.get(repository) ?? new Set<Digest>()
        for (const [digest, record] of snap.revisions) {
          if (set.has(digest)) continue
          report.manifestsDeleted++
          if (!dryRun) await manifests.deleteRevision(repository, record, opts)
        }
      }

      const recentlyLinked = new Set<Digest>()
      const linkedIn = new Map<Digest, string[]>()
      for (const [repository, snap] of snapshots) {
        for (const [d, modifiedAt] of snap.links) {
          if (modifiedAt > cutoff) recentlyLinked.add(d)
          const list = linkedIn.get(d) ?? []
          list.push(repository)
          linkedIn.set(d, list)
        }
      }
      const present = new Set<Digest>()
      for (const blob of content) {
        present.add(blob.digest)
        if (marked.has(blob.digest) || recentlyLinked.has(blob.digest) || blob.modifiedAt > cutoff) continue
        report.blobsDeleted++
        report.bytesFreed += blob.size
        if (!dryRun) await blobs.deleteContent(blob.digest, opts)
        for (const repository of linkedIn.get(blob.digest) ?? []) {
          report.linksDeleted++
          if (!dryRun) await blobs.unlink(repository, blob.digest, opts).catch(() => undefined)
        }
      }
      // Links whose content is gone (deleted earlier, or lost) only mislead statBlob.
      for (const [d, repositories] of linkedIn) {
        if (present.has(d) || marked.has(d) || recentlyLinked.has(d)) continue
        for (const repository of repositories) {
          report.linksDeleted++
          if (!dryRun) await blobs.unlink(repository, d, opts).catch(() => undefined)
        }
      }
    })

    for (const set of live.values()) report.manifestsMarked += set.size
    report.blobsMarked = marked.size

    for (const id of await uploads.ids(opts)) {
      signal?.throwIfAborted()
      if (await uploads.expire(id, init.uploadTtlMs, dryRun, opts)) report.uploadsDeleted++
    }
  } finally {
    if (ctx.gcProtect === protect) ctx.gcProtect = undefined
  }
  report.durationMs = ctx.now() - started
  ctx.logger?.info({ gc: report }, 'garbage collection finished')
  return report
}
