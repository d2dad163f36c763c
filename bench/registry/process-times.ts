/**
 * User and system CPU time and page faults of a server process, read from Linux's
 * /proc/<pid>/stat. The registry benchmark records them per operation so that a
 * server that falls into a slow state (much more user CPU and many more minor faults
 * for the same bytes) shows it in the report, not only in its throughput.
 */
import { readFileSync } from 'node:fs'

/** Clock ticks per second of /proc/<pid>/stat times; 100 on every Linux we run on. */
const CLOCK_TICKS_PER_SECOND = 100

/** Counters of one process at one moment (or their difference over an interval). */
export interface ProcessTimes {
  /** CPU seconds spent in user mode. */
  userSeconds: number
  /** CPU seconds spent in the kernel on the process's behalf. */
  systemSeconds: number
  /** Page faults served without disk I/O (a fresh page mapped, a shared page reused). */
  minorFaults: number
  /** Page faults that had to read from disk. */
  majorFaults: number
}

/**
 * Parses the text of /proc/<pid>/stat.
 * @throws when the text does not have the fields of that file
 */
export function parseProcessTimes(stat: string): ProcessTimes {
  // The command name (field 2) may hold spaces and parentheses; fields after it are plain.
  const close = stat.lastIndexOf(')')
  const fields = stat.slice(close + 2).split(' ')
  if (close < 0 || fields.length < 13) throw new Error('not the content of /proc/<pid>/stat')
  // After the name, index 0 is field 3 (state): minflt is field 10, majflt 12, utime 14, stime 15.
  const field = (index: number): number => {
    const value = Number(fields[index])
    if (!Number.isFinite(value)) throw new Error(`field ${index + 3} of /proc/<pid>/stat is not a number`)
    return value
  }
  return {
    minorFaults: field(7),
    majorFaults: field(9),
    userSeconds: field(11) / CLOCK_TICKS_PER_SECOND,
    systemSeconds: field(12) / CLOCK_TICKS_PER_SECOND,
  }
}

/**
 * Reads the counters of `pid` (its own threads, not its children).
 * @throws when the process does not exist or /proc is not available
 */
export function readProcessTimes(pid: number): ProcessTimes {
  return parseProcessTimes(readFileSync(`/proc/${pid}/stat`, 'utf8'))
}

/** `after` minus `before`, field by field. */
export function diffProcessTimes(before: ProcessTimes, after: ProcessTimes): ProcessTimes {
  return {
    userSeconds: after.userSeconds - before.userSeconds,
    systemSeconds: after.systemSeconds - before.systemSeconds,
    minorFaults: after.minorFaults - before.minorFaults,
    majorFaults: after.majorFaults - before.majorFaults,
  }
}
