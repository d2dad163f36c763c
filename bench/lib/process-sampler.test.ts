import { spawn } from 'node:child_process'
import { afterEach, describe, expect, it } from 'vitest'
import {
  createProcessSampler,
  readProcessCpuSeconds,
  readProcessMemory,
  waitForIdle,
} from './process-sampler.js'

describe('process sampler', () => {
  const children: ReturnType<typeof spawn>[] = []
  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL')
  })

  it('reads RSS and CPU time of a process', () => {
    const memory = readProcessMemory(process.pid)
    expect(memory.rssBytes).toBeGreaterThan(1024 * 1024)
    expect(memory.peakRssBytes).toBeGreaterThanOrEqual(memory.rssBytes)
    expect(readProcessCpuSeconds(process.pid)).toBeGreaterThan(0)
  })

  it('sees a child grow its memory and spend CPU while sampling', async () => {
    // The child allocates and touches ~64 MiB, then idles until killed.
    const child = spawn(process.execPath, [
      '-e',
      'const b = Buffer.alloc(64 * 1024 * 1024, 1); let x = 0; for (let i = 0; i < 3e7; i++) x += i; ' +
        'process.stdout.write("ready\\n"); setInterval(() => b[0] + x, 1000)',
    ])
    children.push(child)
    const sampler = createProcessSampler({ pid: child.pid!, intervalMs: 10 })
    sampler.start()
    await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()))
    const sample = sampler.stop()
    expect(sample.peakRssBytes).toBeGreaterThan(64 * 1024 * 1024)
    expect(sample.cpuSeconds).toBeGreaterThan(0)
    expect(sample.samples).toBeGreaterThan(1)
    expect(sampler.stop()).toBe(sample)
  })

  it('waits until a process stops burning CPU, and gives up on one that never does', async () => {
    const settling = spawn(process.execPath, [
      '-e',
      'const end = Date.now() + 400; while (Date.now() < end); setInterval(() => {}, 1000)',
    ])
    const busy = spawn(process.execPath, ['-e', 'for (;;);'])
    children.push(settling, busy)
    const startedAt = Date.now()
    expect(await waitForIdle(settling.pid!, { windowMs: 300, timeoutMs: 10_000 })).toBe(true)
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(300)
    // A generous bound: on a crowded machine a busy process may get only a small share of a core.
    expect(await waitForIdle(busy.pid!, { windowMs: 300, maxCores: 0.01, timeoutMs: 1000 })).toBe(false)
  })
})
