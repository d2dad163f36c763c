/**
 * Blobs and manifests fetched straight from the registry a host maps to (the seed or a
 * configured upstream) with the shared OCI registry client. Failures keep the
 * upstream's meaning: a 404 is BlobUnknownError / ManifestUnknownError, anything else
 * an error carrying the upstream's status.
 */
import { Readable } from 'node:stream'
import { parseDigest, parseReference, UpstreamError } from '../../../protocol/src/index.js'
import type { BlobSource, ManifestSource, OpenedBlob, SourceOptions } from '../mirror/sources.js'
import type { UpstreamResolver } from './resolver.js'

/** Collaborators of the upstream sources. */
export interface UpstreamSourceComponents {
  resolver: UpstreamResolver
}

/** Options of the upstream sources. */
export interface UpstreamSourceInit {
  /**
   * Deadline of a HEAD or manifest request, and of a blob GET until its headers arrive
   * (the body then takes as long as it takes), in milliseconds.
   * @default 30000
   */
  timeoutMs?: number
}

/** A signal that aborts with the caller's, or with a TimeoutError after `ms`; `clear` stops the timer. */
function deadline(ms: number, signal: AbortSignal | undefined): { signal: AbortSignal; clear(): void } {
  const controller = new AbortController()
  const timer = setTimeout(() => {
    controller.abort(new DOMException(`upstream did not answer within ${ms} ms`, 'TimeoutError'))
  }, ms)
  timer.unref()
  const onAbort = () => controller.abort(signal?.reason)
  if (signal?.aborted) controller.abort(signal.reason)
  else signal?.addEventListener('abort', onAbort, { once: true })
  return {
    signal: controller.signal,
    clear() {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    },
  }
}

/** Yields bytes [skip, skip + take) of `source`. */
async function* slice(source: AsyncIterable<Buffer>, skip: number, take: number): AsyncGenerator<Buffer> {
  let position = 0
  let left = take
  for await (const chunk of source) {
    if (left <= 0) break
    const from = Math.max(0, skip - position)
    position += chunk.byteLength
    if (from >= chunk.byteLength) continue
    const piece = chunk.subarray(from, Math.min(chunk.byteLength, from + left))
    left -= piece.byteLength
    yield piece
  }
  if (left > 0) throw new UpstreamError(`upstream blob ended ${left} bytes early`, 502)
}

/**
 * Creates the BlobSource that reads from the upstream registry. Its `source` is `seed`
 * for hosts served by the seed registry and `upstream` for configured upstreams. A
 * whole-blob read is checked against the digest by the registry client (the stream
 * errors on a mismatch instead of ending).
 */
export function createUpstreamBlobSource(
  components: UpstreamSourceComponents,
  init: UpstreamSourceInit = {},
): BlobSource {
  const { resolver } = components
  const timeoutMs = init.timeoutMs ?? 30_000
  return {
    async stat(ref, options: SourceOptions = {}) {
      const upstream = resolver.resolve(ref.host)
      const d = deadline(timeoutMs, options.signal)
      try {
        return await upstream
          .client(options.authorization)
          .statBlob(upstream.repository(ref.repository), ref.digest, { signal: d.signal })
      } finally {
        d.clear()
      }
    },

    async open(ref, range, options: SourceOptions = {}): Promise<OpenedBlob> {
      const upstream = resolver.resolve(ref.host)
      const client = upstream.client(options.authorization)
      const repository = upstream.repository(ref.repository)
      parseDigest(ref.digest)
      const d = deadline(timeoutMs, options.signal)
      let download: Awaited<ReturnType<typeof client.getBlob>>
      try {
        download = await client.getBlob(repository, ref.digest, {
          signal: d.signal,
          ...(range === undefined ? {} : { range }),
        })
      } finally {
        // Headers are in: the body may take as long as it needs (the caller's signal still applies).
        d.clear()
      }
      let size = download.size
      if (size < 0) {
        download.stream.destroy()
        throw new UpstreamError(`upstream answered blob ${ref.digest} without its size`, 502)
      }
      const start = range?.start ?? 0
      const end = Math.min(range?.end ?? size - 1, size - 1)
      if (download.range.start === start && download.range.end === end) {
        return { size, stream: download.stream, range: { start, end }, source: upstream.origin }
      }
      // The upstream answered another range than asked (a 200 to a Range request): cut it to size.
      size = Math.max(size, download.range.end + 1)
      const stream = Readable.from(slice(download.stream, start - download.range.start, end - start + 1))
      stream.once('close', () => download.stream.destroy())
      return { size, stream, range: { start, end }, source: upstream.origin }
    },
  }
}

/** Creates the ManifestSource that asks the upstream registry every time. */
export function createUpstreamManifestSource(
  components: UpstreamSourceComponents,
  init: UpstreamSourceInit = {},
): ManifestSource {
  const { resolver } = components
  const timeoutMs = init.timeoutMs ?? 30_000
  return {
    async head(ref, options: SourceOptions = {}) {
      const upstream = resolver.resolve(ref.host)
      const client = upstream.client(options.authorization)
      const repository = upstream.repository(ref.repository)
      parseReference(ref.reference)
      const d = deadline(timeoutMs, options.signal)
      try {
        const head = await client.headManifest(repository, ref.reference, { signal: d.signal })
        if (head.digest !== undefined && head.size >= 0) {
          return { digest: head.digest, mediaType: head.mediaType, size: head.size }
        }
        // The upstream did not say which digest a tag points at: fetch it to find out.
        const manifest = await client.getManifest(repository, ref.reference, { signal: d.signal })
        return { digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.size }
      } finally {
        d.clear()
      }
    },

    async get(ref, options: SourceOptions = {}) {
      const upstream = resolver.resolve(ref.host)
      const d = deadline(timeoutMs, options.signal)
      try {
        const manifest = await upstream
          .client(options.authorization)
          .getManifest(upstream.repository(ref.repository), ref.reference, { signal: d.signal })
        return {
          digest: manifest.digest,
          mediaType: manifest.mediaType,
          size: manifest.size,
          body: manifest.body,
        }
      } finally {
        d.clear()
      }
    },
  }
}
