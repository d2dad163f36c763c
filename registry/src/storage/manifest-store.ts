/**
 * Manifests, tags and referrers of a repository. A manifest body is content in blobs/;
 * a repository holds it through a revision link that also records its media type, size
 * and subject, so stat and delete need not parse the body. Inputs are validated by the
 * caller (registry.ts); putManifest's checks and writes run under the shared lock so
 * the GC sweep cannot remove what it just checked.
 *
 * A pull-through cache stores manifests without the reference check (its blobs and
 * child manifests arrive later, or never for the platforms nobody pulls), and records
 * beside a tag when the upstream last confirmed it, so tag freshness survives restarts.
 */
import {
  type Descriptor,
  type Digest,
  digestOf,
  ManifestBlobUnknownError,
  ManifestUnknownError,
  type ParsedManifest,
  type Reference,
} from '../../../protocol/src/index.js'
import type { AbortOptions, ManifestRecord, PutManifestResult } from '../service.js'
import type { BlobStore } from './blob-store.js'
import { createContentCache } from './content-cache.js'
import { protectBlob, protectManifest, type StorageContext } from './context.js'
import { StoragePathNotFoundError } from './driver/index.js'
import {
  digestFromParts,
  referrerPath,
  referrersDir,
  revisionLinkPath,
  revisionsDir,
  tagCacheRecordPath,
  tagLinkPath,
  tagsDir,
} from './paths.js'

/** What a revision link records. */
export interface RevisionRecord {
  digest: Digest
  mediaType: string
  size: number
  /** The subject's digest, when the manifest has one. */
  subject?: Digest
}

/** When a pull-through cache last confirmed a tag with its upstream. */
export interface CachedTagRecord {
  /** The digest the tag points to. */
  digest: Digest
  /**
   * When (ms since the epoch, by the registry's clock) the upstream last confirmed that
   * the tag points to `digest`; undefined when never (the tag was pushed, or its record
   * is missing or belongs to an earlier digest).
   */
  checkedAt?: number
}

/** How ManifestStore.put stores a manifest. */
export interface ManifestPutOptions extends AbortOptions {
  /**
   * Refuse the manifest (ManifestBlobUnknownError) unless every blob and child manifest
   * it references is held in the repository. Only a pull-through cache turns this off.
   * @default true
   */
  verifyReferences?: boolean
  /** For a tag reference: record that the upstream confirmed the tag at this time. */
  checkedAt?: number
}

/** Manifests, tags and referrers. */
export interface ManifestStore {
  /**
   * Stores a parsed, size-checked manifest; ManifestBlobUnknownError when a reference is
   * missing and `options.verifyReferences` is not false.
   */
  put(
    repository: string,
    reference: Reference,
    digest: Digest,
    parsed: ParsedManifest,
    body: Uint8Array,
    options?: ManifestPutOptions,
  ): Promise<PutManifestResult>
  /** A tag's digest and when a pull-through cache last confirmed it, or undefined when no such tag. */
  cachedTag(repository: string, tag: string, options?: AbortOptions): Promise<CachedTagRecord | undefined>
  /** The revision a reference resolves to; ManifestUnknownError when none. */
  resolve(repository: string, reference: Reference, options?: AbortOptions): Promise<RevisionRecord>
  /** The revision record of a digest, or undefined. */
  revision(repository: string, digest: Digest, options?: AbortOptions): Promise<RevisionRecord | undefined>
  /** A manifest with its body; ManifestUnknownError when unknown. */
  get(repository: string, reference: Reference, options?: AbortOptions): Promise<ManifestRecord>
  /** Deletes a revision (and its tags and referrer entry) or a tag; ManifestUnknownError when unknown. */
  delete(repository: string, reference: Reference, options?: AbortOptions): Promise<void>
  /** Removes a revision and its referrer entry, leaving tags alone (GC; tags never point at what it removes). */
  deleteRevision(repository: string, record: RevisionRecord, options?: AbortOptions): Promise<void>
  /** Tags of a repository, sorted. */
  tags(repository: string, options?: AbortOptions): Promise<string[]>
  /** The digest a tag points to, or undefined. */
  tag(repository: string, tag: string, options?: AbortOptions): Promise<Digest | undefined>
  /** Digests of every revision of a repository. */
  revisions(repository: string, options?: AbortOptions): Promise<Digest[]>
  /** Descriptors of the manifests whose subject is `subject`, sorted by digest. */
  referrers(repository: string, subject: Digest, options?: AbortOptions): Promise<Descriptor[]>
}

