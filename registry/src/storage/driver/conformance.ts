/**
 * The conformance suite every StorageDriver must pass: one factory, the same
 * assertions. Call it from a driver's test file:
 *
 *   describeDriverConformance('memory', async () => ({ driver: createMemoryDriver(), cleanup: async () => {} }))
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { StorageDriver } from './index.js'

/** Builds a fresh, empty driver for one test and tears it down afterwards. */
export type DriverFactory = () => Promise<{ driver: StorageDriver; cleanup: () => Promise<void> }>

/** Paths that every driver must reject with StoragePathInvalidError. */
export const INVALID_PATHS: readonly string[] = [
  '',
  'relative',
  'a/b',
  '/a/',
  '//a',
  '/a//b',
  '/..',
  '/.',
  '/../etc/passwd',
  '/a/../../b',
  '/a/./b',
  '/a/..',
  '/.hidden',
  '/a/.shoal-tmp-x',
  '/a\0b',
  '/a/b\0',
  '/%2e%2e/x',
  '/a/%2E%2E/b',
  '/a%2fb',
  '/..%2f..%2fetc',
  '/a\\..\\b',
  '/a:b',
  'C:\\Windows',
  '\\\\server\\share',
  '/a/b c',
  '/a/\u2025',
  `/${'x'.repeat(300)}`,
]

async function text(stream: AsyncIterable<unknown>): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array))
  return Buffer.concat(chunks).toString('utf8')
}

const bytes = (s: string) => new Uint8Array(Buffer.from(s))

/** Optional driver capabilities the suite checks when a driver declares them. */
export interface DriverFeatures {
  /** The driver implements `openFile` (positional reads). */
  openFile?: boolean
}

