import { describe, expect, it } from 'vitest'
import { contentRange, parseUploadRange, resolveRange, uploadRangeHeader } from './range.js'

describe('byte ranges', () => {
  it('resolves single byte ranges against the size', () => {
    expect(resolveRange('bytes=0-', 10)).toEqual({ start: 0, end: 9 })
    expect(resolveRange('bytes=3-5', 10)).toEqual({ start: 3, end: 5 })
    expect(resolveRange('bytes=3-500', 10)).toEqual({ start: 3, end: 9 })
    expect(resolveRange('bytes=-3', 10)).toEqual({ start: 7, end: 9 })
    expect(resolveRange('bytes=-30', 10)).toEqual({ start: 0, end: 9 })
    expect(resolveRange(' bytes=9-9 ', 10)).toEqual({ start: 9, end: 9 })
  })

  it('throws RangeInvalidError with the size for unsatisfiable ranges', () => {
    for (const header of ['bytes=10-', 'bytes=10-20', 'bytes=-0']) {
      let caught: unknown
      try {
        resolveRange(header, 10)
      } catch (err) {
        caught = err
      }
      expect((caught as Error).name, header).toBe('RangeInvalidError')
      expect((caught as { detail: unknown }).detail, header).toEqual({ size: 10 })
    }
    expect(() => resolveRange('bytes=0-', 0)).toThrow(expect.objectContaining({ name: 'RangeInvalidError' }))
    expect(() => resolveRange('bytes=-5', 0)).toThrow(expect.objectContaining({ name: 'RangeInvalidError' }))
  })

  it('ignores what is not one valid byte range', () => {
    for (const header of [
      '',
      'bytes=',
      'bytes=-',
      'bytes=5-2',
      'bytes=0-1,3-4',
      'items=0-1',
      'bytes=a-',
      '0-1',
    ]) {
      expect(resolveRange(header, 10), header).toBeUndefined()
    }
    expect(resolveRange(`bytes=0-${'9'.repeat(30)}`, 10)).toBeUndefined()
  })

  it('formats Content-Range and the upload Range header', () => {
    expect(contentRange({ start: 2, end: 4 }, 10)).toBe('bytes 2-4/10')
    expect(uploadRangeHeader(0)).toBe('0-0')
    expect(uploadRangeHeader(1)).toBe('0-0')
    expect(uploadRangeHeader(100)).toBe('0-99')
  })

  it('parses upload Content-Range and refuses malformed ones', () => {
    expect(parseUploadRange('0-99')).toEqual({ start: 0, length: 100 })
    expect(parseUploadRange('bytes 100-199')).toEqual({ start: 100, length: 100 })
    expect(parseUploadRange('bytes=5-5')).toEqual({ start: 5, length: 1 })
    for (const header of ['', '5', '5-', '-5', '9-5', 'a-b', '0-1/2', `0-${'9'.repeat(20)}`]) {
      expect(() => parseUploadRange(header), header).toThrow(
        expect.objectContaining({ name: 'RangeInvalidError' }),
      )
    }
  })
})