const NON_DISTRIBUTABLE = /nondistributable|foreign/

/**
 * Manifest bodies kept in memory: image manifests and indexes are a few KiB, so 1 MiB
 * holds the hot ones of a busy registry.
 */
const BODY_CACHE_BYTES = 1024 * 1024
const BODY_CACHE_ENTRY_BYTES = 64 * 1024

function decode(raw: Uint8Array): string {
  return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('utf8')
}

/** Creates the manifest store. */
export function createManifestStore(ctx: StorageContext, blobs: BlobStore): ManifestStore {
  const { driver } = ctx
  const bodies = createContentCache({ maxBytes: BODY_CACHE_BYTES, maxEntryBytes: BODY_CACHE_ENTRY_BYTES })

  async function readOptional(path: string, options?: AbortOptions): Promise<string | undefined> {
    try {
      return decode(await driver.getContent(path, options))
    } catch (err) {
      if (err instanceof StoragePathNotFoundError) return undefined
      throw err
    }
  }

  async function checkReferences(
    repository: string,
    parsed: ParsedManifest,
    options?: AbortOptions,
  ): Promise<void> {
    const blobRefs = [...(parsed.config ? [parsed.config] : []), ...parsed.layers]
    for (const d of blobRefs) {
      // Foreign layers live at their URLs, not in the registry.
      if (d.urls && d.urls.length > 0 && NON_DISTRIBUTABLE.test(d.mediaType)) continue
      if (!(await blobs.linked(repository, d.digest, options))) {
        throw new ManifestBlobUnknownError(`blob unknown to repository: ${d.digest}`, { digest: d.digest })
      }
    }
    for (const d of parsed.manifests) {
      if (!(await store.revision(repository, d.digest, options))) {
        throw new ManifestBlobUnknownError(`manifest unknown to repository: ${d.digest}`, {
          digest: d.digest,
        })
      }
    }
  }

  const store: ManifestStore = {
    async put(repository, reference, digest, parsed, body, options) {
      return ctx.lock.shared(async () => {
        if (options?.verifyReferences !== false) await checkReferences(repository, parsed, options)
        await blobs.putSmall(digest, body, options)
        const record: RevisionRecord = { digest, mediaType: parsed.mediaType, size: body.byteLength }
        if (parsed.subject) record.subject = parsed.subject.digest
        await driver.putContent(
          revisionLinkPath(repository, digest),
          Buffer.from(JSON.stringify(record)),
          options,
        )
        if (parsed.subject) {
          const descriptor: Descriptor = { mediaType: parsed.mediaType, digest, size: body.byteLength }
          const artifactType = parsed.artifactType ?? parsed.config?.mediaType
          if (artifactType !== undefined) descriptor.artifactType = artifactType
          if (parsed.annotations !== undefined) descriptor.annotations = parsed.annotations
          await driver.putContent(
            referrerPath(repository, parsed.subject.digest, digest),
            Buffer.from(JSON.stringify(descriptor)),
            options,
          )
        }
        if (reference.kind === 'tag') {
          if (options?.checkedAt !== undefined) {
            // Written before the link: a crash in between leaves a record of another
            // digest (or of this one before the link moved), which reads as unconfirmed.
            const cached: CachedTagRecord = { digest, checkedAt: options.checkedAt }
            await driver.putContent(
              tagCacheRecordPath(repository, reference.tag),
              Buffer.from(JSON.stringify(cached)),
              options,
            )
          }
          await driver.putContent(tagLinkPath(repository, reference.tag), Buffer.from(digest), options)
        }
        protectManifest(ctx, repository, digest)
        for (const d of [...(parsed.config ? [parsed.config] : []), ...parsed.layers])
          protectBlob(ctx, d.digest)
        for (const d of parsed.manifests) protectManifest(ctx, repository, d.digest)
        const result: PutManifestResult = { digest }
        if (parsed.subject) result.subject = parsed.subject.digest
        return result
      })
    },

    async revision(repository, digest, options) {
      const raw = await readOptional(revisionLinkPath(repository, digest), options)
      if (raw === undefined) return undefined
      try {
        const record = JSON.parse(raw) as RevisionRecord
        if (record.digest !== digest) return undefined
        return record
      } catch {
        ctx.logger?.warn({ repository, digest }, 'unreadable manifest revision link')
        return undefined
      }
    },

    async tag(repository, tag, options) {
      const raw = await readOptional(tagLinkPath(repository, tag), options)
      if (raw === undefined) return undefined
      const [alg, hex] = raw.trim().split(':')
      return alg && hex ? digestFromParts(alg, hex) : undefined
    },

    async cachedTag(repository, tag, options) {
      const digest = await store.tag(repository, tag, options)
      if (digest === undefined) return undefined
      const raw = await readOptional(tagCacheRecordPath(repository, tag), options)
      if (raw === undefined) return { digest }
      try {
        const record = JSON.parse(raw) as Partial<CachedTagRecord>
        if (record.digest !== digest || typeof record.checkedAt !== 'number') return { digest }
        return { digest, checkedAt: record.checkedAt }
      } catch {
        ctx.logger?.warn({ repository, tag }, 'unreadable cached tag record')
        return { digest }
      }
    },

    async resolve(repository, reference, options) {
      const digest =
        reference.kind === 'tag' ? await store.tag(repository, reference.tag, options) : reference.digest
      const record = digest === undefined ? undefined : await store.revision(repository, digest, options)
      if (!record) {
        throw new ManifestUnknownError(
          undefined,
          reference.kind === 'tag' ? { tag: reference.tag } : { digest },
        )
      }
      return record
    },

    async get(repository, reference, options) {
      // The revision link is read every time: it says whether this repository holds the
      // manifest. Only the body, which a digest names for good, comes from memory.
      const record = await store.resolve(repository, reference, options)
      let body = bodies.get(record.digest)
      if (!body) {
        body = await blobs.readSmall(record.digest, options)
        if (
          !body ||
          digestOf(body, record.digest.startsWith('sha512:') ? 'sha512' : 'sha256') !== record.digest
        ) {
          if (body)
            ctx.logger?.error({ repository, digest: record.digest }, 'stored manifest body is corrupt')
          throw new ManifestUnknownError(undefined, { digest: record.digest })
        }
        bodies.set(record.digest, body)
      }
      return { digest: record.digest, mediaType: record.mediaType, size: record.size, body }
    },

    async delete(repository, reference, options) {
      if (reference.kind === 'tag') {
        const current = await store.tag(repository, reference.tag, options)
        if (current === undefined) throw new ManifestUnknownError(undefined, { tag: reference.tag })
        await driver.delete(`${tagsDir(repository)}/${reference.tag}`, options)
        return
      }
      const record = await store.revision(repository, reference.digest, options)
      if (!record) throw new ManifestUnknownError(undefined, { digest: reference.digest })
      for (const tag of await store.tags(repository, options)) {
        if ((await store.tag(repository, tag, options)) === record.digest) {
          await driver.delete(`${tagsDir(repository)}/${tag}`, options)
        }
      }
      await store.deleteRevision(repository, record, options)
    },

    async deleteRevision(repository, record, options) {
      bodies.delete(record.digest)
      if (record.subject)
        await driver.delete(referrerPath(repository, record.subject, record.digest), options)
      const link = revisionLinkPath(repository, record.digest)
      await driver.delete(link.slice(0, -'/link'.length), options)
    },

    async tags(repository, options) {
      return driver.list(tagsDir(repository), options)
    },

    async revisions(repository, options) {
      const out: Digest[] = []
      for (const alg of await driver.list(revisionsDir(repository), options)) {
        for (const hex of await driver.list(revisionsDir(repository, alg), options)) {
          const d = digestFromParts(alg, hex)
          if (d) out.push(d)
        }
      }
      return out
    },

    async referrers(repository, subject, options) {
      const dir = referrersDir(repository, subject)
      const out: Descriptor[] = []
      for (const name of await driver.list(dir, options)) {
        const raw = await readOptional(`${dir}/${name}`, options)
        if (raw === undefined) continue
        try {
          out.push(JSON.parse(raw) as Descriptor)
        } catch {
          ctx.logger?.warn({ repository, subject, name }, 'unreadable referrer entry')
        }
      }
      return out.sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0))
    },
  }
  return store
}
