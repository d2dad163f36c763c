import { describe, expect, it } from 'vitest'
import type { FileWriter } from './driver/index.js'
import { createPieceBufferPool } from '../../../protocol/src/p2p/piece-buffers.js'
import { createWriteBehind } from './write-behind.js'

/** A FileWriter whose writes finish only when the test says so; it records what each write got. */
function fakeWriter() {
  const calls: string[] = []
  const pending: Array<{ resolve: () => void; reject: (err: unknown) => void }> = []
  const settle = (ok: boolean, err?: unknown): void => {
    const next = pending.shift()
    if (!next) throw new Error('no write is pending')
    if (ok) next.resolve()
    else next.reject(err)
  }
  const writer: FileWriter = {
    size: 0,
    write: (chunk) => {
      // Copied when the write starts, as a file write hands the bytes to the kernel.
      calls.push(Buffer.from(chunk).toString())
      return new Promise<void>((resolve, reject) => pending.push({ resolve, reject }))
    },
    commit: async () => undefined,
    close: async () => undefined,
    cancel: async () => undefined,
  }
  return {
    writer,
    calls,
    pendingCount: () => pending.length,
    finish: () => settle(true),
    fail: (err: unknown) => settle(false, err),
  }
}

const b = (s: string): Uint8Array => Buffer.from(s)

/** Lets every queued promise callback run. */
async function ticks(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve()
}

describe('createWriteBehind', () => {
  it('writes whole buffers in order as they fill, and the rest at flush', async () => {
    const f = fakeWriter()
    const behind = createWriteBehind(f.writer, { bufferBytes: 4, buffers: 3 })
    await behind.write(b('ab'))
    expect(f.calls).toEqual([])
    await behind.write(b('cdefg'))
    expect(f.calls).toEqual(['abcd'])
    await behind.write(b('hijk'))
    // 'efgh' is full but waits for the running write.
    expect(f.calls).toEqual(['abcd'])
    f.finish()
    await ticks()
    expect(f.calls).toEqual(['abcd', 'efgh'])
    const flushed = behind.flush()
    f.finish()
    await ticks()
    expect(f.calls).toEqual(['abcd', 'efgh', 'ijk'])
    f.finish()
    await flushed
    expect(f.pendingCount()).toBe(0)
  })

  it('copies each chunk, so the caller may reuse its memory once write resolves', async () => {
    const f = fakeWriter()
    const behind = createWriteBehind(f.writer, { bufferBytes: 4, buffers: 2 })
    const reused = Buffer.from('xx')
    for (const s of ['ab', 'cd', 'ef']) {
      reused.write(s)
      await behind.write(reused)
    }
    reused.write('zz')
    const flushed = behind.flush()
    f.finish()
    await ticks()
    f.finish()
    await flushed
    expect(f.calls).toEqual(['abcd', 'ef'])
  })

  it('holds the caller back while every buffer is full or being written', async () => {
    const f = fakeWriter()
    const behind = createWriteBehind(f.writer, { bufferBytes: 2, buffers: 2 })
    await behind.write(b('aabb'))
    expect(f.calls).toEqual(['aa'])
    let released = false
    const held = behind.write(b('c')).then(() => {
      released = true
    })
    await ticks()
    expect(released).toBe(false)
    f.finish()
    await held
    expect(f.calls).toEqual(['aa', 'bb'])
    const flushed = behind.flush()
    f.finish()
    await ticks()
    f.finish()
    await flushed
    expect(f.calls).toEqual(['aa', 'bb', 'c'])
  })

  it('writes nothing for empty chunks', async () => {
    const f = fakeWriter()
    const behind = createWriteBehind(f.writer, { bufferBytes: 4 })
    await behind.write(new Uint8Array(0))
    await behind.flush()
    expect(f.calls).toEqual([])
  })

  it('fails every later write and flush with the first write error, and writes nothing after it', async () => {
    const f = fakeWriter()
    const behind = createWriteBehind(f.writer, { bufferBytes: 2, buffers: 3 })
    await behind.write(b('aabbc'))
    const boom = Object.assign(new Error('disk full'), { code: 'ENOSPC' })
    f.fail(boom)
    await ticks()
    await expect(behind.write(b('c'))).rejects.toBe(boom)
    await expect(behind.flush()).rejects.toBe(boom)
    expect(f.calls).toEqual(['aa'])
  })

  it('settle drops what waits and resolves once the running write is over, even when it failed', async () => {
    const f = fakeWriter()
    const behind = createWriteBehind(f.writer, { bufferBytes: 2, buffers: 3 })
    await behind.write(b('aabb'))
    let settled = false
    const done = behind.settle().then(() => {
      settled = true
    })
    await ticks()
    expect(settled).toBe(false)
    f.fail(new Error('gone'))
    await done
    expect(f.calls).toEqual(['aa'])
  })

  it('rejects a buffer size that is not a positive integer', () => {
    expect(() => createWriteBehind(fakeWriter().writer, { bufferBytes: 0 })).toThrow(RangeError)
    expect(() => createWriteBehind(fakeWriter().writer, { bufferBytes: 1.5 })).toThrow(RangeError)
  })

  it('gives its buffers back to the pool after flush, and the next queue writes from the same memory', async () => {
    const pool = createPieceBufferPool({ maxBuffers: 16 })
    const seen = new Set<ArrayBufferLike>()
    const recording: FileWriter = {
      ...fakeWriter().writer,
      write: async (chunk) => {
        seen.add(chunk.buffer)
      },
    }
    const first = createWriteBehind(recording, { bufferBytes: 4, buffers: 3, pool })
    // Two whole buffers and a partial last one.
    await first.write(b('abcdefghij'))
    expect(pool.stats().idle).toBe(0)
    await first.flush()
    expect(pool.stats().idle).toBe(3)
    expect(seen.size).toBe(3)
    const second = createWriteBehind(recording, { bufferBytes: 4, buffers: 3, pool })
    await second.write(b('klmnopqrst'))
    await second.flush()
    // No new memory: the second upload's writes came from the first one's buffers.
    expect(seen.size).toBe(3)
    expect(pool.stats().idle).toBe(3)
  })

  it('keeps a buffer out of the pool while a write still reads it, also when the queue is abandoned', async () => {
    const pool = createPieceBufferPool({ maxBuffers: 16 })
    const f = fakeWriter()
    const behind = createWriteBehind(f.writer, { bufferBytes: 2, buffers: 3, pool })
    await behind.write(b('aabbc'))
    const done = behind.settle()
    await ticks()
    // 'aa' is on its way to the file: nothing may reuse its memory yet.
    expect(pool.stats().idle).toBe(0)
    f.finish()
    await done
    expect(pool.stats().idle).toBe(3)
    // A second settle (an error path after a flush) gives nothing back twice.
    await behind.settle()
    expect(pool.stats().idle).toBe(3)
  })

  it('gives its buffers back when a write failed, and the pool keeps no more than its maximum', async () => {
    const pool = createPieceBufferPool({ maxBuffers: 2 })
    const f = fakeWriter()
    const behind = createWriteBehind(f.writer, { bufferBytes: 2, buffers: 3, pool })
    await behind.write(b('aabbc'))
    f.fail(new Error('EIO'))
    await ticks()
    await expect(behind.flush()).rejects.toThrow('EIO')
    expect(pool.stats().idle).toBe(2)
    // A buffer the pool did not hand out does not get in.
    pool.give(new Uint8Array(2))
    expect(pool.stats().idle).toBe(2)
  })
})
