/**
 * The kernel's ARP (neighbour) table is one table for every network namespace, with
 * global limits (net.ipv4.neigh.default.gc_thresh1..3; 128/512/1024 on Debian). In a
 * testbed where every node talks to every other, the namespaces together need about
 * hosts² entries: at 50 nodes that is over 2,600, the kernel logs "neighbor table
 * overflow!" and new connections fail with EHOSTUNREACH or time out (nodes 34 to 50 of
 * a 50-node run could reach nothing). The testbed raises the limits for its lifetime
 * and puts the previous values back when it is removed.
 */
import { readFile, writeFile } from 'node:fs/promises'

const KNOBS = ['gc_thresh1', 'gc_thresh2', 'gc_thresh3'] as const
const path = (knob: string): string => `/proc/sys/net/ipv4/neigh/default/${knob}`

/** Limits that hold every pair of `hosts` hosts with room to spare. */
export function neighbourLimitsFor(hosts: number): [number, number, number] {
  const need = hosts * hosts
  return [need, 2 * need, 4 * need]
}

/**
 * Raises the neighbour table limits to hold `hosts` hosts talking pairwise (never
 * lowers them); returns a function that restores what it changed.
 */
export async function raiseNeighbourLimits(hosts: number): Promise<() => Promise<void>> {
  const wanted = neighbourLimitsFor(hosts)
  // thresh3 is raised first and lowered last, so it never sits below the other two.
  const restore: Array<[string, string]> = []
  for (let i = KNOBS.length - 1; i >= 0; i--) {
    const knob = KNOBS[i]!
    const before = (await readFile(path(knob), 'utf8')).trim()
    if (Number(before) >= wanted[i]!) continue
    await writeFile(path(knob), String(wanted[i]))
    restore.push([knob, before])
  }
  return async () => {
    for (const [knob, before] of restore.reverse()) {
      await writeFile(path(knob), before).catch(() => {})
    }
  }
}
