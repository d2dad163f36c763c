/**
 * Plain-text tables for benchmark reports: fixed-width columns, numbers right-aligned,
 * so that a report reads the same in a terminal, a CI log and a Markdown code block.
 */

/** A column of a table: its heading and how its cells are aligned. */
export interface TableColumn {
  header: string
  /** @default 'left' for the first column, 'right' for the others */
  align?: 'left' | 'right'
}

/** One cell: text as-is, numbers through `formatNumber`, null/undefined as an em dash. */
export type TableCell = string | number | null | undefined

/**
 * Formats a number for a report: integers keep their digits, others get `digits`
 * significant decimals scaled to the magnitude (1234.5, 12.35, 0.1235).
 */
export function formatNumber(value: number, digits = 2): string {
  if (!Number.isFinite(value)) return String(value)
  if (Number.isInteger(value)) return String(value)
  const abs = Math.abs(value)
  if (abs >= 1000) return value.toFixed(0)
  if (abs >= 100) return value.toFixed(Math.max(0, digits - 1))
  if (abs >= 1) return value.toFixed(digits)
  return value.toFixed(digits + 2)
}

function cellText(cell: TableCell): string {
  if (cell === null || cell === undefined) return '—'
  if (typeof cell === 'number') return formatNumber(cell)
  return cell
}

/**
 * Renders rows under headings with a separator line. Rows shorter than the column
 * list are padded with empty cells; longer rows are an error (a programming mistake).
 * @throws {RangeError} when a row has more cells than there are columns
 */
export function formatTable(columns: TableColumn[], rows: TableCell[][]): string {
  const texts = rows.map((row) => {
    if (row.length > columns.length) {
      throw new RangeError(`row has ${row.length} cells but the table has ${columns.length} columns`)
    }
    return columns.map((_, i) => (i < row.length ? cellText(row[i]) : ''))
  })
  const widths = columns.map((column, i) =>
    Math.max(column.header.length, ...texts.map((row) => [...row[i]!].length)),
  )
  const pad = (text: string, i: number): string => {
    const align = columns[i]!.align ?? (i === 0 ? 'left' : 'right')
    const fill = ' '.repeat(widths[i]! - [...text].length)
    return align === 'left' ? text + fill : fill + text
  }
  const lines = [
    columns.map((column, i) => pad(column.header, i)).join('  '),
    widths.map((width) => '-'.repeat(width)).join('  '),
    ...texts.map((row) => row.map(pad).join('  ')),
  ]
  return lines.map((line) => line.trimEnd()).join('\n')
}
