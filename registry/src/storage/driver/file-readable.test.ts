import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { readableFromFile, reusedBufferChunks } from './file-readable.js'
import { createFilesystemDriver } from './filesystem.js'
import type { ReadableFile, StorageDriver } from './index.js'

/** Wraps a file to record whether it was closed. */
function tracked(file: ReadableFile): ReadableFile & { closed: boolean } {
  const t = {
    closed: false,
    size: file.size,
    read: file.read.bind(file),
    async close() {
      t.closed = true
      await file.close()
    },
  }
  return t
}

describe('file readers over ReadableFile', () => {
  let dir: string
  let driver: StorageDriver
  const data = randomBytes(3 * 1024 * 1024 + 777)

  beforeEach(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'shoal-file-readable-'))
    driver = createFilesystemDriver({ root: dir })
    await driver.putContent('/blob', data)
  })
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true })
  })

  it('streams a range in fresh chunks and closes the file at the end', async () => {
    const file = tracked(await driver.openFile!('/blob'))
    const chunks: Buffer[] = []
    for await (const chunk of readableFromFile(file, 100, data.byteLength - 5)) chunks.push(chunk as Buffer)
    expect(Buffer.concat(chunks).equals(data.subarray(100, data.byteLength - 5))).toBe(true)
    // Fresh buffers: every chunk still holds its own bytes after the stream moved on.
    expect(chunks.length).toBeGreaterThan(1)
    expect(file.closed).toBe(true)
  })

  it('fails a stream whose file is shorter than the range, and closes it', async () => {
    const file = tracked(await driver.openFile!('/blob'))
    const drain = async () => {
      for await (const _ of readableFromFile(file, 0, data.byteLength + 10)) {
        // read everything
      }
    }
    await expect(drain()).rejects.toThrow(/ended/)
    expect(file.closed).toBe(true)
  })

  it('yields views of one reused buffer that together are the range', async () => {
    const file = tracked(await driver.openFile!('/blob'))
    const copies: Buffer[] = []
    const backing = new Set<ArrayBufferLike>()
    for await (const chunk of reusedBufferChunks(file, 7, data.byteLength, { chunkBytes: 256 * 1024 })) {
      backing.add(chunk.buffer)
      copies.push(Buffer.from(chunk))
    }
    expect(Buffer.concat(copies).equals(data.subarray(7))).toBe(true)
    expect(copies.length).toBe(Math.ceil((data.byteLength - 7) / (256 * 1024)))
    expect(backing.size).toBe(1)
    expect(file.closed).toBe(true)
  })

  it('closes the file when the consumer stops early', async () => {
    const file = tracked(await driver.openFile!('/blob'))
    for await (const _ of reusedBufferChunks(file, 0, data.byteLength)) break
    expect(file.closed).toBe(true)
  })
})
