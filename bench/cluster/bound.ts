/**
 * The fluid lower bound on the time for one file to reach every node of a swarm
 * (Kumar and Ross, "Peer-assisted file distribution: the minimum distribution time",
 * 2006): no schedule, however clever, finishes before the origin has sent one copy, the
 * slowest node has received one, and the whole swarm's upload capacity has carried the
 * N copies the nodes receive.
 */

/** Bandwidths and size of one distribution. */
export interface FluidBoundInit {
  /** F: the bytes every node must receive. */
  fileBytes: number
  /** N: how many nodes receive it. */
  nodes: number
  /** u_s: the origin's upload, in megabits per second. */
  originMbit: number
  /** u_i: each node's upload, in megabits per second (the same for all). */
  nodeUpMbit: number
  /** d_min: the slowest node's download, in megabits per second. */
  nodeDownMbit: number
}

/** The bound and its three terms, in seconds. */
export interface FluidBound {
  seconds: number
  originTermSeconds: number
  downloadTermSeconds: number
  swarmTermSeconds: number
  /** Which term binds. */
  limitedBy: 'origin upload' | 'node download' | 'swarm upload'
}

/**
 * T >= max(F/u_s, F/d_min, N*F/(u_s + sum u_i)).
 * @throws {RangeError} when a bandwidth is not positive or N < 1
 */
export function fluidBound(init: FluidBoundInit): FluidBound {
  if (init.nodes < 1) throw new RangeError('at least one node')
  if (!(init.originMbit > 0 && init.nodeUpMbit >= 0 && init.nodeDownMbit > 0)) {
    throw new RangeError('bandwidths must be positive')
  }
  const bits = init.fileBytes * 8
  const originTermSeconds = bits / (init.originMbit * 1e6)
  const downloadTermSeconds = bits / (init.nodeDownMbit * 1e6)
  const swarmTermSeconds = (init.nodes * bits) / ((init.originMbit + init.nodes * init.nodeUpMbit) * 1e6)
  const terms = [
    ['origin upload', originTermSeconds],
    ['node download', downloadTermSeconds],
    ['swarm upload', swarmTermSeconds],
  ] as const
  const [limitedBy, seconds] = terms.reduce((a, b) => (b[1] > a[1] ? b : a))
  return { seconds, originTermSeconds, downloadTermSeconds, swarmTermSeconds, limitedBy }
}

/**
 * The nearest-rank percentile `p` (0..100) of `values`.
 * @throws {RangeError} when `values` is empty
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) throw new RangeError('percentile of an empty series')
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length))
  return sorted[Math.min(sorted.length, rank) - 1]!
}
