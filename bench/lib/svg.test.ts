import { describe, expect, it } from 'vitest'
import { composeSvg, niceTicks, renderLineChart } from './svg.js'

describe('svg charts', () => {
  it('picks round ticks covering the range', () => {
    expect(niceTicks(0, 10, 5)).toEqual([0, 2, 4, 6, 8, 10])
    expect(niceTicks(0, 0.9, 4)).toEqual([0, 0.5])
    expect(niceTicks(0, 0.9, 9)).toEqual([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
  })

  it('draws one polyline per series, steps doubling the points, and escapes text', () => {
    const svg = renderLineChart({
      title: 'a < b',
      xLabel: 's',
      yLabel: 'fraction',
      step: true,
      series: [
        {
          name: 'one',
          points: [
            [1, 0.5],
            [2, 1],
          ],
        },
        { name: 'two', points: [[1, 1]] },
      ],
    })
    expect(svg.match(/<polyline/g)).toHaveLength(2)
    expect(svg).toContain('a &#60; b')
    // A title element names the chart for screen readers and tooltips.
    expect(svg).toContain('<title>a &#60; b</title>')
    const first = /points="([^"]+)"/.exec(svg)![1]!.split(' ')
    expect(first).toHaveLength(3)
  })

  it('composes panels side by side', () => {
    const panel = renderLineChart({
      title: 't',
      xLabel: 'x',
      yLabel: 'y',
      width: 100,
      height: 50,
      series: [],
    })
    const doc = composeSvg([panel, panel])
    expect(doc).toMatch(/^<svg [^>]*width="200" height="50"/)
    expect(doc).toContain('<svg x="100" y="0"')
    expect(doc.split('\n')[1]).toBe('<title>t; t</title>')
    expect(composeSvg([panel], 'x & y').split('\n')[1]).toBe('<title>x &#38; y</title>')
  })
})
