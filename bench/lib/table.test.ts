import { describe, expect, it } from 'vitest'
import { formatNumber, formatTable } from './table.js'

describe('formatTable', () => {
  it('aligns text left and numbers right under a separator', () => {
    const text = formatTable(
      [{ header: 'metric' }, { header: 'value' }],
      [
        ['push', 123.456],
        ['pull throughput', 7],
      ],
    )
    expect(text.split('\n')).toEqual([
      'metric           value',
      '---------------  -----',
      'push             123.5',
      'pull throughput      7',
    ])
  })

  it('renders missing cells as an em dash and rejects rows that are too long', () => {
    expect(formatTable([{ header: 'a' }, { header: 'b' }], [['x', null]])).toContain('x  —')
    expect(() => formatTable([{ header: 'a' }], [['x', 'y']])).toThrow(RangeError)
  })
})

describe('formatNumber', () => {
  it('scales decimals to the magnitude', () => {
    expect(formatNumber(1234.5)).toBe('1235')
    expect(formatNumber(12.345)).toBe('12.35')
    expect(formatNumber(0.12345)).toBe('0.1235')
    expect(formatNumber(42)).toBe('42')
  })
})
