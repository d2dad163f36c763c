/**
 * The layered blob source behind the mirror: the local cache when it holds the blob
 * complete, else the swarm (when the agent has one), else the upstream registry
 * directly, whose bytes are streamed to the client while they are written into the
 * cache. A source that fails part-way is replaced by the next one from the byte where
 * it stopped, so the client sees one unbroken stream; only a failure of the upstream,
 * the last resort, reaches the client.
 *
 * Bytes that did not come from the cache or the swarm (both check what they hold) are
 * checked against the digest when the whole blob is read: the last chunk is held back
 * until the digest matches, so a client never receives a complete-looking wrong blob.
 */
import { PassThrough, Readable } from 'node:stream'
import type { Logger } from 'pino'
import { Registry } from 'prom-client'
import {
  assertDigest,
  Digester,
  parseDigest,
  RangeInvalidError,
  UpstreamError,
} from '../../../protocol/src/index.js'
import type { BlobCache } from '../cache/index.js'
import { createMirrorMetrics } from './metrics.js'
import type { BlobOrigin, BlobRef, BlobSource, ByteRange, OpenedBlob, SourceOptions } from './sources.js'

/** Collaborators of the caching blob source. */
export interface CachingBlobSourceComponents {
  /** The local blob cache; whole blobs fetched from the upstream are stored in it. */
  cache: BlobCache
  /** The registry the host maps to (seed or configured upstream): the last resort. */
  upstream: BlobSource
  /**
   * The swarm of peers, when the agent runs one. It stores what it fetches in the
   * cache itself; this source only reads from it.
   */
  swarm?: BlobSource
  logger?: Logger
  /** Where shoal_agent_blob_bytes_total is registered; a private registry when omitted. */
  metrics?: Registry
}

/** How often a blob stream the upstream drops is resumed from where it stopped. */
const UPSTREAM_RETRIES = 1

interface Attempt {
  name: 'cache' | 'swarm' | 'upstream'
  open(range: { start: number; end?: number }): Promise<OpenedBlob>
}

/** Resolves when `stream` can take more, or has closed. */
function drained(stream: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done)
      stream.off('close', done)
      resolve()
    }
    stream.on('drain', done)
    stream.on('close', done)
  })
}

