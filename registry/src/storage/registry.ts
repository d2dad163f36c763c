/**
 * The storage-backed RegistryService: validates names, references and digests, then
 * delegates to the blob, upload and manifest stores over one storage driver.
 */
import type { Logger } from 'pino'
import {
  assertRepositoryName,
  assertTag,
  BlobUnknownError,
  type Digest,
  DigestMismatchError,
  digestOf,
  ManifestTooLargeError,
  NameUnknownError,
  parseDigest,
  parseManifest,
  parseReference,
} from '../../../protocol/src/index.js'
import type {
  AbortOptions,
  BlobInfo,
  Page,
  PageRequest,
  PutManifestResult,
  RegistryService,
} from '../service.js'
import { createBlobStore } from './blob-store.js'
import { createStorageContext } from './context.js'
import type { StorageDriver } from './driver/index.js'
import { collectGarbage, type GcOptions, type GcReport } from './gc.js'
import { type CachedTagRecord, createManifestStore } from './manifest-store.js'
import { listRepositories, repositoryExists } from './repositories.js'
import { createUploadStore } from './upload-store.js'

/** Collaborators of the storage registry. */
export interface StorageRegistryComponents {
  driver: StorageDriver
  logger?: Logger
}

/** Options of the storage registry. */
export interface StorageRegistryInit {
  /**
   * Largest manifest body accepted (ManifestTooLargeError beyond).
   * @default 4_194_304 (4 MiB, as Distribution)
   */
  maxManifestBytes?: number
  /**
   * Idle time after which an upload session is unknown and removed by GC.
   * @default 86_400_000 (24 hours)
   */
  uploadTtlMs?: number
  /** Refuse new upload sessions when the driver reports less free space (bytes). */
  minFreeBytes?: number
  /** Called after new blob content is committed (not for content that already existed). */
  onBlobCommitted?: (info: BlobInfo) => void
  /** Clock, for tests. @default Date.now */
  now?: () => number
}

/** Options of StorageRegistry.cacheManifest. */
export interface CacheManifestOptions extends AbortOptions {
  /**
   * For a tag reference: when the upstream confirmed that the tag points to this
   * manifest (read back by cachedTag).
   * @default the registry's clock now
   */
  checkedAt?: number
}

/**
 * A RegistryService over a storage driver, with a lifecycle, GC, and the two methods a
 * pull-through cache needs to keep what it fetched (not part of RegistryService, so
 * they are never reachable through the HTTP API).
 */
export type StorageRegistry = RegistryService & {
  start(): Promise<void>
  stop(): Promise<void>
  /** Runs one mark-and-sweep collection; concurrent calls share the running one. */
  collectGarbage(options?: GcOptions): Promise<GcReport>
  /**
   * Stores a manifest fetched from an upstream registry under a tag or its digest,
   * like putManifest but without requiring its blobs and child manifests to be held
   * here: a pull-through cache sees a manifest before its content, and of a multi-arch
   * index usually only one platform is ever pulled. The body is still validated, so
   * it throws ManifestInvalidError, ManifestTooLargeError and DigestMismatchError as
   * putManifest does (never ManifestBlobUnknownError). For a tag it also records
   * `checkedAt`, read back by cachedTag.
   *
   * GC treats such a manifest like any other: a tagged one is a root and keeps alive
   * whatever of its body, blobs and child manifests is held; what is absent is simply
   * not there to keep, and never makes the mark fail.
   */
  cacheManifest(
    repository: string,
    reference: string,
    mediaType: string | undefined,
    body: Uint8Array,
    options?: CacheManifestOptions,
  ): Promise<PutManifestResult>
  /**
   * The digest `tag` points to and when cacheManifest last recorded an upstream
   * confirmation of it (`checkedAt` undefined when never, or for an earlier digest);
   * undefined when the tag does not exist. Throws NameInvalidError, TagInvalidError.
   */
  cachedTag(repository: string, tag: string, options?: AbortOptions): Promise<CachedTagRecord | undefined>
}

export type { CachedTagRecord }

/** The default of StorageRegistryInit.maxManifestBytes (4 MiB). */
export const DEFAULT_MAX_MANIFEST_BYTES = 4 * 1024 * 1024
/** The default of StorageRegistryInit.uploadTtlMs (24 hours). */
export const DEFAULT_UPLOAD_TTL_MS = 24 * 60 * 60 * 1000

function validDigest(digest: string): Digest {
  return parseDigest(digest).digest
}

function paginate(all: string[], page: PageRequest): Page {
  let items = all
  if (page.last !== undefined && page.last !== '') {
    const last = page.last
    items = items.filter((x) => x > last)
  }
  const n = page.n
  if (n === undefined || !Number.isSafeInteger(n) || n < 0 || items.length <= n) return { items }
  const pageItems = items.slice(0, n)
  if (n === 0) return { items: [] }
  return { items: pageItems, next: { n, last: pageItems[pageItems.length - 1]! } }
}

/**
 * Creates the storage-backed registry. Every method validates its inputs
 * (NameInvalidError, TagInvalidError, DigestInvalidError) before touching storage.
 */
