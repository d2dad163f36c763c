/**
 * Serves pieces and bitfields from a PieceSource (the agent's cache, the seed
 * registry's blob store) to other peers over the shoal piece
 * protocols (protocol/src/protocols.ts, framing in protocol/src/messages/):
 *
 * - PIECES_PROTOCOL: the peer sends piece-requests; each index is answered, in order,
 *   by a piece-header and, when its status is ok, the piece's raw bytes. Pieces not
 *   held are refused (not-held / not-found); beyond the upload cap the answer is busy.
 * - HAVE_PROTOCOL: a have-request is answered with the bitfield of held pieces.
 * - HAVE_WATCH_PROTOCOL: a have-request is answered with the bitfield, then with a
 *   have-update of the pieces gained since (at most one per `haveUpdateIntervalMs`)
 *   until all are held, when the server ends the stream. A source without `watch`
 *   answers with the bitfield only.
 * - PIECE_MAP_PROTOCOL (when the source has signedPieceMap): the signed piece map of a blob.
 *
 * Bytes go out in 1 MiB writes, waiting for `drain` when the muxer is full, through a
 * node-wide token bucket. Malformed input gets an error reply and a closed stream; no
 * input can make the handler throw.
 */
import type { Libp2p, PeerId } from '@libp2p/interface'
import type { Logger } from 'pino'
import { type Deadline, deadlineSignal, sharedSignal } from '../abort.js'
import { Bitfield } from '../bitfield.js'
import { DecodeError } from '../errors.js'
import type { Digest } from '../digest.js'
import {
  createMessageReader,
  encodeMessage,
  MAX_HAVE_UPDATE_INDEXES,
  type MessageReader,
  type PieceStatus,
  type WireErrorCode,
} from '../messages/index.js'
import { HAVE_PROTOCOL, HAVE_WATCH_PROTOCOL, PIECE_MAP_PROTOCOL, PIECES_PROTOCOL } from '../protocols.js'
import type { PieceSource } from './piece-source.js'
import {
  createLaneServer,
  type LaneHandlers,
  type LaneServer,
  type LaneServerInit,
  LaneStream,
} from './lane.js'
import { createPieceBufferPool } from './piece-buffers.js'
import { type PieceStream, sendWithBackpressure } from './stream-io.js'
import { createTokenBucket } from './token-bucket.js'
import { createUploadCap } from './upload-cap.js'
import { createUploadTurns, UPLOAD_TURN_HOLD_MS } from './upload-turns.js'

/**
 * Piece requests an agent serves at once, by default (PieceServerInit's
 * maxConcurrentUploads; the seed keeps its own, 16). Each upload gets its share of the
 * uplink, so the count sets how long one piece takes to reach its next holder: on the
 * 2 Mbit/s testbed a 256 KiB piece took 17 s with 16 and 8 s with 8. At N = 50, 8 came
 * first in six pairs of runs over two sessions, with less agent CPU and less sent for
 * nothing; the simulator has the median node sooner with 8 at 2 and 20 Mbit/s, and the
 * last one later at 2 Mbit/s (docs/BENCHMARKS.md, cluster, twenty-third round).
 */
export const MAX_CONCURRENT_UPLOADS = 8

/** Requests for priority pieces served at once beyond the upload cap, by default. */
export const PRIORITY_EXTRA_UPLOADS = 8

/**
 * Copies of one piece a node sends at once, by default (PieceServerInit's
 * maxUploadsPerPiece); 0 is no limit, and the default. In the simulator a limit of 2
 * started a pull sooner, but it helped the last node only together with the ahead rule
 * (AHEAD_MAX_IN_FLIGHT), which the CPU-bound testbed made slower (docs/BENCHMARKS.md,
 * simulator and cluster, session 21).
 */
export const MAX_UPLOADS_PER_PIECE = 0

/** Reported after each piece sent, for metrics and announces. */
export interface PieceSentEvent {
  peer: string
  digest: Digest
  index: number
  bytes: number
}

