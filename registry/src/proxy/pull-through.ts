/**
 * The pull-through cache: a RegistryService that wraps the local storage-backed one
 * and fills it from upstream registries on a miss.
 *
 * - Repositories mapped to an upstream (see upstreams.ts) are read-through caches;
 *   every other repository is an ordinary local repository.
 * - Blobs and manifests by digest are immutable: once cached they are served locally
 *   for good. A missing blob is streamed to the client while it is written into the
 *   local store (see blob-fill.ts); concurrent requests for it share one upstream fetch
 *   and are served from the local store once it is committed.
 * - Every manifest is stored locally as soon as it is fetched and verified, by digest
 *   and under its tag, through the storage's cacheManifest: unlike a push it needs none
 *   of its blobs or child manifests (a multi-arch index usually has one platform pulled,
 *   ever). See docs/adr/0003-pull-through-stores-unverified-manifests.md.
 * - A manifest by tag is served from cache for `tagTtlMs` after the upstream last
 *   confirmed it (recorded in storage, so this survives restarts), then revalidated with
 *   a HEAD upstream; a changed digest is fetched. When the upstream is unreachable or
 *   answers 429/5xx, the cached manifest is served stale; only with nothing cached does
 *   the request fail, with the upstream's error.
 * - Writes (uploads, mounts, manifest puts, deletes) to a mapped repository throw
 *   UnsupportedError, as Distribution does in proxy mode: the cache mirrors its upstream
 *   and must not diverge from it. Writes to unmapped repositories go to the local store.
 */
import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import {
  BlobUnknownError,
  type Digest,
  ManifestUnknownError,
  NameUnknownError,
  parseDigest,
  parseReference,
  ShoalError,
  UnsupportedError,
  UpstreamError,
} from '../../../protocol/src/index.js'
import {
  createRegistryClient,
  isUpstreamUnavailable,
  type RegistryClient,
} from '../../../protocol/src/registry-client/index.js'
import type {
  AbortOptions,
  BlobInfo,
  BlobReader,
  ByteRange,
  ManifestRecord,
  Page,
  PageRequest,
  RegistryService,
} from '../service.js'
import type { CachedTagRecord, StorageRegistry } from '../storage/index.js'
import { fillBlob } from './blob-fill.js'
import { createSingleFlight, raceSignal } from './single-flight.js'
import { createUpstreamRouter, type UpstreamConfig, type UpstreamTarget } from './upstreams.js'

/**
 * What the cache needs of its local store: the registry API, plus storing fetched
 * manifests without the reference check and reading back when a tag was confirmed.
 */
export type PullThroughLocal = RegistryService & Pick<StorageRegistry, 'cacheManifest' | 'cachedTag'>

/** Collaborators of the pull-through cache. */
export interface PullThroughComponents {
  /** The local store (normally the storage registry) that holds cached content. */
  local: PullThroughLocal
  logger?: Logger
  /** Registers shoal_registry_proxy_* metrics here when given. */
  metrics?: Registry
  /** The fetch the upstream clients use. @default globalThis.fetch */
  fetch?: typeof fetch
}

/** Options of the pull-through cache. */
export interface PullThroughInit {
  upstreams: UpstreamConfig[]
  /** How long a cached tag is served before it is revalidated upstream. @default 60_000 */
  tagTtlMs?: number
  /** Deadline for one upstream request (manifest, HEAD, start of a blob). @default 30_000 */
  upstreamTimeoutMs?: number
  /** A blob fill aborts when no bytes move for this long. @default 60_000 */
  blobIdleTimeoutMs?: number
  /** Clock, for tests. @default Date.now */
  now?: () => number
}

interface Upstream {
  client: RegistryClient
  url: string
}

type Target = UpstreamTarget<Upstream>

function counter(registry: Registry | undefined, name: string, help: string, labelNames: string[]) {
  if (registry === undefined) return undefined
  const existing = registry.getSingleMetric(name)
  if (existing !== undefined) return existing as Counter<string>
  return new Counter({ name, help, labelNames, registers: [registry] })
}

function isUnknown(err: unknown): boolean {
  return err instanceof ManifestUnknownError || err instanceof NameUnknownError
}

