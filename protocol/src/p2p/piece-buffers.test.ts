import { describe, expect, it } from 'vitest'
import { createPieceBufferPool } from './piece-buffers.js'

describe('piece buffer pool', () => {
  it('hands out buffers of the asked length and reuses a given-back one of that length', () => {
    const pool = createPieceBufferPool({ maxBuffers: 4 })
    const a = pool.take(1024)
    expect(a.byteLength).toBe(1024)
    // The buffer owns its memory: not a slice of Node's shared slab.
    expect(a.buffer.byteLength).toBe(1024)
    const b = pool.take(1024)
    expect(b).not.toBe(a)
    pool.give(a)
    expect(pool.take(512)).not.toBe(a)
    expect(pool.take(1024)).toBe(a)
    expect(pool.stats()).toMatchObject({ reused: 1, allocated: 3, idle: 0, idleBytes: 0 })
  })

  it('never hands one buffer to two takers', () => {
    const pool = createPieceBufferPool({ maxBuffers: 4 })
    const a = pool.take(64)
    pool.give(a)
    // Given back twice: held once.
    pool.give(a)
    expect(pool.stats().idle).toBe(1)
    const first = pool.take(64)
    const second = pool.take(64)
    expect(first).toBe(a)
    expect(second).not.toBe(a)
  })

  it('ignores buffers it did not hand out', () => {
    const pool = createPieceBufferPool({ maxBuffers: 4 })
    const foreign = new Uint8Array(64)
    pool.give(foreign)
    pool.give(Buffer.alloc(64))
    expect(pool.stats().idle).toBe(0)
    expect(pool.take(64)).not.toBe(foreign)
  })

  it('keeps at most maxBuffers idle buffers, dropping the oldest', () => {
    const pool = createPieceBufferPool({ maxBuffers: 2 })
    const [a, b, c] = [pool.take(8), pool.take(8), pool.take(16)]
    pool.give(a)
    pool.give(b)
    pool.give(c)
    expect(pool.stats()).toMatchObject({ idle: 2, idleBytes: 24 })
    // a was dropped; b and c are reused.
    expect(pool.take(8)).toBe(b)
    expect(pool.take(16)).toBe(c)
    expect(pool.take(8)).not.toBe(a)
  })

  it('keeps at most maxBytes of idle buffers', () => {
    const pool = createPieceBufferPool({ maxBuffers: 8, maxBytes: 100 })
    const big = pool.take(200)
    pool.give(big)
    expect(pool.stats().idle).toBe(0)
    const [a, b] = [pool.take(60), pool.take(30)]
    const c = pool.take(30)
    pool.give(a)
    pool.give(b)
    pool.give(c)
    // 120 bytes would exceed the bound: the oldest (a) goes.
    expect(pool.stats()).toMatchObject({ idle: 2, idleBytes: 60 })
    expect(pool.take(60)).not.toBe(a)
  })

  it('keeps nothing with maxBuffers 0, and lets clear drop every idle buffer', () => {
    const none = createPieceBufferPool({ maxBuffers: 0 })
    const x = none.take(8)
    none.give(x)
    expect(none.take(8)).not.toBe(x)

    const pool = createPieceBufferPool({ maxBuffers: 4 })
    const [a, b] = [pool.take(8), pool.take(8)]
    pool.give(a)
    pool.clear()
    expect(pool.stats()).toMatchObject({ idle: 0, idleBytes: 0 })
    // A buffer out during clear can still come back.
    pool.give(b)
    expect(pool.take(8)).toBe(b)
  })

  it('hands out empty buffers without keeping them', () => {
    const pool = createPieceBufferPool({ maxBuffers: 4 })
    const empty = pool.take(0)
    expect(empty.byteLength).toBe(0)
    pool.give(empty)
    expect(pool.stats().idle).toBe(0)
  })

  it('refuses invalid lengths and bounds', () => {
    const pool = createPieceBufferPool({ maxBuffers: 1 })
    expect(() => pool.take(-1)).toThrow(RangeError)
    expect(() => pool.take(1.5)).toThrow(RangeError)
    expect(() => createPieceBufferPool({ maxBuffers: -1 })).toThrow(RangeError)
    expect(() => createPieceBufferPool({ maxBuffers: 1, maxBytes: Number.NaN })).toThrow(RangeError)
  })

  it('hands out shared memory up to maxSharedBytes, ordinary buffers beyond it', () => {
    const pool = createPieceBufferPool({ maxBuffers: 4, shared: true, maxSharedBytes: 3000 })
    const a = pool.take(1000)
    const b = pool.take(1000)
    const c = pool.take(1000)
    for (const x of [a, b, c]) expect(x.buffer).toBeInstanceOf(SharedArrayBuffer)
    expect(pool.stats().sharedBytes).toBe(3000)
    // Over the bound: ordinary memory, which V8 counts.
    const d = pool.take(1000)
    expect(d.buffer).not.toBeInstanceOf(SharedArrayBuffer)
    expect(pool.stats().sharedBytes).toBe(3000)
    // Reused shared buffers are not counted twice.
    pool.give(a)
    expect(pool.take(1000)).toBe(a)
    expect(pool.stats().sharedBytes).toBe(3000)
    pool.give(d)
    expect(pool.take(1000)).toBe(d)
  })

  it('hands out ordinary memory without shared', () => {
    const pool = createPieceBufferPool({ maxBuffers: 4 })
    expect(pool.take(1000).buffer).not.toBeInstanceOf(SharedArrayBuffer)
    expect(pool.stats().sharedBytes).toBe(0)
  })
})
