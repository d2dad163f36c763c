/**
 * A description of the machine a benchmark ran on, stored with its results so numbers
 * from different machines or busy moments are not compared blindly.
 */
import { readFileSync } from 'node:fs'
import { cpus, loadavg, totalmem } from 'node:os'

/** Machine and load at one moment. */
export interface SystemInfo {
  cpuModel: string
  cpuCount: number
  totalMemoryBytes: number
  /** 1, 5 and 15 minute load averages. */
  loadAverage: number[]
  nodeVersion: string
  platform: string
}

/** Describes this machine now. */
export function systemInfo(): SystemInfo {
  const list = cpus()
  return {
    cpuModel: list[0]?.model ?? 'unknown',
    cpuCount: list.length,
    totalMemoryBytes: totalmem(),
    loadAverage: loadavg().map((value) => Math.round(value * 100) / 100),
    nodeVersion: process.version,
    platform: `${process.platform}-${process.arch}`,
  }
}

/** CPU time of the whole machine so far, in seconds summed over all cores. */
export interface MachineCpuTimes {
  busySeconds: number
  totalSeconds: number
}

/**
 * Reads the machine's CPU times from /proc/stat (busy = everything but idle and iowait).
 * @throws when /proc/stat cannot be read
 */
export function readMachineCpuTimes(): MachineCpuTimes {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? ''
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number)
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = ticks
  const busy = user + nice + system + irq + softirq + steal
  return { busySeconds: busy / 100, totalSeconds: (busy + idle + iowait) / 100 }
}
