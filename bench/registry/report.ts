/**
 * Turns the registry benchmark's measurements into rows with a ratio (candidate /
 * baseline) and a PASS/FAIL verdict per target, and renders them as a table.
 */
import { formatNumber, formatTable, type TableCell } from '../lib/table.js'

/** How a row is judged. */
export type Target =
  /** The candidate must reach at least `min` times the baseline (higher is better). */
  | { kind: 'ratio-at-least'; min: number }
  /** The candidate's value must stay below `max` (e.g. bytes of RSS). */
  | { kind: 'below'; max: number; label: string }
  /** Reported only. */
  | { kind: 'none' }

/** One line of the report. */
export interface ReportRow {
  metric: string
  unit: string
  candidate: number
  baseline: number
  target: Target
}

/** A row with its ratio and verdict, as stored in the JSON result. */
export interface JudgedRow extends ReportRow {
  ratio: number
  verdict: 'PASS' | 'FAIL' | null
}

/** Computes ratio and verdict of every row. */
export function judgeRows(rows: ReportRow[]): JudgedRow[] {
  return rows.map((row) => {
    const ratio = row.baseline > 0 ? row.candidate / row.baseline : Number.NaN
    let verdict: JudgedRow['verdict'] = null
    if (row.target.kind === 'ratio-at-least') verdict = ratio >= row.target.min ? 'PASS' : 'FAIL'
    if (row.target.kind === 'below') verdict = row.candidate < row.target.max ? 'PASS' : 'FAIL'
    return { ...row, ratio, verdict }
  })
}

function targetText(target: Target): string {
  if (target.kind === 'ratio-at-least') return `ratio >= ${target.min}`
  if (target.kind === 'below') return target.label
  return ''
}

/** Renders judged rows as a table whose value columns are headed by the two target names. */
export function renderReport(rows: JudgedRow[], names: { candidate: string; baseline: string }): string {
  const cells: TableCell[][] = rows.map((row) => [
    row.metric,
    row.unit,
    formatNumber(row.candidate, 1),
    formatNumber(row.baseline, 1),
    Number.isFinite(row.ratio) ? row.ratio.toFixed(2) : null,
    targetText(row.target),
    row.verdict ?? '',
  ])
  return formatTable(
    [
      { header: 'metric' },
      { header: 'unit', align: 'left' },
      { header: names.candidate },
      { header: names.baseline },
      { header: `${names.candidate}/${names.baseline}` },
      { header: 'target', align: 'left' },
      { header: 'result', align: 'left' },
    ],
    cells,
  )
}
