/**
 * Dependency-free SVG line charts for benchmark reports: linear axes with round ticks,
 * one polyline per series (optionally drawn as steps, for CDFs), a legend, and panels
 * placed side by side in one file.
 */

/** One line of a chart. */
export interface ChartSeries {
  name: string
  /** [x, y] points, drawn in the order given. */
  points: ReadonlyArray<readonly [number, number]>
  /** @default a colour picked by index */
  color?: string
  /** Draw markers at the points. @default false */
  markers?: boolean
  /** An SVG stroke-dasharray, e.g. '6 3'. @default solid */
  dash?: string
}

/** A chart panel. */
export interface LineChart {
  title: string
  xLabel: string
  yLabel: string
  series: ChartSeries[]
  /** Draw every series as a right-continuous step function (a CDF). @default false */
  step?: boolean
  /** Force the axis ranges; by default they span the data (y from 0). */
  xMin?: number
  xMax?: number
  yMin?: number
  yMax?: number
  /** @default 560 */
  width?: number
  /** @default 360 */
  height?: number
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf']

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/** Round tick values covering [min, max], about `count` of them (1, 2 or 5 times a power of ten apart). */
export function niceTicks(min: number, max: number, count = 6): number[] {
  if (!(max > min)) return [min]
  const raw = (max - min) / Math.max(1, count)
  const power = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power
  const ticks: number[] = []
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
    ticks.push(Number(v.toPrecision(12)))
  }
  return ticks
}

function tickLabel(value: number): string {
  if (Math.abs(value) >= 1000 || Number.isInteger(value)) return String(Math.round(value))
  return String(Number(value.toPrecision(3)))
}

/** Renders one chart as an `<svg>` element string (with its own width and height). */
export function renderLineChart(chart: LineChart): string {
  const width = chart.width ?? 560
  const height = chart.height ?? 360
  const margin = { left: 62, right: 16, top: 34, bottom: 48 }
  const xs = chart.series.flatMap((s) => s.points.map((p) => p[0]))
  const ys = chart.series.flatMap((s) => s.points.map((p) => p[1]))
  const xTicksAll = niceTicks(chart.xMin ?? Math.min(0, ...xs), chart.xMax ?? Math.max(1e-9, ...xs))
  const yTicksAll = niceTicks(chart.yMin ?? Math.min(0, ...ys), chart.yMax ?? Math.max(1e-9, ...ys))
  const x0 = chart.xMin ?? Math.min(xTicksAll[0]!, ...xs)
  const x1 = chart.xMax ?? Math.max(xTicksAll.at(-1)!, ...xs)
  const y0 = chart.yMin ?? Math.min(yTicksAll[0]!, ...ys)
  const y1 = chart.yMax ?? Math.max(yTicksAll.at(-1)!, ...ys)
  const plotW = width - margin.left - margin.right
  const plotH = height - margin.top - margin.bottom
  const sx = (x: number): number => margin.left + (x1 > x0 ? ((x - x0) / (x1 - x0)) * plotW : 0)
  const sy = (y: number): number => margin.top + plotH - (y1 > y0 ? ((y - y0) / (y1 - y0)) * plotH : 0)
  const f = (n: number): string => n.toFixed(1)
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<title>${escapeXml(chart.title)}</title>`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="13" font-weight="bold">${escapeXml(chart.title)}</text>`,
  ]
  for (const t of xTicksAll.filter((t) => t >= x0 && t <= x1)) {
    parts.push(
      `<line x1="${f(sx(t))}" y1="${margin.top}" x2="${f(sx(t))}" y2="${margin.top + plotH}" stroke="#e5e5e5"/>`,
      `<text x="${f(sx(t))}" y="${margin.top + plotH + 15}" text-anchor="middle">${tickLabel(t)}</text>`,
    )
  }
  for (const t of yTicksAll.filter((t) => t >= y0 && t <= y1)) {
    parts.push(
      `<line x1="${margin.left}" y1="${f(sy(t))}" x2="${margin.left + plotW}" y2="${f(sy(t))}" stroke="#e5e5e5"/>`,
      `<text x="${margin.left - 6}" y="${f(sy(t) + 4)}" text-anchor="end">${tickLabel(t)}</text>`,
    )
  }
  parts.push(
    `<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`,
    `<text x="${margin.left + plotW / 2}" y="${height - 10}" text-anchor="middle">${escapeXml(chart.xLabel)}</text>`,
    `<text transform="translate(16 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(chart.yLabel)}</text>`,
  )
  chart.series.forEach((series, i) => {
    const color = series.color ?? PALETTE[i % PALETTE.length]!
    const coords: string[] = []
    series.points.forEach(([x, y], j) => {
      if (chart.step && j > 0) coords.push(`${f(sx(x))},${f(sy(series.points[j - 1]![1]))}`)
      coords.push(`${f(sx(x))},${f(sy(y))}`)
    })
    if (coords.length > 0) {
      const dash = series.dash ? ` stroke-dasharray="${series.dash}"` : ''
      parts.push(
        `<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${coords.join(' ')}"/>`,
      )
    }
    if (series.markers) {
      for (const [x, y] of series.points)
        parts.push(`<circle cx="${f(sx(x))}" cy="${f(sy(y))}" r="3" fill="${color}"/>`)
    }
    const ly = margin.top + 14 + i * 15
    parts.push(
      `<line x1="${margin.left + 10}" y1="${ly - 4}" x2="${margin.left + 30}" y2="${ly - 4}" stroke="${color}" stroke-width="2"${series.dash ? ` stroke-dasharray="${series.dash}"` : ''}/>`,
      `<text x="${margin.left + 35}" y="${ly}">${escapeXml(series.name)}</text>`,
    )
  })
  parts.push('</svg>')
  return parts.join('\n')
}

/**
 * Places rendered charts side by side in one SVG document, titled `title` (by default
 * the panels' titles joined).
 */
export function composeSvg(panels: readonly string[], title?: string): string {
  let x = 0
  let height = 0
  const placed = panels.map((panel) => {
    const w = Number(/width="(\d+)"/.exec(panel)?.[1] ?? 560)
    const h = Number(/height="(\d+)"/.exec(panel)?.[1] ?? 360)
    const out = panel.replace('<svg ', `<svg x="${x}" y="0" `)
    x += w
    height = Math.max(height, h)
    return out
  })
  const titles = panels
    .map((panel) => /<title>([^<]*)<\/title>/.exec(panel)?.[1] ?? '')
    .filter((t) => t !== '')
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${x}" height="${height}" viewBox="0 0 ${x} ${height}">`,
    `<title>${title === undefined ? titles.join('; ') : escapeXml(title)}</title>`,
    ...placed,
    '</svg>',
    '',
  ].join('\n')
}
