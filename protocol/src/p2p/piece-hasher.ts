/**
 * The sha256 of pieces as their bytes arrive, off the thread that reads them. A fetcher's
 * main thread decrypts, copies and hashes every byte; on a machine with a core to spare
 * the hash can run on a worker thread instead, run by run as the bytes land, while the
 * main thread reads on (docs/BENCHMARKS.md, piece transfer, sessions 11 and 12).
 *
 * A worker thread can read a piece only in memory both threads share: a piece read into
 * a SharedArrayBuffer-backed buffer (a PieceBufferPool created with `shared`) is hashed
 * on the worker; any other piece, and pieces smaller than `minWorkerBytes` (for them the
 * hop costs more than it saves: MIN_WORKER_PIECE_BYTES), are hashed on the calling
 * thread as before.
 *
 * The worker is started on first use, keeps the process alive only while a hash is
 * pending (it is unref'ed when idle), and is terminated by close().
 */
import { createHash, type Hash } from 'node:crypto'
import { Worker } from 'node:worker_threads'

/**
 * Pieces smaller than this are hashed on the calling thread by default, even in shared
 * memory. Measured in session 13 (docs/BENCHMARKS.md, piece transfer): bench:transfer
 * on one connection with every piece on the worker against every piece hashed on the
 * calling thread (both in shared memory), alternated: at 256 KiB, 512 KiB and 1 MiB
 * pieces the calling thread was faster in every pair (+9–10%, +21–23% and +8–20% MB/s)
 * at lower fetcher CPU per GB (e.g. 1.63–1.88 against 2.15–2.18 CPU s/GB at 512 KiB);
 * at 4 MiB the worker took less CPU per GB in both pairs (fetcher 2.03 and 2.24
 * against 2.69 and 2.55) and was faster in one of them, and in both of session 12's.
 * A piece no larger than a run (`runBytes`) gives the worker nothing to overlap: it is
 * hashed whole after its last byte, and each piece pays the round trip to the worker.
 */
export const MIN_WORKER_PIECE_BYTES = 4 * 1024 * 1024

/** Options for createPieceHasher. */
export interface PieceHasherInit {
  /**
   * Pieces smaller than this are hashed on the calling thread, whatever memory they are
   * in. @default MIN_WORKER_PIECE_BYTES (4 MiB)
   */
  minWorkerBytes?: number
  /**
   * Bytes that must have arrived before they are handed to the worker: one message per
   * run. The last run of a piece is hashed after the piece is in, so this is also about
   * how much hashing is left when its last byte arrives. @default 512 KiB
   */
  runBytes?: number
}

/** The sha256 of one piece being filled in order from its first byte. */
export interface PieceHash {
  /** Bytes [0, end) of the piece are in place and will not change until the hash is done. */
  update(end: number): void
  /**
   * Every byte is in place: resolves to the piece's sha256 (lowercase hex). Rejects when
   * the hasher was closed first.
   */
  digest(): Promise<string>
  /** Abandons the hash (the piece failed); the worker lets go of the piece's memory. */
  abort(): void
  /** True when the worker thread hashes this piece. */
  readonly onWorker: boolean
}

/** Hashes pieces, on a worker thread when their memory allows it. */
export interface PieceHasher {
  /**
   * Starts the sha256 of `piece`, whose bytes arrive in order from its start. The
   * caller must not change bytes it reported with update() before digest() settles.
   */
  begin(piece: Uint8Array): PieceHash
  /** Pieces hashed on the worker and on the calling thread so far. */
  stats(): { worker: number; inline: number; pending: number }
  /** Terminates the worker; pending digests reject. The hasher can be used again. */
  close(): Promise<void>
}

/** A piece hashed on the calling thread, each run as it is reported. */
export function inlinePieceHash(piece: Uint8Array): PieceHash {
  const hash: Hash = createHash('sha256')
  let hashed = 0
  return {
    onWorker: false,
    update(end) {
      if (end <= hashed) return
      hash.update(piece.subarray(hashed, end))
      hashed = end
    },
    digest() {
      if (hashed < piece.byteLength) hash.update(piece.subarray(hashed))
      hashed = piece.byteLength
      return Promise.resolve(hash.digest('hex'))
    },
    abort() {},
  }
}

