/**
 * The in-memory storage driver: a fake with the filesystem driver's semantics (it
 * passes the same conformance suite), for tests and ephemeral registries. Directories
 * are explicit, as on disk: writing a file creates its parents, deleting a file leaves
 * them.
 */
import { Readable } from 'node:stream'
import {
  type FileWriter,
  parseDriverPath,
  type ReadRange,
  type StorageDriver,
  StoragePathInvalidError,
  StoragePathNotFoundError,
  throwIfAborted,
} from './index.js'

interface MemFile {
  chunks: Buffer[]
  size: number
  modifiedAt: number
}

function normalise(path: string): string {
  const parts = parseDriverPath(path)
  return '/' + parts.join('/')
}

function parentOf(path: string): string {
  const i = path.lastIndexOf('/')
  return i <= 0 ? '/' : path.slice(0, i)
}

function concat(file: MemFile): Buffer {
  if (file.chunks.length !== 1) file.chunks = [Buffer.concat(file.chunks, file.size)]
  return file.chunks[0]!
}

interface MemDir {
  modifiedAt: number
  /** Names of direct children (files and directories). */
  children: Set<string>
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1)
}

/** Creates an empty in-memory driver; it validates paths exactly as the filesystem driver does. */
export function createMemoryDriver(): StorageDriver {
  const files = new Map<string, MemFile>()
  const dirs = new Map<string, MemDir>([['/', { modifiedAt: Date.now(), children: new Set() }]])

  function join(dir: string, name: string): string {
    return dir === '/' ? `/${name}` : `${dir}/${name}`
  }

  function touchDir(dir: string): void {
    const d = dirs.get(dir)
    if (d) d.modifiedAt = Date.now()
  }

  function addEntry(path: string): void {
    const parent = dirs.get(parentOf(path))!
    parent.children.add(baseName(path))
    parent.modifiedAt = Date.now()
  }

  function removeEntry(path: string): void {
    const parent = dirs.get(parentOf(path))
    if (!parent) return
    parent.children.delete(baseName(path))
    parent.modifiedAt = Date.now()
  }

  function mkdirs(dir: string): void {
    if (dirs.has(dir)) return
    if (files.has(dir)) throw new Error(`not a directory: ${dir}`)
    mkdirs(parentOf(dir))
    dirs.set(dir, { modifiedAt: Date.now(), children: new Set() })
    addEntry(dir)
  }

  /** Every path in the tree rooted at `dir` (deepest last), `dir` included. */
  function subtree(dir: string): string[] {
    const out = [dir]
    for (let i = 0; i < out.length; i++) {
      const d = dirs.get(out[i]!)
      if (!d) continue
      for (const name of d.children) out.push(join(out[i]!, name))
    }
    return out
  }

  function fileOrThrow(path: string): MemFile {
    const f = files.get(path)
    if (!f) throw new StoragePathNotFoundError(path)
    return f
  }

  function setFile(path: string, data: Buffer): void {
    if (dirs.has(path)) throw new Error(`is a directory: ${path}`)
    mkdirs(parentOf(path))
    if (!files.has(path)) addEntry(path)
    files.set(path, { chunks: [data], size: data.byteLength, modifiedAt: Date.now() })
    touchDir(parentOf(path))
  }

  const driver: StorageDriver = {
    name: 'memory',

    async stat(path, options) {
      throwIfAborted(options)
      const p = normalise(path)
      const f = files.get(p)
      if (f) return { path, size: f.size, modifiedAt: f.modifiedAt, isDirectory: false }
      const d = dirs.get(p)
      if (d !== undefined) return { path, size: 0, modifiedAt: d.modifiedAt, isDirectory: true }
      return undefined
    },

    async getContent(path, options) {
      throwIfAborted(options)
      const f = fileOrThrow(normalise(path))
      return new Uint8Array(concat(f))
    },

    async putContent(path, data, options) {
      throwIfAborted(options)
      const p = normalise(path)
      if (p === '/') throw new StoragePathInvalidError(path)
      setFile(p, Buffer.from(data))
    },

    async reader(path, range: ReadRange = {}, options) {
      throwIfAborted(options)
      const offset = range.offset ?? 0
      if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid offset ${offset}`)
      if (range.length !== undefined && (!Number.isSafeInteger(range.length) || range.length < 0)) {
        throw new RangeError(`invalid length ${range.length}`)
      }
      const f = fileOrThrow(normalise(path))
      const end = range.length === undefined ? f.size : Math.min(f.size, offset + range.length)
      // Chunks are never mutated after they are stored, so a snapshot of the list keeps
      // the stream valid while the file is appended to, truncated or deleted.
      const chunks = [...f.chunks]
      const HIGH_WATER = 64 * 1024
      function* slices(): Generator<Buffer> {
        let pos = 0
        for (const c of chunks) {
          const cStart = pos
          const cEnd = pos + c.byteLength
          pos = cEnd
          if (cEnd <= offset) continue
          if (cStart >= end) break
          let from = Math.max(offset, cStart) - cStart
          const to = Math.min(end, cEnd) - cStart
          while (from < to) {
            const n = Math.min(HIGH_WATER, to - from)
            yield c.subarray(from, from + n)
            from += n
          }
        }
      }
      return Readable.from(slices(), { objectMode: false })
    },

    async writer(path, init = {}, options) {
      throwIfAborted(options)
      const p = normalise(path)
      if (p === '/') throw new StoragePathInvalidError(path)
      if (!init.append || !files.has(p)) setFile(p, Buffer.alloc(0))
      let closed = false
      const w: FileWriter = {
        get size() {
          return files.get(p)?.size ?? 0
        },
        async write(chunk, opts) {
          throwIfAborted(opts)
          if (closed) throw new Error('writer is closed')
          let f = files.get(p)
          if (!f) {
            // Deleted underneath the writer: like an unlinked open file, keep writing into nothing visible.
            f = { chunks: [], size: 0, modifiedAt: Date.now() }
          }
          f.chunks.push(Buffer.from(chunk))
          f.size += chunk.byteLength
          f.modifiedAt = Date.now()
        },
        async commit(opts) {
          throwIfAborted(opts)
          if (closed) throw new Error('writer is closed')
        },
        async close() {
          closed = true
        },
        async cancel() {
          closed = true
          files.delete(p)
        },
      }
      return w
    },

    async truncate(path, size, options) {
      throwIfAborted(options)
      if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`invalid size ${size}`)
      const f = fileOrThrow(normalise(path))
      const all = concat(f)
      const next =
        size <= all.byteLength
          ? Buffer.from(all.subarray(0, size))
          : Buffer.concat([all, Buffer.alloc(size - all.byteLength)])
      f.chunks = [next]
      f.size = size
      f.modifiedAt = Date.now()
    },

    async list(path, options) {
      throwIfAborted(options)
      const d = dirs.get(normalise(path))
      return d ? [...d.children].sort() : []
    },

    async move(from, to, options) {
      throwIfAborted(options)
      const src = normalise(from)
      const dst = normalise(to)
      if (src === '/' || dst === '/') throw new StoragePathInvalidError(src === '/' ? from : to)
      const f = files.get(src)
      if (f) {
        if (dirs.has(dst)) throw new Error(`is a directory: ${to}`)
        mkdirs(parentOf(dst))
        files.delete(src)
        removeEntry(src)
        if (!files.has(dst)) addEntry(dst)
        files.set(dst, f)
        return
      }
      if (!dirs.has(src)) throw new StoragePathNotFoundError(from)
      if (dst === src || dst.startsWith(src + '/')) throw new Error(`cannot move ${from} into itself`)
      if (files.has(dst)) throw new Error(`not a directory: ${to}`)
      const existing = dirs.get(dst)
      if (existing && existing.children.size > 0) throw new Error(`directory not empty: ${to}`)
      if (existing) {
        dirs.delete(dst)
        removeEntry(dst)
      }
      mkdirs(parentOf(dst))
      for (const key of subtree(src)) {
        const moved = dst + key.slice(src.length)
        const file = files.get(key)
        if (file) {
          files.delete(key)
          files.set(moved, file)
        }
        const dir = dirs.get(key)
        if (dir) {
          dirs.delete(key)
          dirs.set(moved, dir)
        }
      }
      removeEntry(src)
      addEntry(dst)
    },

    async delete(path, options) {
      throwIfAborted(options)
      const p = normalise(path)
      if (files.delete(p)) {
        removeEntry(p)
        return
      }
      if (!dirs.has(p)) return
      for (const key of subtree(p)) {
        files.delete(key)
        if (key !== '/') dirs.delete(key)
      }
      if (p === '/') dirs.get('/')!.children.clear()
      else removeEntry(p)
    },

    async freeSpace(options) {
      throwIfAborted(options)
      return undefined
    },
  }
  return driver
}
