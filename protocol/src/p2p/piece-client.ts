/**
 * Fetches pieces and bitfields from other peers over the shoal piece protocols. It
 * checks the framing and each piece's length; the caller checks each piece's sha256
 * against the piece map before storing or forwarding it, or has the client check it
 * as the bytes arrive (fetchPiece's `expectedSha256`, fetchPieces' `sha256`).
 */
import { isPeerId, type Libp2p, type PeerId } from '@libp2p/interface'
import { isMultiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { deadlineSignal } from '../abort.js'
import type { Bitfield } from '../bitfield.js'
import { DecodeError } from '../errors.js'
import type { Digest } from '../digest.js'
import {
  createMessageReader,
  encodeMessage,
  expectMessage,
  MAX_PIECES_PER_REQUEST,
  type Message,
  type MessageReader,
  type PieceStatus,
} from '../messages/index.js'
import type { SignedPieceMap } from '../piece-map.js'
import { HAVE_PROTOCOL, HAVE_WATCH_PROTOCOL, PIECE_MAP_PROTOCOL, PIECES_PROTOCOL } from '../protocols.js'
import { PeerRefusedError, PieceHashMismatchError, PieceUnavailableError } from './errors.js'
import { createLaneDialer, type LaneDialer, LaneStream } from './lane.js'
import { suppliedOrNew } from './piece-buffers.js'
import { inlinePieceHash, type PieceHash, type PieceHasher } from './piece-hasher.js'
import { type PieceStream, sendWithBackpressure } from './stream-io.js'

/** Where to reach a peer: its id (addresses from the peer store) or addresses. */
export type PeerTarget = PeerId | Multiaddr | Multiaddr[]

/** One piece to fetch; `length`, when given, is enforced before any byte is read. */
export interface PieceWant {
  index: number
  length?: number
}

/**
 * A fetched piece, or the peer's reason for not sending it. `sha256` (lowercase hex, as
 * in a piece map) is there when the request asked for it (PieceFetchOptions.sha256).
 */
export type PieceResult =
  | { index: number; bytes: Uint8Array; sha256?: string }
  | { index: number; status: Exclude<PieceStatus, 'ok'>; bytes?: undefined; sha256?: undefined }

/** Options of one piece request. */
export interface PieceFetchOptions {
  signal?: AbortSignal
  /**
   * Called as piece bytes arrive (a chunk at a time) with how many came, so a caller can
   * tell slow from stuck and count what a request it gives up had cost.
   */
  onProgress?: (bytes: number) => void
  /**
   * Supplies the memory each piece is read into, called with the piece's length from
   * its header (e.g. a PieceBufferPool's take, so the caller can reuse buffers). It must
   * return exactly `length` bytes that nothing else uses until the caller is done with
   * the piece; anything else is not used and the client allocates the piece itself.
   * The piece is yielded in that memory. Memory it supplied for a piece that is never
   * yielded (the request failed) is not written to after the request settles.
   * @default a new buffer per piece
   */
  allocate?: (length: number) => Uint8Array
  /**
   * Hash each piece as its bytes arrive (a run of socket chunks at a time, right after
   * they are copied into place) and yield its sha256 with it, rather than the caller
   * hashing the whole piece once it is in: the same work, but spread over the piece's
   * arrival instead of one pass of several milliseconds per piece that keeps the event
   * loop (and so the socket) from being read, and on bytes still in the CPU's cache.
   * With the client's `hasher`, a piece in shared memory is hashed on its worker thread
   * (the piece is yielded once that hash is done). fetchPieces only; fetchPiece checks
   * the hash itself with `expectedSha256`.
   * @default false
   */
  sha256?: boolean
}

/**
 * What a have watch (PieceClient.watchHave) yields: first what the peer holds (undefined
 * when it holds nothing of the blob, and the watch ends), then the pieces it gained.
 */
export type HaveWatchEvent = { bitfield: Bitfield | undefined } | { gained: number[] }

/** Options of fetchPiece. */
export type FetchPieceOptions = Omit<PieceFetchOptions, 'sha256'> & {
  /** The piece's length (from the piece map), enforced before any byte is read. */
  expectedLength?: number
  /**
   * The piece's sha256 (lowercase hex, from the piece map): the piece is hashed as its
   * bytes arrive (see PieceFetchOptions.sha256) and fetchPiece throws
   * PieceHashMismatchError when it differs, so the caller need not hash it again.
   */
  expectedSha256?: string
}

/** Options for createPieceClient. */
export interface PieceClientInit {
  /**
   * Deadline for one request (dial, negotiation and every piece of it), on top of the
   * caller's signal. Each chunk of piece bytes that arrives restarts it: a piece that
   * keeps coming, however slowly, through a crowded link is not thrown away with what
   * it already sent; a peer that stops sending is.
   * @default 30000
   */
  timeoutMs?: number
  /**
   * A stream whose exchange ended cleanly is kept open this long for the next request
   * to the same peer over the same protocol (the piece server reads request after
   * request on one stream and closes it after 60 s without one). Opening a stream costs
   * a muxer round trip, a protocol negotiation and a peer-store update at both ends, and
   * on the piece lane a TCP connection and a TLS handshake, which a swarm asking every
   * peer what it holds every second pays thousands of times. A download asks one peer for
   * a piece every several seconds on slow links (at 5 Mbit per node, about every 9 s),
   * so a shorter hold than that opened a lane socket for nearly every piece.
   * 0 opens a stream per request.
   * @default 45000
   */
  idleStreamMs?: number
  /** Idle streams kept per peer and protocol. @default 4 */
  maxIdleStreams?: number
  /**
   * Fetch pieces and bitfields over a peer's piece lane (lane.ts, ADR 0008) when it
   * serves one, and over libp2p streams otherwise.
   * @default false
   */
  lane?: boolean
  /**
   * Hashes the pieces of requests that ask for their sha256 (`sha256`, `expectedSha256`):
   * on its worker thread when a piece is in shared memory (a PieceBufferPool created
   * with `shared`, as `allocate`), on the calling thread otherwise. The caller owns it
   * (close it when done). @default every piece hashed on the calling thread
   */
  hasher?: PieceHasher
  /** Told of every stream opened (not of kept ones reused), by transport. */
  onStreamOpened?: (transport: 'lane' | 'libp2p') => void
  logger?: Logger
}

/** The collaborators of the piece client. */
export interface PieceClientComponents {
  /** `dial` is needed for the lane only. */
  libp2p: Pick<Libp2p, 'dialProtocol'> & Partial<Pick<Libp2p, 'dial'>>
}

/** Fetches from peers. */
export interface PieceClient {
  /**
   * Fetches one piece. Throws PieceUnavailableError when the peer does not send it,
   * PeerRefusedError for an error reply, DecodeError for a malformed reply or a length
   * other than `expectedLength`, PieceHashMismatchError for a sha256 other than
   * `expectedSha256`, and the signal's reason on abort or timeout.
   */
  fetchPiece(
    peer: PeerTarget,
    digest: Digest,
    index: number,
    options?: FetchPieceOptions,
  ): Promise<Uint8Array>
  /**
   * Fetches up to MAX_PIECES_PER_REQUEST pieces over one stream, yielding each as it
   * arrives, in request order. Throws like fetchPiece, except that a piece the peer
   * does not send is yielded with its status.
   */
  fetchPieces(
    peer: PeerTarget,
    digest: Digest,
    wants: PieceWant[],
    options?: PieceFetchOptions,
  ): AsyncGenerator<PieceResult>
  /**
   * Asks which pieces of `digest` the peer holds: its bitfield, or undefined when it
   * holds nothing. Throws PeerRefusedError, DecodeError, or the signal's reason.
   */
  fetchHave(
    peer: PeerTarget,
    digest: Digest,
    options?: { signal?: AbortSignal },
  ): Promise<Bitfield | undefined>
  /**
   * Watches which pieces of `digest` the peer holds (HAVE_WATCH_PROTOCOL, on the
   * peer's lane when the client uses lanes and the peer serves one): yields its
   * bitfield, then the pieces it gains as it stores them, and ends
   * when the peer holds every piece, holds nothing (a bitfield of undefined), or ends
   * the watch itself (it stopped, or lost the blob). Ending the iteration closes the
   * watch. The first reply must come within the client's timeout; after it, only the
   * signal ends the wait. Throws like fetchHave, a DecodeError for a gained index
   * outside the bitfield, and libp2p's error when the peer does not speak the protocol
   * (an older agent: ask it with fetchHave instead).
   */
  watchHave(
    peer: PeerTarget,
    digest: Digest,
    options?: { signal?: AbortSignal },
  ): AsyncGenerator<HaveWatchEvent>
  /**
   * Asks the peer for the signed piece map of `digest`, or undefined when it has none.
   * The map is NOT verified here: pass it to verifyPieceMap with the seed's peer id.
   * Throws PeerRefusedError, DecodeError, or the signal's reason.
   */
  fetchPieceMap(
    peer: PeerTarget,
    digest: Digest,
    options?: { signal?: AbortSignal },
  ): Promise<SignedPieceMap | undefined>
  /**
   * Resets every stream the client holds, kept or in use (lane sockets are not closed by
   * stopping the libp2p node). Requests in flight fail; the client can be used again.
   */
  close(): void
}

function refusal(msg: Message): Error | undefined {
  return msg.type === 'error' ? new PeerRefusedError(msg.code, msg.message) : undefined
}

/** An open stream to a peer with the reader that owns its incoming bytes. */
interface Channel {
  key: string
  stream: PieceStream
  reader: MessageReader
  idleTimer: ReturnType<typeof setTimeout> | undefined
}

/** The peer a target names, as a pool key (addresses without a peer id key by address). */
function peerKey(peer: PeerTarget): string {
  const first = Array.isArray(peer) ? peer[0] : peer
  if (first === undefined) return ''
  if (isPeerId(first)) return first.toString()
  if (isMultiaddr(first)) {
    const id = first.getComponents().findLast((c) => c.name === 'p2p')?.value
    return id ?? first.toString()
  }
  return String(first)
}

/** Open both ways at both ends: the server has not ended it (idle, or stopping). */
function usable(stream: PieceStream): boolean {
  return (
    stream.status === 'open' &&
    stream.writeStatus === 'writable' &&
    stream.readStatus === 'readable' &&
    stream.remoteWriteStatus === 'writable' &&
    stream.remoteReadStatus === 'readable'
  )
}

/**
 * True when `err` says the peer ended or reset the stream before any reply: a kept
 * stream the server was closing as the request went out.
 */
function closedUnanswered(err: unknown, channel: Channel, receivedBefore: number): boolean {
  if (channel.reader.received() > receivedBefore) return false
  if (err instanceof DecodeError) return err.message.startsWith('stream ended before')
  const name = err instanceof Error ? err.name : ''
  return name === 'StreamResetError' || name === 'StreamStateError' || name === 'StreamClosedError'
}

/** Creates a piece client over a libp2p node. */
export function createPieceClient(
  components: PieceClientComponents,
  init: PieceClientInit = {},
): PieceClient {
  const { libp2p } = components
  const timeoutMs = init.timeoutMs ?? 30_000
  const idleStreamMs = init.idleStreamMs ?? 45_000
  const maxIdleStreams = init.maxIdleStreams ?? 4
  const dial = libp2p.dial?.bind(libp2p)
  const lane: LaneDialer | undefined =
    init.lane === true && dial !== undefined
      ? createLaneDialer({ libp2p: { dial } }, init.logger === undefined ? {} : { logger: init.logger })
      : undefined
  /** Idle streams by peer and protocol, most recently used last. */
  const idle = new Map<string, Channel[]>()
  /** Every stream opened and not yet closed, for close(). */
  const open = new Set<PieceStream>()

  function takeIdle(key: string): Channel | undefined {
    const list = idle.get(key)
    while (list !== undefined && list.length > 0) {
      const channel = list.pop() as Channel
      clearTimeout(channel.idleTimer)
      if (list.length === 0) idle.delete(key)
      if (usable(channel.stream)) return channel
      channel.stream.abort(new Error('stale idle stream'))
    }
    return undefined
  }

  function dropIdle(channel: Channel): void {
    const list = idle.get(channel.key)
    const at = list?.indexOf(channel) ?? -1
    if (list !== undefined && at >= 0) {
      list.splice(at, 1)
      if (list.length === 0) idle.delete(channel.key)
    }
  }

  /**
   * Opens a stream for `protocol` to `peer` (`who`, its pool key): on its lane when the
   * client uses lanes and the peer serves one (piece maps always on libp2p), on libp2p
   * otherwise. Tracked for close() until it closes.
   */
  async function openStream(
    who: string,
    peer: PeerTarget,
    protocol: string,
    signal: AbortSignal,
  ): Promise<PieceStream> {
    let stream: PieceStream | undefined =
      lane !== undefined && protocol !== PIECE_MAP_PROTOCOL
        ? await lane.open(who, peer, protocol, { signal })
        : undefined
    stream ??= await libp2p.dialProtocol(peer, protocol, { signal })
    init.onStreamOpened?.(stream instanceof LaneStream ? 'lane' : 'libp2p')
    const opened = stream
    open.add(opened)
    opened.addEventListener('close', () => open.delete(opened), { once: true })
    return opened
  }

  /**
   * Whether a libp2p stream is kept for the next request: not when it stood in for a
   * lane that is not known to fail (a lane slow to connect, or busy), or the requests
   * after it would go over libp2p too, at noise's and yamux's cost in CPU.
   */
  function keepsLibp2p(channel: Channel): boolean {
    if (lane === undefined || channel.stream instanceof LaneStream) return true
    const [who = '', protocol] = channel.key.split('\0')
    return protocol === PIECE_MAP_PROTOCOL || lane.blocked(who)
  }

  /** Keeps a stream whose exchange ended cleanly for the next request, or closes it. */
  function release(channel: Channel): void {
    const list = idle.get(channel.key) ?? []
    if (
      idleStreamMs <= 0 ||
      list.length >= maxIdleStreams ||
      !usable(channel.stream) ||
      !keepsLibp2p(channel)
    ) {
      channel.stream.close().catch(() => channel.stream.abort(new Error('close failed')))
      return
    }
    list.push(channel)
    idle.set(channel.key, list)
    channel.idleTimer = setTimeout(() => {
      dropIdle(channel)
      // A clean half-close: the server sees the end of requests and closes its side.
      channel.stream.close().catch(() => channel.stream.abort(new Error('close failed')))
    }, idleStreamMs)
    channel.idleTimer.unref?.()
  }

  /**
   * Takes an idle stream to the peer for `protocol` or opens one, sends `request`;
   * `use` reads the replies. The stream goes back to the idle set when `use` finished
   * cleanly, and is reset when anything fails, the caller stops early, or the deadline
   * passes.
   */
  async function* exchange<T>(
    peer: PeerTarget,
    protocol: string,
    request: Uint8Array,
    callerSignal: AbortSignal | undefined,
    onProgress: ((bytes: number) => void) | undefined,
    use: (reader: MessageReader, signal: AbortSignal, progress: (bytes: number) => void) => AsyncGenerator<T>,
  ): AsyncGenerator<T> {
    const deadline = deadlineSignal(callerSignal, timeoutMs)
    const signal = deadline.signal
    const progress = (bytes: number): void => {
      deadline.refresh()
      onProgress?.(bytes)
    }
    try {
      const who = peerKey(peer)
      const key = `${who}\0${protocol}`
      let channel = takeIdle(key)
      // A kept stream may be closing at the server's end as the request goes out: the
      // server's idle clock starts when it has queued its last reply, the client's when it
      // has read it, and on a crowded link the two can be seconds apart. The server then
      // ends the stream without answering; the request is sent again once, on a new
      // stream, as an HTTP client resends on a kept-alive connection the server closed.
      for (;;) {
        // Only a kept stream is retried, so a request goes out twice at most.
        const reused = channel !== undefined
        if (channel === undefined) {
          const stream = await openStream(who, peer, protocol, signal)
          channel = { key, stream, reader: createMessageReader(stream), idleTimer: undefined }
        }
        const { stream } = channel
        const onAbort = (): void =>
          stream.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
        signal.addEventListener('abort', onAbort, { once: true })
        let ok = false
        let yielded = false
        const receivedBefore = channel.reader.received()
        try {
          await sendWithBackpressure(stream, request, signal)
          for await (const item of use(channel.reader, signal, progress)) {
            yielded = true
            yield item
          }
          ok = true
          return
        } catch (err) {
          if (signal.aborted) throw signal.reason
          if (!(reused && !yielded && closedUnanswered(err, channel, receivedBefore))) throw err
        } finally {
          signal.removeEventListener('abort', onAbort)
          if (ok) release(channel)
          else if (stream.status === 'open') stream.abort(new Error('piece request abandoned'))
        }
        channel = undefined
      }
    } finally {
      deadline.dispose()
    }
  }

  const client: PieceClient = {
    async fetchPiece(peer, digest, index, options = {}) {
      const want: PieceWant = { index }
      if (options.expectedLength !== undefined) want.length = options.expectedLength
      // Read the generator to its end so the stream closes cleanly rather than resets.
      const { expectedSha256, ...rest } = options
      const fetchOptions: PieceFetchOptions = expectedSha256 === undefined ? rest : { ...rest, sha256: true }
      let result: PieceResult | undefined
      for await (const r of client.fetchPieces(peer, digest, [want], fetchOptions)) result = r
      if (result === undefined) throw new DecodeError('no reply to the piece request')
      if (result.bytes === undefined) throw new PieceUnavailableError(result.status, { digest, index })
      if (expectedSha256 !== undefined && result.sha256 !== expectedSha256) {
        throw new PieceHashMismatchError(index, result.bytes, { digest, index })
      }
      return result.bytes
    },

    fetchPieces(peer, digest, wants, options = {}) {
      if (wants.length < 1 || wants.length > MAX_PIECES_PER_REQUEST) {
        throw new RangeError(`a piece request holds 1..${MAX_PIECES_PER_REQUEST} pieces`)
      }
      const request = encodeMessage({ type: 'piece-request', digest, indexes: wants.map((w) => w.index) })
      return exchange(
        peer,
        PIECES_PROTOCOL,
        request,
        options.signal,
        options.onProgress,
        async function* (reader, signal, progress) {
          for (const want of wants) {
            const msg = await reader.read({ signal })
            if (msg === undefined) throw new DecodeError('stream ended before the piece header')
            const refused = refusal(msg)
            if (refused) throw refused
            const header = expectMessage(msg, 'piece-header')
            if (header.index !== want.index) {
              throw new DecodeError(`peer sent piece ${header.index}, expected ${want.index}`)
            }
            if (header.status !== 'ok') {
              yield { index: want.index, status: header.status }
              continue
            }
            if (want.length !== undefined && header.length !== want.length) {
              throw new DecodeError(
                `peer sent ${header.length} bytes for piece ${want.index}, expected ${want.length}`,
              )
            }
            // Copied into place as the bytes arrive: one copy, no list of chunks held per piece.
            const bytes = suppliedOrNew(options.allocate, header.length)
            if (options.sha256 !== true) {
              await reader.readInto(bytes, { signal, onProgress: progress })
              yield { index: want.index, bytes }
              continue
            }
            const hash: PieceHash = init.hasher?.begin(bytes) ?? inlinePieceHash(bytes)
            let sha256: string
            try {
              await reader.readInto(bytes, {
                signal,
                onProgress: progress,
                onCopied: (part: Uint8Array) =>
                  hash.update(part.byteOffset - bytes.byteOffset + part.byteLength),
              })
              sha256 = await hash.digest()
            } catch (err) {
              hash.abort()
              throw err
            }
            yield { index: want.index, bytes, sha256 }
          }
        },
      )
    },

    async fetchHave(peer, digest, options = {}) {
      const request = encodeMessage({ type: 'have-request', digest })
      const replies = exchange(
        peer,
        HAVE_PROTOCOL,
        request,
        options.signal,
        undefined,
        async function* (reader, signal) {
          const msg = await reader.read({ signal })
          if (msg === undefined) throw new DecodeError('stream ended before the have reply')
          const refused = refusal(msg)
          if (refused) throw refused
          yield expectMessage(msg, 'have-reply')
        },
      )
      let reply: Extract<Message, { type: 'have-reply' }> | undefined
      for await (const r of replies) reply = r
      if (reply === undefined) throw new DecodeError('no reply to the have request')
      return reply.status === 'ok' ? reply.bitfield : undefined
    },

    async *watchHave(peer, digest, options = {}) {
      // The deadline covers the stream's set-up and the first reply; it is then
      // disposed, and the watch lasts as long as the caller's signal lets it.
      const deadline = deadlineSignal(options.signal, timeoutMs)
      let stream: PieceStream | undefined
      let deadlineDisposed = false
      const onAbort = (): void => {
        const reason = options.signal?.reason
        stream?.abort(reason instanceof Error ? reason : new Error('have watch aborted'))
      }
      options.signal?.addEventListener('abort', onAbort, { once: true })
      // A watch the caller ended (its iteration returned) or the peer ended closes
      // cleanly; one that failed or was aborted is reset.
      let failed = false
      try {
        // On the lane when the peer serves one: an update there is one TLS record, on a
        // libp2p stream a yamux frame sealed by noise in JS and a window update back
        // (about a millisecond of CPU per update on the 2-core testbed host).
        stream = await openStream(peerKey(peer), peer, HAVE_WATCH_PROTOCOL, deadline.signal)
        const reader = createMessageReader(stream)
        await sendWithBackpressure(stream, encodeMessage({ type: 'have-request', digest }), deadline.signal)
        const first = await reader.read({ signal: deadline.signal })
        if (first === undefined) throw new DecodeError('stream ended before the have reply')
        const refused = refusal(first)
        if (refused) throw refused
        const reply = expectMessage(first, 'have-reply')
        deadline.dispose()
        deadlineDisposed = true
        const bits = reply.status === 'ok' ? reply.bitfield : undefined
        yield { bitfield: bits }
        if (bits === undefined) return
        const signal = options.signal ?? new AbortController().signal
        for (;;) {
          const msg = await reader.read({ signal })
          if (msg === undefined) break
          const refused = refusal(msg)
          if (refused) throw refused
          const update = expectMessage(msg, 'have-update')
          for (const index of update.indexes) {
            if (index >= bits.length) {
              throw new DecodeError(`peer gained piece ${index} of a blob of ${bits.length} pieces`)
            }
          }
          yield { gained: update.indexes }
        }
      } catch (err) {
        failed = true
        if (options.signal?.aborted) throw options.signal.reason
        if (deadline.signal.aborted && !deadlineDisposed) throw deadline.signal.reason
        throw err
      } finally {
        options.signal?.removeEventListener('abort', onAbort)
        if (!deadlineDisposed) deadline.dispose()
        if (stream !== undefined && stream.status === 'open') {
          const s = stream
          if (failed) s.abort(new Error('have watch failed'))
          else s.close().catch(() => s.abort(new Error('close failed')))
        }
      }
    },

    async fetchPieceMap(peer, digest, options = {}) {
      const request = encodeMessage({ type: 'piece-map-request', digest })
      const replies = exchange(
        peer,
        PIECE_MAP_PROTOCOL,
        request,
        options.signal,
        undefined,
        async function* (reader, signal) {
          const msg = await reader.read({ signal })
          if (msg === undefined) throw new DecodeError('stream ended before the piece map reply')
          const refused = refusal(msg)
          if (refused) throw refused
          yield expectMessage(msg, 'piece-map-reply')
        },
      )
      let reply: Extract<Message, { type: 'piece-map-reply' }> | undefined
      for await (const r of replies) reply = r
      if (reply === undefined) throw new DecodeError('no reply to the piece map request')
      if (reply.status !== 'ok') return undefined
      if (reply.signed?.map.digest !== digest)
        throw new DecodeError('peer sent the piece map of another blob')
      return reply.signed
    },

    close() {
      lane?.close()
      for (const list of idle.values()) for (const channel of list) clearTimeout(channel.idleTimer)
      idle.clear()
      for (const stream of open) stream.abort(new Error('piece client closed'))
      open.clear()
    },
  }
  return client
}