/**
 * Creates the pull-through cache over `components.local`. Throws ConfigError for a
 * bad upstream list (invalid URL or prefix, duplicate prefixes, more than one upstream
 * without a prefix).
 */
export function createPullThroughRegistry(
  components: PullThroughComponents,
  init: PullThroughInit,
): RegistryService {
  const { local } = components
  const log = components.logger?.child({ component: 'pull-through' })
  const tagTtlMs = init.tagTtlMs ?? 60_000
  const upstreamTimeoutMs = init.upstreamTimeoutMs ?? 30_000
  const blobIdleTimeoutMs = init.blobIdleTimeoutMs ?? 60_000
  const now = init.now ?? Date.now
  const router = createUpstreamRouter<Upstream>(init.upstreams, (u) => ({
    url: u.url,
    client: createRegistryClient({
      url: u.url,
      username: u.username,
      password: u.password,
      fetch: components.fetch,
      userAgent: 'shoal-registry-proxy',
    }),
  }))

  const requests = counter(
    components.metrics,
    'shoal_registry_proxy_requests_total',
    'Pull-through reads of proxied repositories by kind (blob, manifest, tag) and result (hit, miss, joined, revalidate, stale)',
    ['kind', 'result'],
  )
  const upstreamBytes = counter(
    components.metrics,
    'shoal_registry_proxy_upstream_bytes_total',
    'Blob bytes read from upstream registries',
    [],
  )
  const count = (kind: string, result: string) => requests?.inc({ kind, result })

  const manifestFlights = createSingleFlight<ManifestRecord>()
  const blobFlights = createSingleFlight<BlobInfo>()

  const upstreamSignal = () => AbortSignal.timeout(upstreamTimeoutMs)

  function unsupportedWrite(repository: string, target: Target, what: string): UnsupportedError {
    return new UnsupportedError(
      `${what} to ${repository} is not supported: it is a pull-through cache of ${target.upstream.url}`,
    )
  }

  /** A manifest from the local store, or undefined. */
  async function readCachedManifest(
    repository: string,
    reference: string,
    options?: AbortOptions,
  ): Promise<ManifestRecord | undefined> {
    try {
      return await local.getManifest(repository, reference, options)
    } catch (err) {
      if (!isUnknown(err)) throw err
      return undefined
    }
  }

  /**
   * Stores a fetched manifest under `reference` (a digest, or a tag the upstream just
   * confirmed). A manifest the local store refuses (a kind it cannot parse) is still
   * served, just not cached.
   */
  async function storeManifest(
    repository: string,
    reference: string,
    record: ManifestRecord,
    checkedAt?: number,
  ): Promise<void> {
    try {
      await local.cacheManifest(repository, reference, record.mediaType, record.body, { checkedAt })
    } catch (err) {
      if (!(err instanceof ShoalError)) throw err
      log?.warn(
        { repository, reference, digest: record.digest, err: err.message },
        'manifest served but not cached: the local store refused it',
      )
    }
  }

  async function fetchManifest(target: Target, reference: string): Promise<ManifestRecord> {
    const m = await target.value.client.getManifest(target.remoteRepository, reference, {
      signal: upstreamSignal(),
    })
    return { digest: m.digest, mediaType: m.mediaType, size: m.size, body: m.body }
  }

  async function manifestByDigest(
    repository: string,
    target: Target,
    digest: Digest,
    options?: AbortOptions,
  ): Promise<ManifestRecord> {
    const cached = await readCachedManifest(repository, digest, options)
    if (cached !== undefined) {
      count('manifest', 'hit')
      return cached
    }
    count('manifest', 'miss')
    const flight = manifestFlights.run(`${repository}@${digest}`, async () => {
      const record = await fetchManifest(target, digest)
      await storeManifest(repository, digest, record)
      return record
    })
    return raceSignal(flight, options?.signal)
  }

  async function revalidateTag(
    repository: string,
    target: Target,
    tag: string,
    cached: CachedTagRecord | undefined,
  ): Promise<ManifestRecord> {
    try {
      const head = await target.value.client.headManifest(target.remoteRepository, tag, {
        signal: upstreamSignal(),
      })
      const checkedAt = now()
      let record = head.digest === undefined ? undefined : await readCachedManifest(repository, head.digest)
      record ??= await fetchManifest(target, head.digest ?? tag)
      await storeManifest(repository, tag, record, checkedAt)
      return record
    } catch (err) {
      if (!isUpstreamUnavailable(err)) throw err
      const stale = cached === undefined ? undefined : await readCachedManifest(repository, cached.digest)
      if (stale === undefined) throw err
      count('tag', 'stale')
      log?.warn(
        { repository, tag, digest: stale.digest, err: (err as Error).message },
        'upstream unavailable: serving cached tag',
      )
      return stale
    }
  }

  async function manifestByTag(
    repository: string,
    target: Target,
    tag: string,
    options?: AbortOptions,
  ): Promise<ManifestRecord> {
    const cached = await local.cachedTag(repository, tag, options)
    const age = cached?.checkedAt === undefined ? undefined : now() - cached.checkedAt
    // A confirmation from the future (a clock that went back) is not trusted.
    if (cached !== undefined && age !== undefined && age >= 0 && age < tagTtlMs) {
      const record = await readCachedManifest(repository, cached.digest, options)
      if (record !== undefined) {
        count('tag', 'hit')
        return record
      }
    }
    count('tag', 'revalidate')
    return raceSignal(
      manifestFlights.run(`${repository}:${tag}`, () => revalidateTag(repository, target, tag, cached)),
      options?.signal,
    )
  }

  async function getManifest(
    repository: string,
    reference: string,
    options?: AbortOptions,
  ): Promise<ManifestRecord> {
    const target = router.resolve(repository)
    if (target === undefined) return local.getManifest(repository, reference, options)
    const ref = parseReference(reference)
    return ref.kind === 'digest'
      ? manifestByDigest(repository, target, ref.digest, options)
      : manifestByTag(repository, target, ref.tag, options)
  }

  function startFill(repository: string, target: Target, digest: Digest, withClient: boolean) {
    let ready: Promise<BlobReader | undefined> = Promise.resolve(undefined)
    const done = blobFlights.run(`${repository}@${digest}`, () => {
      const fill = fillBlob({
        local,
        client: target.value.client,
        repository,
        remoteRepository: target.remoteRepository,
        digest,
        withClient,
        idleTimeoutMs: blobIdleTimeoutMs,
        requestTimeoutMs: upstreamTimeoutMs,
        onUpstreamBytes: (n) => upstreamBytes?.inc(n),
        onClientDropped: (reason) =>
          log?.info({ repository, digest, reason }, 'client dropped from blob fill'),
      })
      ready = fill.ready
      return fill.done
    })
    done.catch((err) => log?.warn({ repository, digest, err: (err as Error).message }, 'blob fill failed'))
    return { ready, done }
  }

  /**
   * Says in an upstream failure's message that the blob is not cached here, keeping
   * its class and status (the client sees the upstream's status, e.g. 502 or 503).
   */
  function notCached(err: unknown, target: Target, digest: Digest): unknown {
    if (!(err instanceof UpstreamError)) return err
    return new UpstreamError(
      `blob ${digest} is not cached and ${target.upstream.url} failed: ${err.message}`,
      err.status,
      err.detail,
      { cause: err },
    )
  }

  async function getBlob(
    repository: string,
    digest: string,
    range?: ByteRange,
    options?: AbortOptions,
  ): Promise<BlobReader> {
    const target = router.resolve(repository)
    if (target === undefined) return local.getBlob(repository, digest, range, options)
    const d = parseDigest(digest).digest
    try {
      const reader = await local.getBlob(repository, d, range, options)
      count('blob', 'hit')
      return reader
    } catch (err) {
      if (!(err instanceof BlobUnknownError)) throw err
    }
    try {
      return await getMissingBlob(repository, target, d, range, options)
    } catch (err) {
      throw notCached(err, target, d)
    }
  }

  async function getMissingBlob(
    repository: string,
    target: Target,
    d: Digest,
    range?: ByteRange,
    options?: AbortOptions,
  ): Promise<BlobReader> {
    const key = `${repository}@${d}`
    const inFlight = blobFlights.get(key)
    if (inFlight !== undefined) {
      count('blob', 'joined')
      await raceSignal(inFlight, options?.signal)
      return local.getBlob(repository, d, range, options)
    }
    count('blob', 'miss')
    if (range !== undefined) {
      // Fill the cache in the background and pass this range straight through.
      startFill(repository, target, d, false)
      const part = await target.value.client.getBlob(target.remoteRepository, d, {
        range,
        signal: options?.signal,
      })
      return { info: { digest: d, size: part.size }, range: part.range, stream: part.stream }
    }
    const fill = startFill(repository, target, d, true)
    const reader = await raceSignal(fill.ready, options?.signal)
    if (reader !== undefined) return reader
    await raceSignal(fill.done, options?.signal)
    return local.getBlob(repository, d, range, options)
  }

  async function statBlob(repository: string, digest: string, options?: AbortOptions): Promise<BlobInfo> {
    const target = router.resolve(repository)
    if (target === undefined) return local.statBlob(repository, digest, options)
    const d = parseDigest(digest).digest
    try {
      return await local.statBlob(repository, d, options)
    } catch (err) {
      if (!(err instanceof BlobUnknownError)) throw err
    }
    try {
      return await target.value.client.statBlob(target.remoteRepository, d, {
        signal: options?.signal ?? upstreamSignal(),
      })
    } catch (err) {
      throw notCached(err, target, d)
    }
  }

  async function listTags(repository: string, page: PageRequest, options?: AbortOptions): Promise<Page> {
    const target = router.resolve(repository)
    if (target === undefined) return local.listTags(repository, page, options)
    try {
      const list = await target.value.client.listTags(target.remoteRepository, {
        n: page.n,
        last: page.last,
        signal: options?.signal ?? upstreamSignal(),
      })
      const result: Page = { items: list.tags }
      if (list.next !== undefined) {
        result.next = { n: list.next.n ?? page.n ?? list.tags.length, last: list.next.last }
      }
      return result
    } catch (err) {
      if (!isUpstreamUnavailable(err)) throw err
      log?.warn({ repository, err: (err as Error).message }, 'upstream unavailable: listing cached tags')
      try {
        return await local.listTags(repository, page, options)
      } catch {
        // Nothing cached: the upstream's failure is the answer.
        throw err
      }
    }
  }

  /** Runs `fn` for unmapped repositories and refuses the write for mapped ones. */
  function write<T>(repository: string, what: string, fn: () => Promise<T>): Promise<T> {
    const target = router.resolve(repository)
    if (target !== undefined) return Promise.reject(unsupportedWrite(repository, target, what))
    return fn()
  }

  return {
    statBlob,
    getBlob,
    deleteBlob: (repository, digest, options) =>
      write(repository, 'deleting a blob', () => local.deleteBlob(repository, digest, options)),
    mountBlob: (repository, digest, from, options) =>
      write(repository, 'mounting a blob', () => local.mountBlob(repository, digest, from, options)),
    startUpload: (repository, options) =>
      write(repository, 'pushing a blob', () => local.startUpload(repository, options)),
    getUpload: (repository, id, options) =>
      write(repository, 'pushing a blob', () => local.getUpload(repository, id, options)),
    appendUpload: (repository, id, body, chunk, options) =>
      write(repository, 'pushing a blob', () => local.appendUpload(repository, id, body, chunk, options)),
    completeUpload: (repository, id, digest, body, chunk, options) =>
      write(repository, 'pushing a blob', () =>
        local.completeUpload(repository, id, digest, body, chunk, options),
      ),
    cancelUpload: (repository, id, options) =>
      write(repository, 'pushing a blob', () => local.cancelUpload(repository, id, options)),
    getManifest,
    async statManifest(repository, reference, options) {
      if (router.resolve(repository) === undefined) return local.statManifest(repository, reference, options)
      const { body: _body, ...rest } = await getManifest(repository, reference, options)
      return rest
    },
    putManifest: (repository, reference, mediaType, body, options) =>
      write(repository, 'pushing a manifest', () =>
        local.putManifest(repository, reference, mediaType, body, options),
      ),
    deleteManifest: (repository, reference, options) =>
      write(repository, 'deleting a manifest', () => local.deleteManifest(repository, reference, options)),
    listTags,
    catalog: (page, options) => local.catalog(page, options),
    referrers: (repository, digest, artifactType, options) =>
      local.referrers(repository, digest, artifactType, options),
  }
}
