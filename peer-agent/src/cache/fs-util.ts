/**
 * File-system helpers of the blob cache: durable small-file writes, full positional
 * writes, hashing a file, error classification and a tiny async mutex.
 */
import { createHash } from 'node:crypto'
import { constants as fsConstants } from 'node:fs'
import { type FileHandle, open, rename } from 'node:fs/promises'
import type { Digest, DigestAlgorithm } from '../../../protocol/src/index.js'

/** Serialises async sections (quota reservation, eviction, state changes). */
export function createMutex(): <T>(fn: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve()
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn)
    tail = run.catch(() => {})
    return run
  }
}

export function isNoSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG'
}

export function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'
}

export async function writeFileDurably(
  path: string,
  data: Uint8Array | string,
  durable: boolean,
): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`
  const fh = await open(tmp, 'w')
  try {
    await fh.writeFile(data)
    if (durable) await fh.sync()
  } finally {
    await fh.close()
  }
  await rename(tmp, path)
}

export async function syncDir(path: string): Promise<void> {
  const fh = await open(path, fsConstants.O_RDONLY)
  try {
    await fh.sync()
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still ordered.
  } finally {
    await fh.close()
  }
}

export async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let off = 0
  while (off < bytes.byteLength) {
    const { bytesWritten } = await fh.write(bytes, off, bytes.byteLength - off, position + off)
    if (bytesWritten === 0) throw Object.assign(new Error('short write'), { code: 'ENOSPC' })
    off += bytesWritten
  }
}

/** The digest of a file's content, read in 1 MiB chunks. */
export async function hashFile(
  path: string,
  algorithm: DigestAlgorithm,
  signal?: AbortSignal,
): Promise<Digest> {
  const hash = createHash(algorithm)
  const fh = await open(path, 'r')
  try {
    const buf = Buffer.allocUnsafe(1 << 20)
    let position = 0
    for (;;) {
      signal?.throwIfAborted()
      const { bytesRead } = await fh.read(buf, 0, buf.byteLength, position)
      if (bytesRead === 0) break
      hash.update(buf.subarray(0, bytesRead))
      position += bytesRead
    }
  } finally {
    await fh.close()
  }
  return `${algorithm}:${hash.digest('hex')}` as Digest
}
