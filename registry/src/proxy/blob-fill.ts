/**
 * Filling the local store with one blob from an upstream while streaming it to the
 * client that asked: the upstream body is read once and each chunk goes to the client
 * and into a local upload (a tee). The client may fall up to 8 MiB behind; beyond that
 * its pace drives the transfer, and a client that goes away or stalls for the idle
 * timeout is dropped while the fill carries on. Concurrent readers of the same blob
 * wait for the fill and are then served from the local store. The bytes are verified
 * against the digest on the way (the client's stream errors instead of ending on a
 * mismatch) and again by the local store on commit, so a bad blob is never cached.
 */
import { PassThrough, type Readable } from 'node:stream'
import { BlobUnknownError, type Digest, UpstreamError } from '../../../protocol/src/index.js'
import type { RegistryClient } from '../../../protocol/src/registry-client/index.js'
import type { BlobInfo, BlobReader, RegistryService } from '../service.js'

/** What fillBlob needs. */
export interface BlobFillParams {
  local: RegistryService
  client: RegistryClient
  /** Local repository the blob is linked into. */
  repository: string
  /** Repository name at the upstream. */
  remoteRepository: string
  digest: Digest
  /** Whether a client stream is wanted (false for a background fill). */
  withClient: boolean
  /** Abort the fill when the upstream sends nothing (or the client drains nothing) for this long. */
  idleTimeoutMs: number
  /** Deadline for the upstream to answer the HEAD and GET. */
  requestTimeoutMs: number
  /** Called with each chunk size read from the upstream. */
  onUpstreamBytes?: (n: number) => void
  /** Called when a client was dropped, with why. */
  onClientDropped?: (reason: string) => void
}

/** A fill in progress. */
export interface BlobFill {
  /**
   * The client's reader, as soon as the upstream answered; undefined when the blob
   * turned out to be local already (another fill, or a mount) or no client was wanted.
   */
  ready: Promise<BlobReader | undefined>
  /** Settles when the blob is committed locally (or the fill failed). */
  done: Promise<BlobInfo>
}

const CLIENT_BUFFER_BYTES = 8 * 1024 * 1024

function waitDrain(out: PassThrough, timeoutMs: number, onTimeout: () => void): Promise<void> {
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer)
      out.off('drain', finish)
      out.off('close', finish)
      resolve()
    }
    const timer = setTimeout(() => {
      onTimeout()
      finish()
    }, timeoutMs)
    out.on('drain', finish)
    out.on('close', finish)
  })
}

/** Starts filling one blob; see BlobFill. `done` must be observed by the caller. */
export function fillBlob(p: BlobFillParams): BlobFill {
  const { local, client, repository, digest } = p
  let resolveReady!: (r: BlobReader | undefined) => void
  let rejectReady!: (err: unknown) => void
  const ready = new Promise<BlobReader | undefined>((resolve, reject) => {
    resolveReady = resolve
    rejectReady = reject
  })
  // The caller may never look at `ready` (a joiner, a background fill).
  ready.catch(() => {})

  const done = (async (): Promise<BlobInfo> => {
    // Another fill may have finished between the caller's miss and now.
    try {
      const info = await local.statBlob(repository, digest)
      resolveReady(undefined)
      return info
    } catch (err) {
      if (!(err instanceof BlobUnknownError)) throw err
    }
    // The upstream must have the blob in this repository (this keeps access the same as
    // upstream's); when the local store holds it under another repository, link it.
    const head = await client.statBlob(p.remoteRepository, digest, {
      signal: AbortSignal.timeout(p.requestTimeoutMs),
    })
    const mounted = await local.mountBlob(repository, digest).catch(() => undefined)
    if (mounted !== undefined) {
      resolveReady(undefined)
      return mounted
    }

    const controller = new AbortController()
    const requestTimer = setTimeout(
      () => controller.abort(new UpstreamError(`GET blob ${digest}: upstream did not answer in time`, 504)),
      p.requestTimeoutMs,
    )
    let download: Awaited<ReturnType<RegistryClient['getBlob']>>
    try {
      download = await client.getBlob(p.remoteRepository, digest, { signal: controller.signal })
    } finally {
      clearTimeout(requestTimer)
    }
    const size = download.size >= 0 ? download.size : head.size
    const source: Readable = download.stream
    let upload: Awaited<ReturnType<RegistryService['startUpload']>>
    try {
      upload = await local.startUpload(repository)
    } catch (err) {
      source.destroy()
      throw err
    }

    // The client may fall this far behind before it slows the fill (and everyone waiting on it).
    const out = p.withClient ? new PassThrough({ highWaterMark: CLIENT_BUFFER_BYTES }) : undefined
    resolveReady(
      out === undefined
        ? undefined
        : { info: { digest, size }, range: { start: 0, end: size - 1 }, stream: out },
    )

    let idle: NodeJS.Timeout | undefined
    const arm = () => {
      clearTimeout(idle)
      idle = setTimeout(
        () => source.destroy(new UpstreamError(`GET blob ${digest}: upstream stalled`, 504)),
        p.idleTimeoutMs,
      )
    }
    const disarm = () => clearTimeout(idle)
    let upstreamFinished = false

    async function* feed(): AsyncGenerator<Uint8Array> {
      arm()
      try {
        for await (const chunk of source as AsyncIterable<Buffer>) {
          disarm()
          p.onUpstreamBytes?.(chunk.byteLength)
          if (out !== undefined && !out.destroyed && !out.write(chunk)) {
            await waitDrain(out, p.idleTimeoutMs, () => {
              p.onClientDropped?.('client stalled')
              out.destroy()
            })
          }
          arm()
          yield chunk
        }
        upstreamFinished = true
      } finally {
        disarm()
      }
    }

    try {
      const info = await local.completeUpload(repository, upload.id, digest, feed())
      out?.end()
      return info
    } catch (err) {
      source.destroy()
      await local.cancelUpload(repository, upload.id).catch(() => {})
      if (out !== undefined && !out.destroyed) {
        // The client got every verified byte even though caching failed: let it finish.
        if (upstreamFinished) out.end()
        else out.destroy(err as Error)
      }
      throw err
    }
  })()
  done.catch((err) => rejectReady(err))
  return { ready, done }
}