/** Options for createPieceServer. */
export interface PieceServerInit {
  /** Piece requests served at once (node-wide); more get `busy`. @default MAX_CONCURRENT_UPLOADS */
  maxConcurrentUploads?: number
  /**
   * Size the upload cap by the uplink (upload-cap.ts): serve at most as many pieces at
   * once as the rate the uploads reached can send in this time each, between
   * `minConcurrentUploads` and `maxConcurrentUploads`. 0: always `maxConcurrentUploads`.
   * @default 0
   */
  uploadPieceTargetMs?: number
  /** Fewest uploads a cap sized by the uplink goes down to. @default 4 */
  minConcurrentUploads?: number
  /**
   * Copies of one piece sent at once; a request for a piece already going out this many
   * times is answered busy (0: no limit). When a pull starts, the few peers that hold a
   * piece are each asked for it by a dozen others; sent to all of them at once on one
   * uplink, every copy takes a dozen times as long, and the piece reaches its next
   * holders all together, late. Two at a time, each copy lands soon and its receiver
   * passes it on, so the holders multiply (docs/BENCHMARKS.md, simulator, session 21).
   * @default MAX_UPLOADS_PER_PIECE
   */
  maxUploadsPerPiece?: number
  /**
   * Turns at the upload slots (upload-turns.ts): while uploads take this long or more,
   * a free slot goes first to the peers answered busy in the last this many ms, in the
   * order they were refused, so slots do not stick to the peers that got them first.
   * 0: first come, first served. @default UPLOAD_TURN_HOLD_MS
   */
  uploadTurnHoldMs?: number
  /** Upload rate limit in bytes per second (node-wide); 0 means unlimited. @default 0 */
  uploadBytesPerSecond?: number
  /**
   * How long a peer may take to send its next request on a stream it keeps open; longer
   * than the client's idleStreamMs, so the client lets go of a stream first. @default 60000
   */
  requestTimeoutMs?: number
  /**
   * How long a send may wait for the peer to read (for `drain`) before the stream is
   * reset and its upload slot freed.
   * @default 30000
   */
  sendStallTimeoutMs?: number
  /**
   * Shortest time between two have-updates to one watcher: pieces stored in between go
   * out together. A fast download stores hundreds of pieces a second, and a message per
   * piece to each of a few dozen watchers would cost more than the polling it replaces.
   * @default 100
   */
  haveUpdateIntervalMs?: number
  /** Inbound streams per connection and protocol. @default 64 */
  maxInboundStreams?: number
  /** Called after each piece is sent. */
  onPieceSent?: (event: PieceSentEvent) => void
  /** Called when the server starts sending a piece it holds (before its first byte). */
  onPieceStarting?: (event: Omit<PieceSentEvent, 'bytes'>) => void
  /**
   * Pieces worth serving beyond the upload cap: a request for them only (up to
   * `extraUploads` more at once, default PRIORITY_EXTRA_UPLOADS) is served where others get busy. The agent
   * names the first copies it got from the seed: held nowhere else yet, they are what
   * the swarm waits for (docs/BENCHMARKS.md, simulator, "the policy alone").
   */
  priority?: { isPriority(digest: Digest, index: number): boolean; extraUploads?: number }
  /**
   * Also serve the protocols on a piece lane (lane.ts, ADR 0008) on this address (the
   * node's libp2p TCP host; port 0 picks a free one), handing out sessions over libp2p.
   */
  lane?: Omit<LaneServerInit, 'logger'>
}

/** The collaborators of the piece server. */
export interface PieceServerComponents {
  libp2p: Pick<Libp2p, 'handle' | 'unhandle'>
  /**
   * Where pieces, bitfields and (when it has signedPieceMap) signed piece maps come from.
   * Piece maps are checked by the receiver against the seed's peer id.
   */
  source: PieceSource
  logger?: Logger
}