/** Registers the conformance tests for one driver implementation. */
export function describeDriverConformance(
  name: string,
  factory: DriverFactory,
  features: DriverFeatures = {},
): void {
  describe(`StorageDriver conformance: ${name}`, () => {
    let driver: StorageDriver
    let cleanup: () => Promise<void>

    beforeEach(async () => {
      ;({ driver, cleanup } = await factory())
    })
    afterEach(async () => {
      await cleanup()
    })

    it('round-trips small files and replaces them', async () => {
      await driver.putContent('/a/b/c', bytes('one'))
      expect(Buffer.from(await driver.getContent('/a/b/c')).toString()).toBe('one')
      await driver.putContent('/a/b/c', bytes('second'))
      expect(Buffer.from(await driver.getContent('/a/b/c')).toString()).toBe('second')
      await driver.putContent('/a/empty', new Uint8Array(0))
      expect((await driver.getContent('/a/empty')).byteLength).toBe(0)
    })

    it('stats files and directories and answers undefined for missing paths', async () => {
      const before = Date.now()
      await driver.putContent('/d/f', bytes('12345'))
      const file = await driver.stat('/d/f')
      expect(file).toMatchObject({ path: '/d/f', size: 5, isDirectory: false })
      expect(file!.modifiedAt).toBeGreaterThan(before - 5_000)
      expect(await driver.stat('/d')).toMatchObject({ isDirectory: true, size: 0 })
      expect(await driver.stat('/missing')).toBeUndefined()
      expect(await driver.stat('/d/f/under-a-file')).toBeUndefined()
    })

    it('reports missing files with StoragePathNotFoundError', async () => {
      await driver.putContent('/dir/file', bytes('x'))
      await expect(driver.getContent('/nope')).rejects.toMatchObject({ name: 'StoragePathNotFoundError' })
      await expect(driver.getContent('/dir')).rejects.toMatchObject({ name: 'StoragePathNotFoundError' })
      await expect(driver.reader('/nope')).rejects.toMatchObject({ name: 'StoragePathNotFoundError' })
      await expect(driver.truncate('/nope', 0)).rejects.toMatchObject({ name: 'StoragePathNotFoundError' })
      await expect(driver.move('/nope', '/other')).rejects.toMatchObject({ name: 'StoragePathNotFoundError' })
    })

    it('reads ranges, clamping the length and yielding nothing past the end', async () => {
      await driver.putContent('/r', bytes('0123456789'))
      expect(await text(await driver.reader('/r'))).toBe('0123456789')
      expect(await text(await driver.reader('/r', { offset: 3 }))).toBe('3456789')
      expect(await text(await driver.reader('/r', { offset: 3, length: 4 }))).toBe('3456')
      expect(await text(await driver.reader('/r', { offset: 8, length: 100 }))).toBe('89')
      expect(await text(await driver.reader('/r', { offset: 10 }))).toBe('')
      expect(await text(await driver.reader('/r', { offset: 50 }))).toBe('')
      expect(await text(await driver.reader('/r', { offset: 2, length: 0 }))).toBe('')
      await expect(driver.reader('/r', { offset: -1 })).rejects.toThrow(RangeError)
    })

    it('keeps an open reader valid when the file is deleted', async () => {
      await driver.putContent('/gone', bytes('still here'))
      const stream = await driver.reader('/gone')
      await driver.delete('/gone')
      expect(await text(stream)).toBe('still here')
      expect(await driver.stat('/gone')).toBeUndefined()
    })

    if (features.openFile === true) {
      it('reads files by position into reused buffers (openFile)', async () => {
        expect(driver.openFile).toBeTypeOf('function')
        const openFile = driver.openFile!.bind(driver)
        await driver.putContent('/p', bytes('0123456789'))
        const file = await openFile('/p')
        expect(file.size).toBe(10)
        const buffer = Buffer.alloc(4)
        expect(await file.read(buffer, 4, 3)).toBe(4)
        expect(buffer.toString()).toBe('3456')
        expect(await file.read(buffer, 4, 8)).toBe(2)
        expect(buffer.subarray(0, 2).toString()).toBe('89')
        expect(await file.read(buffer, 4, 10)).toBe(0)
        // Still readable after the file is deleted.
        await driver.delete('/p')
        expect(await file.read(buffer, 2, 0)).toBe(2)
        expect(buffer.subarray(0, 2).toString()).toBe('01')
        await file.close()
        await file.close()
        await expect(openFile('/p')).rejects.toMatchObject({ name: 'StoragePathNotFoundError' })
        await driver.putContent('/dir/f', bytes('x'))
        await expect(openFile('/dir')).rejects.toMatchObject({ name: 'StoragePathNotFoundError' })
        await expect(openFile('/a/../b')).rejects.toMatchObject({ name: 'StoragePathInvalidError' })
      })
    }

    it('writes, appends, truncates and cancels streamed files', async () => {
      const w = await driver.writer('/up/data')
      await w.write(bytes('abc'))
      await w.write(bytes('def'))
      expect(w.size).toBe(6)
      await w.commit()
      await w.close()
      await w.close()
      expect(Buffer.from(await driver.getContent('/up/data')).toString()).toBe('abcdef')

      const a = await driver.writer('/up/data', { append: true })
      expect(a.size).toBe(6)
      await a.write(bytes('gh'))
      await a.commit()
      await a.close()
      expect(Buffer.from(await driver.getContent('/up/data')).toString()).toBe('abcdefgh')

      await driver.truncate('/up/data', 3)
      expect(Buffer.from(await driver.getContent('/up/data')).toString()).toBe('abc')
      expect((await driver.stat('/up/data'))!.size).toBe(3)

      const t = await driver.writer('/up/data')
      expect(t.size).toBe(0)
      await t.write(bytes('new'))
      await t.close()
      expect(Buffer.from(await driver.getContent('/up/data')).toString()).toBe('new')

      const c = await driver.writer('/up/cancelled')
      await c.write(bytes('zzz'))
      await c.cancel()
      expect(await driver.stat('/up/cancelled')).toBeUndefined()

      const fresh = await driver.writer('/up/appended-new', { append: true })
      expect(fresh.size).toBe(0)
      await fresh.write(bytes('q'))
      await fresh.close()
      expect(Buffer.from(await driver.getContent('/up/appended-new')).toString()).toBe('q')
    })

    it('lists direct children sorted, and nothing for a missing directory', async () => {
      await driver.putContent('/l/b', bytes('1'))
      await driver.putContent('/l/a/x', bytes('2'))
      await driver.putContent('/l/c/y/z', bytes('3'))
      await driver.putContent('/l/B', bytes('4'))
      expect(await driver.list('/l')).toEqual(['B', 'a', 'b', 'c'])
      expect(await driver.list('/l/c')).toEqual(['y'])
      expect(await driver.list('/missing')).toEqual([])
      expect(await driver.list('/')).toEqual(['l'])
    })

    it('lets concurrent readers see a whole old or new version, never a mix', async () => {
      const a = new Uint8Array(256 * 1024).fill(0x61)
      const b = new Uint8Array(256 * 1024).fill(0x62)
      await driver.putContent('/atomic', a)
      const writes = (async () => {
        for (let i = 0; i < 10; i++) await driver.putContent('/atomic', i % 2 === 0 ? b : a)
      })()
      const seen = new Set<string>()
      for (let i = 0; i < 30; i++) {
        const got = Buffer.from(await driver.getContent('/atomic'))
        expect(got.length).toBe(a.length)
        expect(got.equals(Buffer.from(a)) || got.equals(Buffer.from(b))).toBe(true)
        seen.add(got.subarray(0, 1).toString())
      }
      await writes
      expect(seen.size).toBeGreaterThan(0)
    })

    it('never lists temporary files of atomic writes', async () => {
      for (let i = 0; i < 5; i++) await driver.putContent('/t/file', bytes(`v${i}`))
      expect(await driver.list('/t')).toEqual(['file'])
    })

    it('moves files (creating parents, replacing the target) and directories', async () => {
      await driver.putContent('/m/src', bytes('payload'))
      await driver.move('/m/src', '/n/deep/dst')
      expect(await driver.stat('/m/src')).toBeUndefined()
      expect(Buffer.from(await driver.getContent('/n/deep/dst')).toString()).toBe('payload')

      await driver.putContent('/m/other', bytes('replacement'))
      await driver.move('/m/other', '/n/deep/dst')
      expect(Buffer.from(await driver.getContent('/n/deep/dst')).toString()).toBe('replacement')

      await driver.putContent('/tree/a/1', bytes('1'))
      await driver.putContent('/tree/b', bytes('2'))
      await driver.move('/tree', '/moved/tree')
      expect(await driver.list('/moved/tree')).toEqual(['a', 'b'])
      expect(Buffer.from(await driver.getContent('/moved/tree/a/1')).toString()).toBe('1')
      expect(await driver.stat('/tree')).toBeUndefined()
    })

    it('deletes files and trees, and ignores missing paths', async () => {
      await driver.putContent('/x/y/z', bytes('1'))
      await driver.putContent('/x/w', bytes('2'))
      await driver.delete('/x/w')
      expect(await driver.list('/x')).toEqual(['y'])
      await driver.delete('/x')
      expect(await driver.stat('/x')).toBeUndefined()
      expect(await driver.stat('/x/y/z')).toBeUndefined()
      await driver.delete('/never-existed')
      await driver.delete('/x/y/z')
    })

    it('rejects every malformed or escaping path before touching storage', async () => {
      for (const p of INVALID_PATHS) {
        const reject = { name: 'StoragePathInvalidError' }
        await expect(driver.stat(p), JSON.stringify(p)).rejects.toMatchObject(reject)
        await expect(driver.getContent(p), JSON.stringify(p)).rejects.toMatchObject(reject)
        await expect(driver.putContent(p, bytes('x')), JSON.stringify(p)).rejects.toMatchObject(reject)
        await expect(driver.reader(p), JSON.stringify(p)).rejects.toMatchObject(reject)
        await expect(driver.writer(p), JSON.stringify(p)).rejects.toMatchObject(reject)
        await expect(driver.truncate(p, 0), JSON.stringify(p)).rejects.toMatchObject(reject)
        await expect(driver.list(p), JSON.stringify(p)).rejects.toMatchObject(reject)
        await expect(driver.move(p, '/ok'), JSON.stringify(p)).rejects.toMatchObject(reject)
        await expect(driver.move('/ok', p), JSON.stringify(p)).rejects.toMatchObject(reject)
        await expect(driver.delete(p), JSON.stringify(p)).rejects.toMatchObject(reject)
      }
      // The root is a directory, not a file.
      await expect(driver.putContent('/', bytes('x'))).rejects.toMatchObject({
        name: 'StoragePathInvalidError',
      })
      expect(await driver.list('/')).toEqual([])
    })

    it('honours an aborted signal', async () => {
      const signal = AbortSignal.abort()
      await expect(driver.putContent('/s', bytes('x'), { signal })).rejects.toThrow()
      expect(await driver.stat('/s')).toBeUndefined()
    })

    it('reports free space as a number or not at all', async () => {
      const free = await driver.freeSpace?.()
      expect(free === undefined || (typeof free === 'number' && free >= 0)).toBe(true)
    })
  })
}