export function createStorageRegistry(
  components: StorageRegistryComponents,
  init: StorageRegistryInit = {},
): StorageRegistry {
  const ctx = createStorageContext(components.driver, components.logger, init.now)
  const maxManifestBytes = init.maxManifestBytes ?? DEFAULT_MAX_MANIFEST_BYTES
  const uploadTtlMs = init.uploadTtlMs ?? DEFAULT_UPLOAD_TTL_MS
  const blobs = createBlobStore(ctx)
  const manifests = createManifestStore(ctx, blobs)
  const uploads = createUploadStore(ctx, blobs, {
    uploadTtlMs,
    minFreeBytes: init.minFreeBytes,
    onCommitted: init.onBlobCommitted,
  })
  let gcRunning: Promise<GcReport> | undefined

  /** Checks a manifest body against the size limit, its media type and the reference. */
  function validateManifest(reference: string, mediaType: string | undefined, body: Uint8Array) {
    const ref = parseReference(reference)
    if (body.byteLength > maxManifestBytes) {
      throw new ManifestTooLargeError(undefined, { size: body.byteLength, limit: maxManifestBytes })
    }
    const parsed = parseManifest(body, mediaType)
    const algorithm = ref.kind === 'digest' ? parseDigest(ref.digest).algorithm : 'sha256'
    const digest = digestOf(body, algorithm)
    if (ref.kind === 'digest' && ref.digest !== digest) {
      throw new DigestMismatchError(undefined, { expected: ref.digest, actual: digest })
    }
    return { ref, parsed, digest }
  }

  const registry: StorageRegistry = {
    async start() {},

    async stop() {
      await gcRunning?.catch(() => undefined)
    },

    async collectGarbage(options) {
      gcRunning ??= collectGarbage(ctx, { blobs, manifests, uploads }, { uploadTtlMs }, options).finally(
        () => {
          gcRunning = undefined
        },
      )
      return gcRunning
    },

    // ---- blobs ----
    async statBlob(repository, digest, options) {
      assertRepositoryName(repository)
      const d = validDigest(digest)
      const info = await blobs.linked(repository, d, options)
      if (!info) throw new BlobUnknownError(undefined, { digest: d })
      return info
    },

    async getBlob(repository, digest, range, options) {
      assertRepositoryName(repository)
      return blobs.open(repository, validDigest(digest), range, options)
    },

    async deleteBlob(repository, digest, options) {
      assertRepositoryName(repository)
      await blobs.unlink(repository, validDigest(digest), options)
    },

    async mountBlob(repository, digest, from, options) {
      assertRepositoryName(repository)
      const d = validDigest(digest)
      if (from !== undefined) assertRepositoryName(from)
      return ctx.lock.shared(async () => {
        const info =
          from !== undefined ? await blobs.linked(from, d, options) : await blobs.content(d, options)
        if (!info) return undefined
        await blobs.link(repository, d, options)
        return info
      })
    },

    // ---- uploads ----
    async startUpload(repository, options) {
      assertRepositoryName(repository)
      return uploads.start(repository, options)
    },

    async getUpload(repository, id, options) {
      assertRepositoryName(repository)
      return uploads.get(repository, id, options)
    },

    async appendUpload(repository, id, body, chunk, options) {
      assertRepositoryName(repository)
      return uploads.append(repository, id, body, chunk, options)
    },

    async completeUpload(repository, id, digest, body, chunk, options) {
      assertRepositoryName(repository)
      return uploads.complete(repository, id, validDigest(digest), body, chunk, options)
    },

    async cancelUpload(repository, id, options) {
      assertRepositoryName(repository)
      return uploads.cancel(repository, id, options)
    },

    // ---- manifests ----
    async getManifest(repository, reference, options) {
      assertRepositoryName(repository)
      return manifests.get(repository, parseReference(reference), options)
    },

    async statManifest(repository, reference, options) {
      assertRepositoryName(repository)
      const record = await manifests.resolve(repository, parseReference(reference), options)
      return { digest: record.digest, mediaType: record.mediaType, size: record.size }
    },

    async putManifest(repository, reference, mediaType, body, options) {
      assertRepositoryName(repository)
      const { ref, parsed, digest } = validateManifest(reference, mediaType, body)
      return manifests.put(repository, ref, digest, parsed, body, { signal: options?.signal })
    },

    async cacheManifest(repository, reference, mediaType, body, options) {
      assertRepositoryName(repository)
      const { ref, parsed, digest } = validateManifest(reference, mediaType, body)
      return manifests.put(repository, ref, digest, parsed, body, {
        signal: options?.signal,
        verifyReferences: false,
        checkedAt: options?.checkedAt ?? ctx.now(),
      })
    },

    async cachedTag(repository, tag, options) {
      assertRepositoryName(repository)
      assertTag(tag)
      return manifests.cachedTag(repository, tag, options)
    },

    async deleteManifest(repository, reference, options) {
      assertRepositoryName(repository)
      await manifests.delete(repository, parseReference(reference), options)
    },

    // ---- listing ----
    async listTags(repository, page, options) {
      assertRepositoryName(repository)
      if (!(await repositoryExists(ctx, repository, options))) {
        throw new NameUnknownError(undefined, { name: repository })
      }
      return paginate(await manifests.tags(repository, options), page ?? {})
    },

    async catalog(page, options) {
      return paginate(await listRepositories(ctx, options), page ?? {})
    },

    async referrers(repository, digest, artifactType, options) {
      assertRepositoryName(repository)
      const d = validDigest(digest)
      let descriptors = await manifests.referrers(repository, d, options)
      if (artifactType !== undefined && artifactType !== '') {
        descriptors = descriptors.filter((x) => x.artifactType === artifactType)
        return { descriptors, filtersApplied: ['artifactType'] }
      }
      return { descriptors, filtersApplied: [] }
    },
  }
  return registry
}