/** The piece server's lifecycle and load figures. */
export interface PieceServer {
  /** Registers the protocol handlers. */
  start(): Promise<void>
  /** Unregisters them and aborts uploads in progress; safe to call twice. */
  stop(): Promise<void>
  /** Piece requests being served now (the upload load announced to the tracker). */
  activeUploads(): number
  /** Peers answered busy that wait for a free upload slot (upload-turns.ts). */
  waitingPeers(): number
  /** Piece bytes sent since start. */
  bytesSent(): number
  /** The piece lane's port, when it serves one. */
  lanePort(): number | undefined
  /** Streams peers opened on the piece lane since start. */
  laneStreamsServed(): number
}

/** Creates the piece server; call start() to begin serving. */
export function createPieceServer(
  components: PieceServerComponents,
  init: PieceServerInit = {},
): PieceServer {
  const { libp2p, source } = components
  const servesPieceMaps = typeof source.signedPieceMap === 'function'
  const log = components.logger
  const maxUploads = init.maxConcurrentUploads ?? MAX_CONCURRENT_UPLOADS
  const uploadCap = createUploadCap({
    max: maxUploads,
    min: init.minConcurrentUploads ?? 4,
    targetPieceMs: init.uploadPieceTargetMs ?? 0,
  })
  const turns = createUploadTurns<string>({ holdMs: init.uploadTurnHoldMs ?? UPLOAD_TURN_HOLD_MS })
  const requestTimeoutMs = init.requestTimeoutMs ?? 60_000
  const stallTimeoutMs = init.sendStallTimeoutMs ?? 30_000
  const maxInboundStreams = init.maxInboundStreams ?? 64
  const haveUpdateIntervalMs = init.haveUpdateIntervalMs ?? 100
  const bucket = createTokenBucket({ ratePerSecond: init.uploadBytesPerSecond ?? 0 })
  const streams = new Set<PieceStream>()
  const maxUploadsPerPiece = init.maxUploadsPerPiece ?? MAX_UPLOADS_PER_PIECE
  /** Copies of each piece being sent now, by `digest:index` (only when maxUploadsPerPiece is set). */
  const copies = new Map<string, number>()
  let active = 0
  let sent = 0
  let running = false
  let lifetime = new AbortController()
  sharedSignal(lifetime.signal)
  let lane: LaneServer | undefined
  /**
   * The memory piece bytes are read into before they go out on a lane stream, reused:
   * a fresh 1 MiB buffer per chunk is external memory V8 counts towards its next full
   * collection, and the serving process then ran a mark-compact every 30-50 ms
   * (docs/BENCHMARKS.md, piece transfer, sessions 9 and 11). A chunk is given back once
   * the lane stream says its socket took everything (TLS sealed it); chunks sent on
   * libp2p streams (whose muxer may still hold them) are never given back.
   */
  const sendBuffers = createPieceBufferPool({ maxBuffers: 8 })
  const takeSendBuffer = (length: number): Uint8Array => sendBuffers.take(length)

  function sendError(stream: PieceStream, code: WireErrorCode, message: string): void {
    try {
      if (stream.writeStatus === 'writable') stream.send(encodeMessage({ type: 'error', code, message }))
    } catch {
      // The stream may already be gone; nothing more to tell the peer.
    }
  }

  /**
   * Closes our end once what was sent is flushed (so an error reply reaches the peer);
   * after a failure the stream is then reset, dropping whatever the peer still sends.
   */
  async function finish(stream: PieceStream, err?: unknown): Promise<void> {
    try {
      await stream.close({ signal: AbortSignal.timeout(err === undefined ? requestTimeoutMs : 2_000) })
    } catch (closeErr) {
      err ??= closeErr
    }
    if (err !== undefined && stream.status !== 'closed') {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }

  /**
   * Sends with back-pressure, giving up when the peer stops reading or the server stops.
   * The deadline is set up only when the muxer's buffer is full and the send must wait
   * (most sends do not): two signals per chunk sent were a measurable share of the CPU.
   */
  async function send(stream: PieceStream, data: Uint8Array): Promise<void> {
    let deadline: Deadline | undefined
    try {
      await sendWithBackpressure(stream, data, () => {
        deadline = deadlineSignal(lifetime.signal, stallTimeoutMs)
        return deadline.signal
      })
    } finally {
      deadline?.dispose()
    }
  }

  /**
   * The next request on a stream, or undefined at its end. Clients keep streams open
   * between requests; one idle for `requestTimeoutMs` is closed cleanly, like an ended one.
   */
  async function nextRequest(reader: MessageReader): ReturnType<MessageReader['read']> {
    const idle = deadlineSignal(lifetime.signal, requestTimeoutMs)
    try {
      return await reader.read({ signal: idle.signal })
    } catch (err) {
      if (idle.timedOut() && !lifetime.signal.aborted) return undefined
      throw err
    } finally {
      idle.dispose()
    }
  }

  async function sendPiece(stream: PieceStream, peer: string, digest: Digest, index: number): Promise<void> {
    const stat = await source.stat(digest)
    let status: PieceStatus = 'ok'
    if (stat === undefined || stat.pieceSize === undefined) status = 'not-found'
    else if (!(index < stat.pieceCount) || !(await source.hasPiece(digest, index, peer))) status = 'not-held'
    if (status !== 'ok' || stat === undefined || stat.pieceSize === undefined) {
      await send(stream, encodeMessage({ type: 'piece-header', index, length: 0, status }))
      return
    }
    const start = index * stat.pieceSize
    const end = Math.min(stat.size, start + stat.pieceSize)
    // Opening the range may pin the blob (the agent's cache), so it cannot be evicted
    // while it is sent; return() below releases it whatever happens.
    const reuse = stream instanceof LaneStream
    const body = source
      .readRange(
        digest,
        start,
        end,
        reuse ? { signal: lifetime.signal, allocate: takeSendBuffer } : { signal: lifetime.signal },
      )
      [Symbol.asyncIterator]()
    let n = 0
    init.onPieceStarting?.({ peer, digest, index })
    try {
      await send(stream, encodeMessage({ type: 'piece-header', index, length: end - start, status }))
      for (let r = await body.next(); r.done !== true; r = await body.next()) {
        const chunk = r.value
        await bucket.take(chunk.byteLength, { signal: lifetime.signal })
        await send(stream, chunk)
        n += chunk.byteLength
        sent += chunk.byteLength
        uploadCap.sent(chunk.byteLength, end - start)
        // Only a buffer the pool handed out is taken back; a source's own is ignored.
        if (reuse && stream.flushed()) sendBuffers.give(chunk)
      }
      if (n !== end - start) throw new Error(`source ended after ${n} of ${end - start} piece bytes`)
    } finally {
      await body.return?.()
    }
    init.onPieceSent?.({ peer, digest, index, bytes: n })
  }

  /** Whether a request over the upload cap is still served: all its pieces are priority. */
  function prioritized(digest: Digest, indexes: number[]): boolean {
    const priority = init.priority
    return (
      priority !== undefined &&
      active < uploadCap.current() + (priority.extraUploads ?? PRIORITY_EXTRA_UPLOADS) &&
      indexes.every((index) => priority.isPriority(digest, index))
    )
  }

  /** Whether one of `indexes` is going out maxUploadsPerPiece times already. */
  function copiesFull(digest: Digest, indexes: number[]): boolean {
    return (
      maxUploadsPerPiece > 0 &&
      indexes.some((index) => (copies.get(`${digest}:${index}`) ?? 0) >= maxUploadsPerPiece)
    )
  }

  async function servePieces(stream: PieceStream, connection: { remotePeer: PeerId }): Promise<void> {
    const peer = connection.remotePeer.toString()
    const reader = createMessageReader(stream)
    for (;;) {
      const msg = await nextRequest(reader)
      if (msg === undefined) return
      if (msg.type !== 'piece-request') throw new DecodeError(`expected piece-request, got ${msg.type}`)
      if (
        copiesFull(msg.digest, msg.indexes) ||
        (!turns.admit(peer, active, uploadCap.current()) && !prioritized(msg.digest, msg.indexes))
      ) {
        for (const index of msg.indexes) {
          await send(stream, encodeMessage({ type: 'piece-header', index, length: 0, status: 'busy' }))
        }
        continue
      }
      active++
      const admitted = performance.now()
      // The request's pieces count as going out from now until it is done.
      const keys = maxUploadsPerPiece > 0 ? msg.indexes.map((index) => `${msg.digest}:${index}`) : []
      for (const key of keys) copies.set(key, (copies.get(key) ?? 0) + 1)
      try {
        for (const index of msg.indexes) await sendPiece(stream, peer, msg.digest, index)
      } finally {
        active--
        turns.ended(performance.now() - admitted)
        for (const key of keys) {
          const left = copies.get(key)! - 1
          if (left === 0) copies.delete(key)
          else copies.set(key, left)
        }
      }
    }
  }

  /** What the source holds of `digest`, or undefined when it holds none of it. */
  async function heldPieces(digest: Digest): Promise<Bitfield | undefined> {
    const stat = await source.stat(digest)
    const bits = await source.bitfield(digest)
    return stat === undefined || bits === undefined || stat.pieceCount === 0
      ? undefined
      : Bitfield.decode(bits, stat.pieceCount)
  }

  function haveReply(held: Bitfield | undefined): Uint8Array {
    return encodeMessage(
      held === undefined
        ? { type: 'have-reply', status: 'not-found' }
        : { type: 'have-reply', status: 'ok', bitfield: held },
    )
  }

  async function serveHave(stream: PieceStream): Promise<void> {
    const reader = createMessageReader(stream)
    for (;;) {
      const msg = await nextRequest(reader)
      if (msg === undefined) return
      if (msg.type !== 'have-request') throw new DecodeError(`expected have-request, got ${msg.type}`)
      await send(stream, haveReply(await heldPieces(msg.digest)))
    }
  }

  async function serveHaveWatch(stream: PieceStream): Promise<void> {
    const reader = createMessageReader(stream)
    const msg = await nextRequest(reader)
    if (msg === undefined) return
    if (msg.type !== 'have-request') throw new DecodeError(`expected have-request, got ${msg.type}`)
    const { digest } = msg
    // Watching starts before the bitfield is read, so no piece stored in between is
    // missed; one already in the bitfield is not sent again.
    let gained: number[] = []
    let gone = false
    let ended = false
    let wake: (() => void) | undefined
    const unwatch = source.watch?.(digest, {
      piece(index) {
        gained.push(index)
        wake?.()
      },
      gone() {
        gone = true
        wake?.()
      },
    })
    try {
      const held = await heldPieces(digest)
      await send(stream, haveReply(held))
      if (held === undefined || unwatch === undefined) return
      // The watcher ends the watch by closing its side; a message from it is an error.
      const watcherDone = reader
        .read({ signal: lifetime.signal })
        .then((extra) => {
          if (extra !== undefined) throw new DecodeError(`unexpected ${extra.type} on a have watch`)
        })
        .finally(() => {
          ended = true
          wake?.()
        })
      watcherDone.catch(() => {})
      while (!held.isComplete() && !ended && !gone) {
        const fresh: number[] = []
        for (const index of gained) {
          if (index < held.length && !held.get(index)) {
            held.set(index)
            fresh.push(index)
          }
        }
        gained = []
        if (fresh.length === 0) {
          await new Promise<void>((resolve) => {
            wake = resolve
          })
          wake = undefined
          continue
        }
        for (let at = 0; at < fresh.length; at += MAX_HAVE_UPDATE_INDEXES) {
          const indexes = fresh.slice(at, at + MAX_HAVE_UPDATE_INDEXES)
          await send(stream, encodeMessage({ type: 'have-update', indexes }))
        }
        // Pieces stored within the next interval go out together.
        if (haveUpdateIntervalMs > 0 && !held.isComplete()) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, haveUpdateIntervalMs)
            wake = () => {
              if (ended || gone) {
                clearTimeout(timer)
                resolve()
              }
            }
          })
          wake = undefined
        }
      }
      if (ended) await watcherDone
    } finally {
      unwatch?.()
    }
  }

  async function servePieceMap(stream: PieceStream): Promise<void> {
    const reader = createMessageReader(stream)
    for (;;) {
      const msg = await nextRequest(reader)
      if (msg === undefined) return
      if (msg.type !== 'piece-map-request')
        throw new DecodeError(`expected piece-map-request, got ${msg.type}`)
      const signed = await source.signedPieceMap?.(msg.digest)
      await send(
        stream,
        signed === undefined
          ? encodeMessage({ type: 'piece-map-reply', status: 'not-found' })
          : encodeMessage({ type: 'piece-map-reply', status: 'ok', signed }),
      )
    }
  }

  function handler(serve: (stream: PieceStream, connection: { remotePeer: PeerId }) => Promise<void>) {
    return async (stream: PieceStream, connection: { remotePeer: PeerId }): Promise<void> => {
      streams.add(stream)
      try {
        await serve(stream, connection)
        await finish(stream)
      } catch (err) {
        if (err instanceof DecodeError) sendError(stream, 'bad-request', err.message)
        else if (!lifetime.signal.aborted) sendError(stream, 'internal', 'internal error')
        log?.debug({ err, peer: connection.remotePeer.toString() }, 'piece stream failed')
        await finish(stream, err)
      } finally {
        streams.delete(stream)
      }
    }
  }

  return {
    async start() {
      if (running) return
      running = true
      lifetime = new AbortController()
      // Every stream served follows it, a few listeners each.
      sharedSignal(lifetime.signal)
      await libp2p.handle(PIECES_PROTOCOL, handler(servePieces), {
        maxInboundStreams,
        runOnLimitedConnection: false,
      })
      await libp2p.handle(HAVE_PROTOCOL, handler(serveHave), {
        maxInboundStreams,
        runOnLimitedConnection: false,
      })
      await libp2p.handle(HAVE_WATCH_PROTOCOL, handler(serveHaveWatch), {
        maxInboundStreams,
        runOnLimitedConnection: false,
      })
      if (servesPieceMaps) {
        await libp2p.handle(PIECE_MAP_PROTOCOL, handler(servePieceMap), {
          maxInboundStreams,
          runOnLimitedConnection: false,
        })
      }
      if (init.lane !== undefined) {
        const handlers: LaneHandlers = new Map([
          [PIECES_PROTOCOL, handler(servePieces)],
          [HAVE_PROTOCOL, handler(serveHave)],
          [HAVE_WATCH_PROTOCOL, handler(serveHaveWatch)],
          ...(servesPieceMaps ? ([[PIECE_MAP_PROTOCOL, handler(servePieceMap)]] as const) : []),
        ])
        lane = createLaneServer(
          { libp2p, handlers },
          { ...init.lane, ...(log === undefined ? {} : { logger: log }) },
        )
        await lane.start()
      }
    },

    async stop() {
      if (!running) return
      running = false
      await libp2p.unhandle(PIECES_PROTOCOL)
      await libp2p.unhandle(HAVE_PROTOCOL)
      await libp2p.unhandle(HAVE_WATCH_PROTOCOL)
      if (servesPieceMaps) await libp2p.unhandle(PIECE_MAP_PROTOCOL)
      await lane?.stop()
      lane = undefined
      lifetime.abort(new Error('piece server stopped'))
      for (const s of streams) s.abort(new Error('piece server stopped'))
    },

    activeUploads() {
      return active
    },

    waitingPeers() {
      return turns.waiting()
    },

    lanePort() {
      return lane?.port()
    },

    laneStreamsServed() {
      return lane?.streamsServed() ?? 0
    },

    bytesSent() {
      return sent
    },
  }
}
