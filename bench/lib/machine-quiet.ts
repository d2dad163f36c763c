/**
 * Bringing the machine to the same quiet state before every measured operation: dirty
 * page cache flushed to disk (so the previous operation's writeback is not done, and
 * charged, during the next one) and no CPU in use. Benchmarks that write gigabytes in
 * a row otherwise measure the order of their operations as much as the servers.
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { promisify } from 'node:util'
import { type MachineCpuTimes, readMachineCpuTimes } from './system-info.js'

const execFileAsync = promisify(execFile)

/** Page-cache bytes not yet on disk, from /proc/meminfo. */
export interface DirtyMemory {
  /** Dirty: modified pages waiting to be written back. */
  dirtyBytes: number
  /** Writeback: pages being written right now. */
  writebackBytes: number
}

/**
 * Reads the Dirty and Writeback lines of /proc/meminfo text (0 when a line is missing).
 */
export function parseDirtyMemory(meminfo: string): DirtyMemory {
  const kib = (field: string): number => {
    const match = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(meminfo)
    return match ? Number(match[1]) * 1024 : 0
  }
  return { dirtyBytes: kib('Dirty'), writebackBytes: kib('Writeback') }
}

/**
 * Average number of busy cores between two readings of /proc/stat on a machine with
 * `cpuCount` cores (0 when no time passed).
 */
export function busyCoresBetween(before: MachineCpuTimes, after: MachineCpuTimes, cpuCount: number): number {
  const total = after.totalSeconds - before.totalSeconds
  if (total <= 0) return 0
  return Math.max(0, ((after.busySeconds - before.busySeconds) / total) * cpuCount)
}

/** What `flushAndWaitForQuiet` did and saw. */
export interface QuietResult {
  /** Seconds `sync` took. */
  syncSeconds: number
  /** Seconds spent waiting for the quiet window after `sync`. */
  waitSeconds: number
  /** Whether the machine was quiet in the last window (false: the timeout passed first). */
  quiet: boolean
  /** Busy cores of the whole machine in the last window. */
  busyCores: number
  /** Dirty + writeback bytes at the end. */
  dirtyBytes: number
}

/** The thresholds of a quiet machine. */
export interface QuietInit {
  /** Length of the window the machine must stay quiet, ms. @default 300 */
  windowMs?: number
  /** Busy cores (whole machine) at most. @default 0.25 */
  maxBusyCores?: number
  /** Dirty + writeback page cache at most, bytes. @default 16 MiB */
  maxDirtyBytes?: number
  /** Give up waiting (and report `quiet: false`) after this long, ms. @default 15000 */
  timeoutMs?: number
}

/**
 * Runs `sync`, then waits until one whole window passes with the machine below
 * `maxBusyCores` and the dirty page cache below `maxDirtyBytes`.
 * @throws when `sync` cannot be run
 */
export async function flushAndWaitForQuiet(init: QuietInit = {}): Promise<QuietResult> {
  const windowMs = init.windowMs ?? 300
  const maxBusyCores = init.maxBusyCores ?? 0.25
  const maxDirtyBytes = init.maxDirtyBytes ?? 16 * 1024 * 1024
  const cpuCount = Math.max(1, cpus().length)
  const syncStartedAt = performance.now()
  await execFileAsync('sync')
  const waitStartedAt = performance.now()
  const syncSeconds = (waitStartedAt - syncStartedAt) / 1000
  const deadline = waitStartedAt + (init.timeoutMs ?? 15_000)
  let busyCores = 0
  let dirtyBytes = 0
  let quiet = false
  while (!quiet) {
    const before = readMachineCpuTimes()
    await new Promise((resolve) => setTimeout(resolve, windowMs))
    busyCores = busyCoresBetween(before, readMachineCpuTimes(), cpuCount)
    const dirty = parseDirtyMemory(readFileSync('/proc/meminfo', 'utf8'))
    dirtyBytes = dirty.dirtyBytes + dirty.writebackBytes
    quiet = busyCores <= maxBusyCores && dirtyBytes <= maxDirtyBytes
    if (!quiet && performance.now() >= deadline) break
    // Dirty pages written since the sync (other processes, the servers' own logs) go too.
    if (!quiet && dirtyBytes > maxDirtyBytes) await execFileAsync('sync')
  }
  return {
    syncSeconds,
    waitSeconds: (performance.now() - waitStartedAt) / 1000,
    quiet,
    busyCores,
    dirtyBytes,
  }
}

/**
 * How fast one core of this machine is right now: sha256 MB/s (10^6 bytes) over
 * `bytes` of data, best of `runs`. On a shared host the same work can take twice as
 * long from one hour to the next; results measured on a slowed machine, CPU-bound ones
 * above all, say so next to this figure rather than in a footnote.
 */
export function probeCpuSpeed(bytes = 32 * 1024 * 1024, runs = 3): number {
  const data = Buffer.alloc(bytes, 0x5a)
  let best = 0
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now()
    createHash('sha256').update(data).digest()
    const seconds = (performance.now() - t0) / 1000
    best = Math.max(best, bytes / 1e6 / Math.max(seconds, 1e-9))
  }
  return best
}
