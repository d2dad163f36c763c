/**
 * The storage driver contract: a dumb, byte-oriented file tree with no OCI meaning
 * (Distribution's split). Blobs, manifests, tags and uploads are built above it in
 * registry/src/storage/*.ts. Every implementation passes the shared conformance suite
 * in conformance.ts.
 *
 * Paths are logical, '/'-separated and absolute within the driver ('/', '/a/b'). Each
 * component must match COMPONENT_GRAMMAR: no empty components, no '.' or '..', nothing
 * starting with '.', no '%', '\\', ':' or NUL. A path that breaks these rules is
 * rejected with StoragePathInvalidError before anything touches the backing store.
 */
import type { Readable } from 'node:stream'
import { ShoalError } from '../../../../protocol/src/index.js'

/** Cancellation for driver operations. */
export interface DriverOptions {
  signal?: AbortSignal
}

/** What `stat` knows about a path. */
export interface FileInfo {
  path: string
  /** Size in bytes; 0 for a directory. */
  size: number
  /** Last modification time, ms since the epoch. */
  modifiedAt: number
  isDirectory: boolean
}

/** A sequential writer of one file, opened by `StorageDriver.writer`. */
export interface FileWriter {
  /** Bytes in the file so far (including what was there before an append). */
  readonly size: number
  /** Writes a chunk at the end of the file; resolves once the driver holds the bytes. */
  write(chunk: Uint8Array, options?: DriverOptions): Promise<void>
  /** Makes everything written so far durable (fsync); the writer stays open. */
  commit(options?: DriverOptions): Promise<void>
  /** Releases the writer; written bytes stay. Safe to call twice. */
  close(): Promise<void>
  /** Releases the writer and deletes the file. */
  cancel(): Promise<void>
}

/**
 * An open file read by position into buffers the caller owns (and may reuse), opened
 * by `StorageDriver.openFile`. It stays readable if the file is deleted while open.
 */
export interface ReadableFile {
  /** Size of the file when it was opened, in bytes. */
  readonly size: number
  /**
   * Reads up to `length` bytes at file offset `position` into the start of `buffer`;
   * resolves how many bytes were read (0 at or past the end of the file).
   */
  read(buffer: Uint8Array, length: number, position: number): Promise<number>
  /** Releases the file. Safe to call twice. */
  close(): Promise<void>
}

/** A byte range to read: `length` omitted means to the end of the file. */
export interface ReadRange {
  offset?: number
  length?: number
}

/**
 * A dumb file tree. Missing files are reported with StoragePathNotFoundError (stat
 * answers undefined instead); invalid paths with StoragePathInvalidError.
 */
export interface StorageDriver {
  /** A short name for logs ('filesystem', 'memory'). */
  readonly name: string
  /** Info about a file or directory, or undefined when nothing exists at `path`. */
  stat(path: string, options?: DriverOptions): Promise<FileInfo | undefined>
  /** The whole content of a small file; StoragePathNotFoundError when missing. */
  getContent(path: string, options?: DriverOptions): Promise<Uint8Array>
  /**
   * Replaces a small file atomically and durably: readers see the old content or the
   * new one, never a mix, and a crash leaves one of the two. Creates parent directories.
   */
  putContent(path: string, data: Uint8Array, options?: DriverOptions): Promise<void>
  /**
   * Opens a stream of the file's bytes from `offset` (default 0) for `length` bytes
   * (default: to the end; clamped to the file). An offset past the end yields nothing.
   * StoragePathNotFoundError when missing. The stream stays valid if the file is
   * deleted while it is read.
   */
  reader(path: string, range?: ReadRange, options?: DriverOptions): Promise<Readable>
  /**
   * Opens a file for positional reads into the caller's buffers (optional: a driver
   * that has no files to offer leaves it out, and its callers use `reader`).
   * StoragePathNotFoundError when the file is missing or is a directory.
   */
  openFile?(path: string, options?: DriverOptions): Promise<ReadableFile>
  /**
   * Opens a writer: with `append` it continues an existing file (or creates it),
   * otherwise it truncates. Creates parent directories. Not atomic: write to a private
   * path and `move` it into place to publish.
   */
  writer(path: string, init?: { append?: boolean }, options?: DriverOptions): Promise<FileWriter>
  /** Shortens (or zero-extends) a file to `size` bytes, durably. StoragePathNotFoundError when missing. */
  truncate(path: string, size: number, options?: DriverOptions): Promise<void>
  /** Names (not paths) of the direct children of a directory, sorted; [] when missing. */
  list(path: string, options?: DriverOptions): Promise<string[]>
  /**
   * Renames a file or directory, replacing a file at `to`, durably. Creates parent
   * directories of `to`. StoragePathNotFoundError when `from` is missing.
   */
  move(from: string, to: string, options?: DriverOptions): Promise<void>
  /** Deletes a file or a directory tree; nothing happens when `path` is missing. */
  delete(path: string, options?: DriverOptions): Promise<void>
  /** Free bytes available to the store, when the driver can tell. */
  freeSpace?(options?: DriverOptions): Promise<number | undefined>
}

/** A driver path is malformed or tries to leave the driver's root. */
export class StoragePathInvalidError extends ShoalError {
  constructor(path: unknown) {
    super(`invalid storage path: ${JSON.stringify(String(path).slice(0, 300))}`)
    this.name = 'StoragePathInvalidError'
  }
}

/** Nothing exists at a driver path that had to exist. */
export class StoragePathNotFoundError extends ShoalError {
  constructor(path: string) {
    super(`storage path not found: ${path}`)
    this.name = 'StoragePathNotFoundError'
  }
}

/** The grammar of one path component. */
export const COMPONENT_GRAMMAR = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$/
const MAX_PATH_LENGTH = 4096

/**
 * Validates a driver path and returns its components ([] for '/'). Throws
 * StoragePathInvalidError for anything but '/'-separated components that match
 * COMPONENT_GRAMMAR, which rules out traversal ('..'), hidden names, encoded
 * characters, backslashes and NUL bytes.
 */
export function parseDriverPath(path: string): string[] {
  if (typeof path !== 'string' || path.length === 0 || path.length > MAX_PATH_LENGTH || path[0] !== '/') {
    throw new StoragePathInvalidError(path)
  }
  if (path === '/') return []
  const parts = path.slice(1).split('/')
  for (const part of parts) {
    if (!COMPONENT_GRAMMAR.test(part)) throw new StoragePathInvalidError(path)
  }
  return parts
}

/** Throws the signal's reason when it has been aborted. */
export function throwIfAborted(options?: DriverOptions): void {
  options?.signal?.throwIfAborted()
}
