import { spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'

// bin/cpu-profile.js as the shoal CLI runs it: a process that profiles itself on env.
const script = (signal: boolean, exitAfterSignals = 1): string => `
  import { startCpuProfileFromEnv } from ${JSON.stringify(new URL('../../bin/cpu-profile.js', import.meta.url).href)}
  startCpuProfileFromEnv()
  const spin = () => { const end = Date.now() + 30; while (Date.now() < end) {} }
  let signals = 0
  ${signal ? `process.on('SIGUSR2', () => { if (++signals === ${exitAfterSignals}) setTimeout(() => process.exit(0), 200) })` : 'setTimeout(() => process.exit(0), 200)'}
  setInterval(spin, 50)
  console.log('ready')
`

/** Runs the script with SIGUSR2 sent `signals` times, 300 ms apart, when `signal`. */
async function run(env: Record<string, string>, signal: boolean, signals = 1): Promise<number> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script(signal, signals)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'ignore'],
  })
  const exited = new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? -1)))
  const ready = await Promise.race([
    new Promise<boolean>((resolve) => child.stdout.once('data', () => resolve(true))),
    exited.then(() => false),
  ])
  if (ready && signal) {
    // Some time unprofiled first, then the signals.
    for (let k = 0; k < signals; k++) {
      await new Promise((r) => setTimeout(r, 300))
      child.kill('SIGUSR2')
    }
  }
  return await exited
}

describe('SHOAL_CPU_PROFILE_DIR', () => {
  let dir = ''
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('profiles from start to exit, or from SIGUSR2 on with SHOAL_CPU_PROFILE_ON', async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-cpu-prof-'))
    const fromStart = join(dir, 'start')
    const onSignal = join(dir, 'signal')
    expect(await run({ SHOAL_CPU_PROFILE_DIR: fromStart }, false)).toBe(0)
    expect(await run({ SHOAL_CPU_PROFILE_DIR: onSignal, SHOAL_CPU_PROFILE_ON: 'SIGUSR2' }, true)).toBe(0)
    const [started] = await readdir(fromStart)
    const [signalled] = await readdir(onSignal)
    const a = JSON.parse(await readFile(join(fromStart, started ?? ''), 'utf8'))
    const b = JSON.parse(await readFile(join(onSignal, signalled ?? ''), 'utf8'))
    expect(a.nodes.length).toBeGreaterThan(1)
    expect(b.nodes.length).toBeGreaterThan(1)
    // The signalled profile covers the 200 ms after the signal, not the 300 ms before it.
    expect((b.endTime - b.startTime) / 1000).toBeLessThan(280)
  })

  it('stops at the next SIGUSR2 and writes that window, then starts another at the one after', async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-cpu-prof-'))
    // Signals at 300, 600 and 900 ms; exit 200 ms after the third.
    expect(await run({ SHOAL_CPU_PROFILE_DIR: dir, SHOAL_CPU_PROFILE_ON: 'SIGUSR2' }, true, 3)).toBe(0)
    const files = (await readdir(dir)).sort()
    expect(files).toHaveLength(2)
    expect(files[0]).toMatch(/^shoal-\d+-1\.cpuprofile$/)
    expect(files[1]).toMatch(/^shoal-\d+-2\.cpuprofile$/)
    const spans = await Promise.all(
      files.map(async (f) => {
        const p = JSON.parse(await readFile(join(dir, f), 'utf8')) as { startTime: number; endTime: number }
        return (p.endTime - p.startTime) / 1000
      }),
    )
    // The first window is the 300 ms between the first two signals; the second, the 200
    // ms from the third signal to the exit.
    expect(spans[0]).toBeGreaterThan(200)
    expect(spans[0]).toBeLessThan(450)
    expect(spans[1]).toBeLessThan(290)
  })

  it('refuses a trigger it does not know, and writes nothing without a signal', async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-cpu-prof-'))
    expect(await run({ SHOAL_CPU_PROFILE_DIR: dir, SHOAL_CPU_PROFILE_ON: 'SIGHUP' }, false)).not.toBe(0)
    expect(
      await run({ SHOAL_CPU_PROFILE_DIR: join(dir, 'none'), SHOAL_CPU_PROFILE_ON: 'SIGUSR2' }, false),
    ).toBe(0)
    await expect(readdir(join(dir, 'none'))).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('samples at SHOAL_CPU_PROFILE_INTERVAL_US, and refuses an interval that is not a whole number', async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-cpu-prof-'))
    const fine = join(dir, 'fine')
    const coarse = join(dir, 'coarse')
    expect(await run({ SHOAL_CPU_PROFILE_DIR: fine, SHOAL_CPU_PROFILE_INTERVAL_US: '500' }, false)).toBe(0)
    expect(await run({ SHOAL_CPU_PROFILE_DIR: coarse, SHOAL_CPU_PROFILE_INTERVAL_US: '20000' }, false)).toBe(
      0,
    )
    const samples = async (d: string): Promise<number> => {
      const [file] = await readdir(d)
      return (JSON.parse(await readFile(join(d, file ?? ''), 'utf8')) as { samples: number[] }).samples.length
    }
    // About 200 ms of run: hundreds of samples at 0.5 ms, about ten at 20 ms.
    expect(await samples(fine)).toBeGreaterThan(100)
    expect(await samples(coarse)).toBeLessThan(40)
    expect(
      await run({ SHOAL_CPU_PROFILE_DIR: join(dir, 'bad'), SHOAL_CPU_PROFILE_INTERVAL_US: '1.5' }, false),
    ).not.toBe(0)
  })
})
