/**
 * Test doubles for the transfer layer: blobs with their piece maps, and a piece client
 * that answers from memory on behalf of fake peers (honest, corrupt, failing or slow).
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Multiaddr } from '@multiformats/multiaddr'
import { sleep } from '../../../../protocol/src/abort.js'
import { Bitfield } from '../../../../protocol/src/bitfield.js'
import { digestOf } from '../../../../protocol/src/index.js'
import { type PieceMap, pieceRange } from '../../../../protocol/src/piece-map.js'
import {
  createPieceBufferPool,
  type FetchPieceOptions,
  type PieceBufferPoolInit,
  type PieceClient,
  PieceHashMismatchError,
  PieceUnavailableError,
} from '../../../../protocol/src/p2p/index.js'
import type { SwarmPeer } from '../scheduler.js'

/** Piece size of test blobs. */
export const PIECE = 16 * 1024

/** A random blob of `pieces` pieces (the last one short) and its piece map. */
export function blob(pieces: number): { bytes: Buffer; map: PieceMap } {
  const bytes = randomBytes(pieces * PIECE - 100)
  const hashes: string[] = []
  for (let off = 0; off < bytes.length; off += PIECE) {
    hashes.push(digestOf(bytes.subarray(off, off + PIECE)).slice('sha256:'.length))
  }
  return { bytes, map: { digest: digestOf(bytes), size: bytes.length, pieceSize: PIECE, pieces: hashes } }
}

/** A fake peer; mutate `holds` to let it gain pieces. */
export interface FakePeer extends SwarmPeer {
  holds: Set<number>
  behaviour: 'ok' | 'corrupt' | 'fail' | 'slow'
  requests: number[]
  /** Extra time each piece takes. */
  delayMs?: number
  /** While delayMs runs, tell the caller every this many ms that bytes came (onProgress). */
  progressEveryMs?: number
  /** How many bytes each of those calls says came (default 1024). */
  progressBytes?: number
  /** Pieces it holds (and says so) but answers not-held, as the seed's first-copy rule does. */
  declines?: Set<number>
  /** While true, every piece request is answered busy (all upload slots taken). */
  busy?: boolean
  /**
   * How its have watch goes (fakeSwarm with `watch`): 'unsupported' fails it at once, as
   * an agent without the protocol does; 'wrong-length' answers a bitfield one piece short.
   */
  watch?: 'unsupported' | 'wrong-length'
}

/**
 * A piece buffer pool that overwrites every buffer given back before keeping it, so a
 * buffer given back while something still reads it shows up as corrupt bytes. `counts`
 * tells buffers handed out, given back, and given back unexpectedly (twice, or never
 * handed out).
 */
export function poisoningPool(init: PieceBufferPoolInit = { maxBuffers: 4 }) {
  const pool = createPieceBufferPool(init)
  const handed = new Set<Uint8Array>()
  const counts = { taken: 0, given: 0, unexpected: 0 }
  return {
    counts,
    stats: () => pool.stats(),
    take(length: number): Uint8Array {
      const buffer = pool.take(length)
      handed.add(buffer)
      counts.taken++
      return buffer
    },
    give(buffer: Uint8Array): void {
      // Not handed out, or given back twice.
      if (!handed.delete(buffer)) {
        counts.unexpected++
        return
      }
      counts.given++
      buffer.fill(0xa5)
      pool.give(buffer)
    },
  }
}

/**
 * A piece client answering from memory on behalf of fake peers. With `watch`, it also
 * has `watchHave`, which notices pieces added to a peer's `holds` within 10 ms (and
 * answers a peer that holds nothing with no bitfield). As the real client, it checks a
 * piece against `expectedSha256` when asked (PieceHashMismatchError).
 */
