/**
 * Progress lines for long benchmarks. They go to stderr so that stdout holds only the
 * report and can be redirected on its own.
 */

const startedAt = performance.now()

/** Writes one progress line to stderr, prefixed with the seconds since the process began. */
export function progress(message: string): void {
  const seconds = ((performance.now() - startedAt) / 1000).toFixed(1).padStart(6)
  process.stderr.write(`[${seconds}s] ${message}\n`)
}
