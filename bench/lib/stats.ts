/**
 * Small statistics over repeated benchmark measurements.
 */

/** Summary of a series of measurements. */
export interface Summary {
  n: number
  min: number
  median: number
  mean: number
  max: number
  values: number[]
}

/**
 * The median of `values` (mean of the middle two for an even count).
 * @throws {RangeError} when `values` is empty
 */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('median of an empty series')
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/**
 * Min, median, mean and max of `values`, keeping the raw values for the JSON report.
 * @throws {RangeError} when `values` is empty
 */
export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) throw new RangeError('summary of an empty series')
  const sum = values.reduce((a, b) => a + b, 0)
  return {
    n: values.length,
    min: Math.min(...values),
    median: median(values),
    mean: sum / values.length,
    max: Math.max(...values),
    values: [...values],
  }
}

/** Bytes per second as MB/s (10^6 bytes, as disk and network tools report). */
export function megabytesPerSecond(bytes: number, seconds: number): number {
  return seconds > 0 ? bytes / 1e6 / seconds : Number.NaN
}