export function fakeSwarm(bytes: Buffer, map: PieceMap, options: { watch?: boolean } = {}) {
  const byTarget = new Map<unknown, FakePeer>()
  const peer = (id: string, holds: Iterable<number>, behaviour: FakePeer['behaviour'] = 'ok'): FakePeer => {
    const p: FakePeer = { id, target: [] as Multiaddr[], holds: new Set(holds), behaviour, requests: [] }
    byTarget.set(p.target, p)
    return p
  }
  const count = map.pieces.length
  async function* watchHave(target: unknown, _digest: unknown, opts: { signal?: AbortSignal } = {}) {
    swarm.watches++
    swarm.openWatches++
    try {
      const p = byTarget.get(target)!
      if (p.behaviour === 'fail' || p.watch === 'unsupported') throw new Error('protocol selection failed')
      // Holding nothing, it has not begun the blob: not found, as a real agent answers.
      if (p.holds.size === 0) {
        yield { bitfield: undefined }
        return
      }
      const bits = new Bitfield(p.watch === 'wrong-length' ? count - 1 : count)
      const told = new Set<number>()
      for (const i of p.holds) {
        if (i < bits.length) bits.set(i)
        told.add(i)
      }
      yield { bitfield: bits }
      while (told.size < count) {
        await sleep(10, opts.signal)
        const gained = [...p.holds].filter((i) => !told.has(i))
        for (const i of gained) told.add(i)
        if (gained.length > 0) yield { gained }
      }
    } finally {
      swarm.openWatches--
    }
  }
  const client: Pick<PieceClient, 'fetchPiece' | 'fetchHave'> & Partial<Pick<PieceClient, 'watchHave'>> = {
    ...(options.watch === true ? { watchHave: watchHave as PieceClient['watchHave'] } : {}),
    async fetchHave(target) {
      swarm.haveQueries++
      const p = byTarget.get(target)!
      if (p.behaviour === 'fail') throw new Error('connection refused')
      const bits = new Bitfield(map.pieces.length)
      for (const i of p.holds) bits.set(i)
      return bits
    },
    async fetchPiece(target, _digest, index, options = {}) {
      swarm.inFlight++
      swarm.maxInFlight = Math.max(swarm.maxInFlight, swarm.inFlight)
      try {
        return await fetch(target, index, options)
      } finally {
        swarm.inFlight--
      }
    },
  }
  async function fetch(target: unknown, index: number, options: FetchPieceOptions): Promise<Uint8Array> {
    const p = byTarget.get(target)!
    p.requests.push(index)
    const ticker =
      p.progressEveryMs === undefined
        ? undefined
        : setInterval(() => options.onProgress?.(p.progressBytes ?? 1024), p.progressEveryMs)
    try {
      // As a real exchange, the wait ends with the signal's reason when it aborts.
      if (p.delayMs) await sleep(p.delayMs, options.signal)
      else await new Promise((resolve) => setImmediate(resolve))
    } finally {
      clearInterval(ticker)
    }
    if (p.behaviour === 'slow') {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, 60_000)
        options.signal?.addEventListener('abort', () => {
          clearTimeout(timer)
          reject(options.signal?.reason)
        })
      })
    }
    if (p.behaviour === 'fail') throw new Error('stream reset')
    if (p.busy === true) throw new PieceUnavailableError('busy')
    if (!p.holds.has(index) || p.declines?.has(index)) throw new PieceUnavailableError('not-held')
    const { offset, length } = pieceRange(map, index)
    // Into the caller's memory when it supplies some, as the real client reads it.
    const supplied = options.allocate?.(length)
    const piece = supplied?.byteLength === length ? supplied : new Uint8Array(length)
    piece.set(bytes.subarray(offset, offset + length))
    if (p.behaviour === 'corrupt') piece[0] = piece[0]! ^ 0xff
    if (options.expectedSha256 !== undefined) {
      swarm.checked++
      if (createHash('sha256').update(piece).digest('hex') !== options.expectedSha256)
        throw new PieceHashMismatchError(index, piece)
    }
    return piece
  }
  /**
   * `inFlight`: piece requests being answered now; `maxInFlight`: the most at once so
   * far; `watches`: have watches begun; `openWatches`: of those, the ones not yet ended;
   * `checked`: pieces it was asked to check against their sha256.
   */
  const swarm = {
    peer,
    client,
    haveQueries: 0,
    inFlight: 0,
    maxInFlight: 0,
    watches: 0,
    openWatches: 0,
    checked: 0,
  }
  return swarm
}