/**
 * The worker's code, as plain CommonJS evaluated in the worker (no file to bundle).
 * Messages: [0, id, sab, offset, length] begins a piece; [1, id, from, to] hashes a
 * run; [2, id, from, to] hashes the last run and replies [id, hex]; [3, id] drops it.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const jobs = new Map()
parentPort.on('message', (m) => {
  const id = m[1]
  if (m[0] === 0) {
    jobs.set(id, { hash: createHash('sha256'), view: new Uint8Array(m[2], m[3], m[4]) })
    return
  }
  const job = jobs.get(id)
  if (job === undefined) return
  if (m[0] === 3) {
    jobs.delete(id)
    return
  }
  if (m[3] > m[2]) job.hash.update(job.view.subarray(m[2], m[3]))
  if (m[0] === 2) {
    jobs.delete(id)
    parentPort.postMessage([id, job.hash.digest('hex')])
  }
})
`

/** Whether `piece` lies in memory a worker thread can read. */
function isShared(piece: Uint8Array): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && piece.buffer instanceof SharedArrayBuffer
}

/** Creates a piece hasher (see the file comment). */
export function createPieceHasher(init: PieceHasherInit = {}): PieceHasher {
  const minWorkerBytes = init.minWorkerBytes ?? MIN_WORKER_PIECE_BYTES
  const runBytes = Math.max(1, init.runBytes ?? 512 * 1024)
  let worker: Worker | undefined
  let nextId = 1
  /** Digests asked of the worker and not yet answered. */
  const waiting = new Map<number, { resolve: (hex: string) => void; reject: (err: Error) => void }>()
  /** Pieces begun on the worker and not yet digested or aborted. */
  let open = 0
  let onWorker = 0
  let inline = 0

  function failAll(err: Error): void {
    for (const w of waiting.values()) w.reject(err)
    waiting.clear()
  }

  /** The worker holds the process open only while a piece is on it. */
  function setRef(): void {
    if (worker === undefined) return
    if (open > 0 || waiting.size > 0) worker.ref()
    else worker.unref()
  }

  function started(): Worker {
    if (worker !== undefined) return worker
    // No inherited node flags: the source is CommonJS whatever the process was started with
    // (--input-type=module, a loader's --import).
    const w = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], name: 'shoal piece hasher' })
    w.on('message', (m: [number, string]) => {
      const entry = waiting.get(m[0])
      if (entry === undefined) return
      waiting.delete(m[0])
      entry.resolve(m[1])
      setRef()
    })
    const gone = (err: Error): void => {
      if (worker !== w) return
      worker = undefined
      open = 0
      failAll(err)
    }
    w.on('error', (err) => gone(err))
    w.on('exit', (code) => gone(new Error(`piece hasher worker exited (code ${code})`)))
    w.unref()
    worker = w
    return w
  }

  return {
    begin(piece) {
      if (piece.byteLength < minWorkerBytes || !isShared(piece)) {
        inline++
        return inlinePieceHash(piece)
      }
      const w = started()
      const id = nextId++
      onWorker++
      open++
      setRef()
      w.postMessage([0, id, piece.buffer, piece.byteOffset, piece.byteLength])
      let posted = 0
      let settled = false
      const finish = (): void => {
        if (settled) return
        settled = true
        open--
      }
      return {
        onWorker: true,
        update(end) {
          if (settled || end - posted < runBytes) return
          w.postMessage([1, id, posted, end])
          posted = end
        },
        digest() {
          if (settled) return Promise.reject(new Error('piece hash already settled'))
          if (worker !== w) {
            finish()
            return Promise.reject(new Error('piece hasher closed'))
          }
          finish()
          const result = new Promise<string>((resolve, reject) => waiting.set(id, { resolve, reject }))
          w.postMessage([2, id, posted, piece.byteLength])
          return result
        },
        abort() {
          if (settled) return
          finish()
          if (worker === w) w.postMessage([3, id])
          setRef()
        },
      }
    },

    stats() {
      return { worker: onWorker, inline, pending: waiting.size }
    },

    async close() {
      const w = worker
      worker = undefined
      open = 0
      failAll(new Error('piece hasher closed'))
      if (w !== undefined) await w.terminate()
    },
  }
}