/** Creates the layered source (see the file comment). */
export function createCachingBlobSource(components: CachingBlobSourceComponents): BlobSource {
  const { cache, upstream, swarm, logger } = components
  const metrics = createMirrorMetrics(components.metrics ?? new Registry())

  function attemptsFor(ref: BlobRef, options: SourceOptions): Attempt[] {
    const attempts: Attempt[] = []
    const held = cache.stat(ref.digest)
    if (held?.complete) {
      attempts.push({
        name: 'cache',
        async open(range) {
          const end = range.end ?? held.size - 1
          if (range.start < 0 || end >= held.size || (range.start > end && held.size > 0)) {
            throw new RangeInvalidError(`range ${range.start}-${end} outside the blob`, { size: held.size })
          }
          const stream = cache.readRange(ref.digest, range.start, end + 1, { signal: options.signal })
          return { size: held.size, stream, range: { start: range.start, end }, source: 'cache' }
        },
      })
    }
    if (swarm !== undefined)
      attempts.push({ name: 'swarm', open: (range) => swarm.open(ref, range, options) })
    attempts.push({ name: 'upstream', open: (range) => upstream.open(ref, range, options) })
    return attempts
  }

  /** Opens the first attempt from `from` on that succeeds; the upstream's failure is thrown. */
  async function openFrom(
    attempts: Attempt[],
    from: number,
    range: { start: number; end?: number },
    ref: BlobRef,
    signal: AbortSignal | undefined,
  ): Promise<{ index: number; opened: OpenedBlob }> {
    for (let index = from; index < attempts.length; index++) {
      const attempt = attempts[index] as Attempt
      try {
        return { index, opened: await attempt.open(range) }
      } catch (err) {
        if (index === attempts.length - 1 || signal?.aborted) throw err
        logger?.debug(
          { err, digest: ref.digest, source: attempt.name },
          'blob source failed, trying the next',
        )
      }
    }
    throw new Error('unreachable: the upstream attempt is always last')
  }

  return {
    async stat(ref, options = {}) {
      const held = cache.stat(ref.digest)
      if (held?.complete) return { digest: ref.digest, size: held.size }
      if (swarm !== undefined) {
        try {
          return await swarm.stat(ref, options)
        } catch (err) {
          if (options.signal?.aborted) throw err
          logger?.debug({ err, digest: ref.digest }, 'swarm cannot stat blob, asking upstream')
        }
      }
      return upstream.stat(ref, options)
    },

    async open(ref, range: ByteRange | undefined, options = {}) {
      const { signal } = options
      const { algorithm } = parseDigest(ref.digest)
      const attempts = attemptsFor(ref, options)
      const start = range?.start ?? 0
      let current = await openFrom(
        attempts,
        0,
        { start, ...(range?.end === undefined ? {} : { end: range.end }) },
        ref,
        signal,
      )
      const size = current.opened.size
      const end = current.opened.range.end
      const whole = start === 0 && end === size - 1
      const checkDigest = whole && current.opened.source !== 'cache'
      let fill: PassThrough | undefined
      let closed = false
      let delivered = false

      async function* deliver(): AsyncGenerator<Buffer> {
        const digester = checkDigest ? new Digester(algorithm) : undefined
        let heldBack: { chunk: Buffer; source: BlobOrigin } | undefined
        let position = start
        let upstreamRetries = UPSTREAM_RETRIES
        // The cache is filled only from a whole read that the upstream serves from byte 0,
        // and never over a download the swarm has under way (it stores its own pieces).
        let tee: PassThrough | undefined
        for (;;) {
          const { opened } = current
          const fromUpstream = attempts[current.index]?.name === 'upstream'
          if (
            fromUpstream &&
            position === 0 &&
            whole &&
            tee === undefined &&
            cache.stat(ref.digest) === undefined
          ) {
            tee = openFill()
          }
          try {
            for await (const raw of opened.stream as AsyncIterable<Buffer>) {
              const source = opened.sourceAt?.(position) ?? opened.source
              let chunk = raw
              if (position + chunk.byteLength > end + 1) chunk = chunk.subarray(0, end + 1 - position)
              position += chunk.byteLength
              if (tee !== undefined && !tee.destroyed && !tee.write(chunk)) await drained(tee)
              if (digester !== undefined) {
                digester.update(chunk)
                if (heldBack !== undefined) {
                  metrics.blobBytes.inc({ source: heldBack.source }, heldBack.chunk.byteLength)
                  yield heldBack.chunk
                }
                heldBack = { chunk, source }
              } else {
                metrics.blobBytes.inc({ source }, chunk.byteLength)
                yield chunk
              }
              if (position > end) break
            }
            if (position <= end) {
              throw new UpstreamError(
                `${opened.source} ended blob ${ref.digest} at byte ${position} of ${end + 1}`,
                502,
              )
            }
            break
          } catch (err) {
            opened.stream.destroy()
            const last = current.index === attempts.length - 1
            // A connection the upstream dropped is resumed once from where it stopped;
            // wrong bytes are not retried.
            const retryUpstream =
              last && upstreamRetries > 0 && !(err instanceof Error && err.name === 'DigestMismatchError')
            if (closed || signal?.aborted || (last && !retryUpstream)) {
              tee?.destroy(err as Error)
              throw err
            }
            logger?.warn(
              { err, digest: ref.digest, source: opened.source, position },
              retryUpstream
                ? 'upstream failed mid-stream, resuming'
                : 'blob source failed mid-stream, continuing from the next source',
            )
            try {
              if (retryUpstream) {
                upstreamRetries--
                current = {
                  index: current.index,
                  opened: await (attempts[current.index] as Attempt).open({ start: position, end }),
                }
              } else {
                current = await openFrom(attempts, current.index + 1, { start: position, end }, ref, signal)
              }
            } catch (reopenError) {
              tee?.destroy(reopenError as Error)
              throw reopenError
            }
          }
        }
        if (digester !== undefined) {
          try {
            assertDigest(ref.digest, digester.digest())
          } catch (err) {
            tee?.destroy(err as Error)
            throw err
          }
        }
        tee?.end()
        delivered = true
        if (heldBack !== undefined) {
          metrics.blobBytes.inc({ source: heldBack.source }, heldBack.chunk.byteLength)
          yield heldBack.chunk
        }
      }

      /** Starts writing a whole blob read from the upstream into the cache. */
      function openFill(): PassThrough {
        const pass = new PassThrough({ highWaterMark: 1 << 20 })
        // putBlob sees a failure through its read of `pass`; it may not be reading yet.
        pass.on('error', () => {})
        fill = pass
        cache.putBlob(ref.digest, size, pass, { signal }).then(
          () => {
            pass.destroy()
            logger?.debug({ digest: ref.digest, size }, 'cached blob fetched from upstream')
          },
          (err: unknown) => {
            pass.destroy()
            if (!closed)
              logger?.warn({ err, digest: ref.digest }, 'could not cache blob fetched from upstream')
          },
        )
        return pass
      }

      const stream = Readable.from(deliver(), { objectMode: false })
      stream.once('close', () => {
        closed = true
        // A pending read of the current source would keep the generator from returning.
        current.opened.stream.destroy()
        // A fill that has all the bytes finishes at the cache's pace, even after the client is done.
        if (fill !== undefined && !delivered && !fill.destroyed) fill.destroy(new Error('client went away'))
      })
      const result: OpenedBlob = {
        size,
        stream,
        range: { start, end },
        get source() {
          return current.opened.source
        },
      }
      return result
    },
  }
}
