/**
 * Resident memory and CPU time of another process, read from Linux's /proc. The
 * benchmarks use it to report a server's peak RSS and CPU seconds during one phase.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'

/** Clock ticks per second of /proc/<pid>/stat times; 100 on every Linux we run on. */
const CLOCK_TICKS_PER_SECOND = 100

/** Memory of a process at one moment, in bytes. */
export interface ProcessMemory {
  /** Current resident set size (VmRSS). */
  rssBytes: number
  /** Highest resident set size since start or since the last `resetPeakRss` (VmHWM). */
  peakRssBytes: number
}

/**
 * Reads VmRSS and VmHWM of `pid`.
 * @throws when the process does not exist or /proc is not available
 */
export function readProcessMemory(pid: number): ProcessMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kib = (field: string): number => {
    const match = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status)
    return match ? Number(match[1]) * 1024 : 0
  }
  return { rssBytes: kib('VmRSS'), peakRssBytes: kib('VmHWM') }
}

/**
 * User plus system CPU seconds `pid` has used so far (its own threads, not children).
 * @throws when the process does not exist or /proc is not available
 */
export function readProcessCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // The command name (field 2) may hold spaces and parentheses; fields after it are plain.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // After the name: state is index 0, so utime (field 14) is 11 and stime (field 15) is 12.
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND
}

/**
 * Resets the kernel's peak-RSS counter (VmHWM) of `pid` to its current RSS by writing
 * 5 to /proc/<pid>/clear_refs. Returns false when that is not allowed, in which case
 * the sampled maximum is the only peak available.
 */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5')
    return true
  } catch {
    return false
  }
}

/** What a sampler saw between `start` and `stop`. */
export interface ProcessSample {
  /** Largest VmRSS seen by polling, or VmHWM when the kernel counter could be reset. */
  peakRssBytes: number
  /** Largest VmRSS seen by polling alone. */
  sampledPeakRssBytes: number
  /** VmRSS when sampling stopped. */
  endRssBytes: number
  /** CPU seconds (user + system) the process used between start and stop. */
  cpuSeconds: number
  /** Wall-clock seconds between start and stop. */
  wallSeconds: number
  samples: number
}

/** Polls one process's RSS while a benchmark phase runs. */
export interface ProcessSampler {
  start(): void
  /** Stops polling and returns what was seen; safe to call twice (returns the same). */
  stop(): ProcessSample
}

/**
 * Creates a sampler for `pid` that polls VmRSS every `intervalMs` and also resets and
 * reads the kernel's own peak counter, so short spikes between polls are not missed.
 */
export function createProcessSampler(init: { pid: number; intervalMs?: number }): ProcessSampler {
  const { pid } = init
  const intervalMs = init.intervalMs ?? 50
  let timer: NodeJS.Timeout | undefined
  let sampledPeak = 0
  let samples = 0
  let hwmReset = false
  let cpuStart = 0
  let wallStart = 0
  let result: ProcessSample | undefined

  const poll = (): number => {
    try {
      const { rssBytes } = readProcessMemory(pid)
      sampledPeak = Math.max(sampledPeak, rssBytes)
      samples++
      return rssBytes
    } catch {
      return 0
    }
  }

  return {
    start() {
      hwmReset = resetPeakRss(pid)
      cpuStart = readProcessCpuSeconds(pid)
      wallStart = performance.now()
      poll()
      timer = setInterval(poll, intervalMs)
      timer.unref()
    },
    stop() {
      if (result) return result
      clearInterval(timer)
      const endRssBytes = poll()
      let peak = sampledPeak
      if (hwmReset) {
        try {
          peak = Math.max(peak, readProcessMemory(pid).peakRssBytes)
        } catch {}
      }
      let cpuSeconds = Number.NaN
      try {
        cpuSeconds = readProcessCpuSeconds(pid) - cpuStart
      } catch {}
      result = {
        peakRssBytes: peak,
        sampledPeakRssBytes: sampledPeak,
        endRssBytes,
        cpuSeconds,
        wallSeconds: (performance.now() - wallStart) / 1000,
        samples,
      }
      return result
    },
  }
}

/**
 * CPU seconds of the children `pid` has already waited for (cutime + cstime), e.g. the
 * load generators a benchmark ran with execFile.
 * @throws when the process does not exist or /proc is not available
 */
export function readWaitedChildrenCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[13]) + Number(fields[14])) / CLOCK_TICKS_PER_SECOND
}

/**
 * Waits until `pid` has been nearly idle (CPU below `maxCores` cores) for one
 * `windowMs` window, so that work a server does in the background after answering
 * (hashing, indexing) is finished before the next measurement starts. Returns false
 * when `timeoutMs` passes first or the process is gone.
 */
export async function waitForIdle(
  pid: number,
  init: { windowMs?: number; maxCores?: number; timeoutMs?: number } = {},
): Promise<boolean> {
  const windowMs = init.windowMs ?? 300
  const maxCores = init.maxCores ?? 0.05
  const deadline = Date.now() + (init.timeoutMs ?? 30_000)
  while (Date.now() < deadline) {
    let before: number
    try {
      before = readProcessCpuSeconds(pid)
    } catch {
      return false
    }
    const startedAt = performance.now()
    await new Promise((resolve) => setTimeout(resolve, windowMs))
    let after: number
    try {
      after = readProcessCpuSeconds(pid)
    } catch {
      return false
    }
    const cores = (after - before) / ((performance.now() - startedAt) / 1000)
    if (cores <= maxCores) return true
  }
  return false
}

/** Counters of a process so far, from /proc/<pid>/stat, /status and /io. */
export interface ProcessCounters {
  userSeconds: number
  systemSeconds: number
  /** read-like and write-like system calls (syscr, syscw in /proc/<pid>/io). */
  readCalls: number
  writeCalls: number
  voluntarySwitches: number
  involuntarySwitches: number
}

/**
 * Reads CPU time, system call counts and context switches of `pid` (all threads).
 * @throws when the process does not exist or /proc is not readable
 */
export function readProcessCounters(pid: number): ProcessCounters {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const io = readFileSync(`/proc/${pid}/io`, 'utf8')
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (text: string, name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text)
    return match ? Number(match[1]) : 0
  }
  return {
    userSeconds: Number(fields[11]) / CLOCK_TICKS_PER_SECOND,
    systemSeconds: Number(fields[12]) / CLOCK_TICKS_PER_SECOND,
    readCalls: field(io, 'syscr'),
    writeCalls: field(io, 'syscw'),
    voluntarySwitches: field(status, 'voluntary_ctxt_switches'),
    involuntarySwitches: field(status, 'nonvoluntary_ctxt_switches'),
  }
}

/**
 * CPU seconds (user + system) of `pid`'s live threads, summed by thread name: the main
 * thread carries the process's name, V8's compiler and GC helpers are "V8 DefaultWorke",
 * libuv's pool "libuv-worker". Threads that ended are not counted.
 */
export function readThreadCpuSeconds(pid: number): Record<string, number> {
  const out: Record<string, number> = {}
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let stat: string
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
    } catch {
      continue
    }
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const key = tid === String(pid) ? 'main' : name
    out[key] = (out[key] ?? 0) + (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND
  }
  return out
}
