/**
 * Fetches pieces and bitfields from other peers over the shoal piece protocols. It
 * checks the framing and each piece's length; the caller checks each piece's sha256
 * against the piece map before storing or forwarding it.
 */
import type { Libp2p, PeerId, Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Bitfield } from '../bitfield.js'
import { DecodeError } from '../errors.js'
import type { Digest } from '../digest.js'
import {
  createMessageReader,
  encodeMessage,
  expectMessage,
  MAX_PIECES_PER_REQUEST,
  type Message,
  type PieceStatus,
} from '../messages/index.js'
import type { SignedPieceMap } from '../piece-map.js'
import { HAVE_PROTOCOL, PIECE_MAP_PROTOCOL, PIECES_PROTOCOL } from '../protocols.js'
import { PeerRefusedError, PieceUnavailableError } from './errors.js'

/** Where to reach a peer: its id (addresses from the peer store) or addresses. */
export type PeerTarget = PeerId | Multiaddr | Multiaddr[]

/** One piece to fetch; `length`, when given, is enforced before any byte is read. */
export interface PieceWant {
  index: number
  length?: number
}

/** A fetched piece, or the peer's reason for not sending it. */
export type PieceResult =
  | { index: number; bytes: Uint8Array }
  | { index: number; status: Exclude<PieceStatus, 'ok'>; bytes?: undefined }

/** Options for createPieceClient. */
export interface PieceClientInit {
  /**
   * Deadline for one request (dial, negotiation and every piece of it), on top of the
   * caller's signal.
   * @default 30000
   */
  timeoutMs?: number
}

/** The collaborators of the piece client. */
export interface PieceClientComponents {
  libp2p: Pick<Libp2p, 'dialProtocol'>
}

/** Fetches from peers. */
export interface PieceClient {
  /**
   * Fetches one piece. Throws PieceUnavailableError when the peer does not send it,
   * PeerRefusedError for an error reply, DecodeError for a malformed reply or a length
   * other than `expectedLength`, and the signal's reason on abort or timeout.
   */
  fetchPiece(
    peer: PeerTarget,
    digest: Digest,
    index: number,
    options?: { signal?: AbortSignal; expectedLength?: number },
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
    options?: { signal?: AbortSignal },
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
   * Asks the peer for the signed piece map of `digest`, or undefined when it has none.
   * The map is NOT verified here: pass it to verifyPieceMap with the seed's peer id.
   * Throws PeerRefusedError, DecodeError, or the signal's reason.
   */
  fetchPieceMap(
    peer: PeerTarget,
    digest: Digest,
    options?: { signal?: AbortSignal },
  ): Promise<SignedPieceMap | undefined>
}

function refusal(msg: Message): Error | undefined {
  return msg.type === 'error' ? new PeerRefusedError(msg.code, msg.message) : undefined
}

/** Creates a piece client over a libp2p node. */
export function createPieceClient(
  components: PieceClientComponents,
  init: PieceClientInit = {},
): PieceClient {
  const { libp2p } = components
  const timeoutMs = init.timeoutMs ?? 30_000

  /**
   * Opens a stream, sends `request` and half-closes; `use` reads the replies. The
   * stream is reset when anything fails or the deadline passes.
   */
  async function* exchange<T>(
    peer: PeerTarget,
    protocol: string,
    request: Uint8Array,
    callerSignal: AbortSignal | undefined,
    use: (stream: Stream, signal: AbortSignal) => AsyncGenerator<T>,
  ): AsyncGenerator<T> {
    const deadline = AbortSignal.timeout(timeoutMs)
    const signal = callerSignal ? AbortSignal.any([callerSignal, deadline]) : deadline
    const stream = await libp2p.dialProtocol(peer, protocol, { signal })
    const onAbort = (): void =>
      stream.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
    signal.addEventListener('abort', onAbort, { once: true })
    let ok = false
    try {
      stream.send(request)
      await stream.close({ signal })
      yield* use(stream, signal)
      ok = true
    } catch (err) {
      if (signal.aborted) throw signal.reason
      throw err
    } finally {
      signal.removeEventListener('abort', onAbort)
      if (!ok && stream.status === 'open') stream.abort(new Error('piece request abandoned'))
    }
  }

  const client: PieceClient = {
    async fetchPiece(peer, digest, index, options = {}) {
      const want: PieceWant = { index }
      if (options.expectedLength !== undefined) want.length = options.expectedLength
      // Read the generator to its end so the stream closes cleanly rather than resets.
      let result: PieceResult | undefined
      for await (const r of client.fetchPieces(peer, digest, [want], options)) result = r
      if (result === undefined) throw new DecodeError('no reply to the piece request')
      if (result.bytes === undefined) throw new PieceUnavailableError(result.status, { digest, index })
      return result.bytes
    },

    fetchPieces(peer, digest, wants, options = {}) {
      if (wants.length < 1 || wants.length > MAX_PIECES_PER_REQUEST) {
        throw new RangeError(`a piece request holds 1..${MAX_PIECES_PER_REQUEST} pieces`)
      }
      const request = encodeMessage({ type: 'piece-request', digest, indexes: wants.map((w) => w.index) })
      return exchange(peer, PIECES_PROTOCOL, request, options.signal, async function* (stream, signal) {
        const reader = createMessageReader(stream)
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
          const bytes = Buffer.allocUnsafe(header.length)
          await reader.readInto(bytes, { signal })
          yield { index: want.index, bytes }
        }
      })
    },

    async fetchHave(peer, digest, options = {}) {
      const request = encodeMessage({ type: 'have-request', digest })
      const replies = exchange(
        peer,
        HAVE_PROTOCOL,
        request,
        options.signal,
        async function* (stream, signal) {
          const msg = await createMessageReader(stream).read({ signal })
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

    async fetchPieceMap(peer, digest, options = {}) {
      const request = encodeMessage({ type: 'piece-map-request', digest })
      const replies = exchange(
        peer,
        PIECE_MAP_PROTOCOL,
        request,
        options.signal,
        async function* (stream, signal) {
          const msg = await createMessageReader(stream).read({ signal })
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
  }
  return client
}
