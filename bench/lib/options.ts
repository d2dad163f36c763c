/** Checking benchmark command-line options, collecting every problem before failing. */

/**
 * Returns a reader of positive numeric options: `positive(name, raw, fallback)` gives
 * `fallback` when the option is absent, else its value, and records a problem in
 * `problems` when the value is not a positive finite number.
 */
export function positiveOptionReader(
  problems: string[],
): (name: string, raw: string | undefined, fallback: number) => number {
  return (name, raw, fallback) => {
    if (raw === undefined) return fallback
    const value = Number(raw)
    if (!Number.isFinite(value) || value <= 0)
      problems.push(`--${name} must be a positive number, got ${raw}`)
    return value
  }
}
