import * as fs from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { describeDriverConformance, INVALID_PATHS } from './conformance.js'
import { createFilesystemDriver } from './filesystem.js'
import type { StorageDriver } from './index.js'

describeDriverConformance(
  'filesystem',
  async () => {
    const dir = await fs.mkdtemp(join(tmpdir(), 'shoal-fsdriver-'))
    return {
      driver: createFilesystemDriver({ root: join(dir, 'root') }),
      cleanup: () => fs.rm(dir, { recursive: true, force: true }),
    }
  },
  { openFile: true },
)

describe('filesystem driver confinement', () => {
  let dir: string
  let root: string
  let driver: StorageDriver

  beforeEach(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'shoal-fsdriver-'))
    root = join(dir, 'root')
    driver = createFilesystemDriver({ root })
    await fs.writeFile(join(dir, 'secret'), 'do not touch')
    await fs.mkdir(join(dir, 'rootsibling'))
    await fs.writeFile(join(dir, 'rootsibling', 'f'), 'sibling')
  })
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true })
  })

  it('maps driver paths to files under the root', async () => {
    await driver.putContent('/blobs/sha256/ab/data', new Uint8Array([1, 2, 3]))
    expect([...(await fs.readFile(join(root, 'blobs', 'sha256', 'ab', 'data')))]).toEqual([1, 2, 3])
  })

  it('cannot read, write, move or delete anything outside the root', async () => {
    const attempts = [
      ...INVALID_PATHS,
      '/../secret',
      '/../rootsibling/f',
      '/a/../../secret',
      `/${dir}/secret`,
      '/%2e%2e/secret',
      '/..%2fsecret',
      '/.%2e/secret',
      '/\0/../secret',
    ]
    for (const p of attempts) {
      await expect(driver.getContent(p), p).rejects.toMatchObject({ name: 'StoragePathInvalidError' })
      await expect(driver.putContent(p, new Uint8Array([0])), p).rejects.toMatchObject({
        name: 'StoragePathInvalidError',
      })
      await expect(driver.delete(p), p).rejects.toMatchObject({ name: 'StoragePathInvalidError' })
      await expect(driver.move(p, '/stolen'), p).rejects.toMatchObject({ name: 'StoragePathInvalidError' })
      await expect(driver.list(p), p).rejects.toMatchObject({ name: 'StoragePathInvalidError' })
    }
    expect(await fs.readFile(join(dir, 'secret'), 'utf8')).toBe('do not touch')
    expect(await fs.readFile(join(dir, 'rootsibling', 'f'), 'utf8')).toBe('sibling')
    // Nothing new appeared next to the root (the root itself is created lazily).
    expect((await fs.readdir(dir)).filter((n) => n !== 'root').sort()).toEqual(['rootsibling', 'secret'])
  })

  it('reads an absolute host path as a path inside the root', async () => {
    const hostPath = join(dir, 'secret')
    await expect(driver.getContent(hostPath)).rejects.toMatchObject({ name: 'StoragePathNotFoundError' })
    await driver.putContent(hostPath, new Uint8Array(Buffer.from('inside')))
    expect(await fs.readFile(hostPath, 'utf8')).toBe('do not touch')
    expect(await fs.readFile(join(root, hostPath), 'utf8')).toBe('inside')
    await driver.delete(hostPath)
    expect(await fs.readFile(hostPath, 'utf8')).toBe('do not touch')
  })

  it('empties but keeps the root when "/" is deleted', async () => {
    await driver.putContent('/a/b', new Uint8Array([1]))
    await driver.delete('/')
    expect(await fs.readdir(root)).toEqual([])
    expect(await fs.readFile(join(dir, 'secret'), 'utf8')).toBe('do not touch')
  })

  it('hides leftovers of interrupted atomic writes', async () => {
    await driver.putContent('/t/file', new Uint8Array([1]))
    await fs.writeFile(join(root, 't', '.shoal-tmp-deadbeef'), 'partial')
    expect(await driver.list('/t')).toEqual(['file'])
  })

  it('leaves no temporary file behind after putContent', async () => {
    await driver.putContent('/t/file', new Uint8Array([1, 2]))
    expect(await fs.readdir(join(root, 't'))).toEqual(['file'])
  })
})
