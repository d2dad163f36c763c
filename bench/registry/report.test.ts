import { describe, expect, it } from 'vitest'
import { judgeRows, renderReport } from './report.js'
import { sizeLabel } from './rows.js'

describe('judgeRows', () => {
  it('passes a throughput that reaches the baseline and fails one that does not', () => {
    const [faster, slower] = judgeRows([
      {
        metric: 'push',
        unit: 'MB/s',
        candidate: 300,
        baseline: 200,
        target: { kind: 'ratio-at-least', min: 1 },
      },
      {
        metric: 'pull',
        unit: 'MB/s',
        candidate: 100,
        baseline: 200,
        target: { kind: 'ratio-at-least', min: 1 },
      },
    ])
    expect(faster).toMatchObject({ ratio: 1.5, verdict: 'PASS' })
    expect(slower).toMatchObject({ ratio: 0.5, verdict: 'FAIL' })
  })

  it('judges a bound on the candidate alone and leaves report-only rows unjudged', () => {
    const [under, over, info] = judgeRows([
      {
        metric: 'rss',
        unit: 'MB',
        candidate: 150,
        baseline: 50,
        target: { kind: 'below', max: 200, label: '< 200 MB' },
      },
      {
        metric: 'rss',
        unit: 'MB',
        candidate: 250,
        baseline: 50,
        target: { kind: 'below', max: 200, label: '< 200 MB' },
      },
      { metric: 'cpu', unit: 's', candidate: 1, baseline: 2, target: { kind: 'none' } },
    ])
    expect(under!.verdict).toBe('PASS')
    expect(over!.verdict).toBe('FAIL')
    expect(info!.verdict).toBeNull()
  })
})

describe('renderReport', () => {
  it('heads the value columns with the server names and shows ratio and verdict', () => {
    const text = renderReport(
      judgeRows([
        {
          metric: 'push',
          unit: 'MB/s',
          candidate: 300,
          baseline: 200,
          target: { kind: 'ratio-at-least', min: 1 },
        },
      ]),
      { candidate: 'shoal', baseline: 'distribution' },
    )
    const [header, , row] = text.split('\n')
    expect(header).toMatch(/metric\s+unit\s+shoal\s+distribution\s+shoal\/distribution\s+target\s+result/)
    expect(row).toMatch(/push\s+MB\/s\s+300\s+200\s+1\.50\s+ratio >= 1\s+PASS/)
  })
})

describe('sizeLabel', () => {
  it('names whole GiB in GiB and the rest in MiB', () => {
    expect(sizeLabel(1024 ** 3)).toBe('1 GiB')
    expect(sizeLabel(512 * 1024 ** 2)).toBe('512 MiB')
    expect(sizeLabel(1.5 * 1024 ** 2)).toBe('1.5 MiB')
  })
})
