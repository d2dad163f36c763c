/**
 * The e2e helpers themselves, because every registry and P2P suite leans on them: a
 * daemon that ignores SIGTERM is killed, a readiness wait fails fast when the process
 * dies, a cleanup stack runs every step even when one fails, a namespace really has only
 * `lo`, and a temp dir with a mount inside it is removed.
 */
import { mkdir, stat, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { parseListeningLine } from '../helpers/shoal.js'
import { createNetns, listNetns } from '../helpers/netns.js'
import {
  CommandFailedError,
  createCleanup,
  createTempDir,
  mountsUnder,
  removeTempDir,
  requireBinaries,
  runCommand,
  startProcess,
  waitFor,
} from '../helpers/processes.js'

describe('e2e helpers', () => {
  const cleanup = createCleanup()
  let dir: string

  beforeEach(async () => {
    requireBinaries(['ip', 'nsenter', 'sh'])
    dir = await createTempDir('shoal-e2e-helpers-')
    cleanup.add(() => removeTempDir(dir), 'remove temp dir')
  })

  afterEach(async () => {
    await cleanup.run()
  })

  it('captures output to a log file, waits for a line, and SIGKILLs a process that ignores SIGTERM', async () => {
    const proc = await startProcess({
      name: 'stubborn',
      command: 'sh',
      args: ['-c', 'trap "" TERM; echo ready; echo oops >&2; while :; do sleep 0.1; done'],
      logDir: dir,
      stopTimeoutMs: 500,
    })
    cleanup.add(() => proc.stop(), 'stop stubborn')
    expect(await proc.waitForLine((line) => (line === 'ready' ? line : undefined))).toBe('ready')
    await proc.waitForLine((line, stream) => (stream === 'stderr' && line === 'oops' ? true : undefined))
    const status = await proc.stop()
    expect(status.signal).toBe('SIGKILL')
    expect(await proc.readLog()).toContain('[err] oops')
    expect(await proc.stop()).toEqual(status)
  })

  it('fails a readiness wait at once when the process exits, with its log tail', async () => {
    const proc = await startProcess({
      name: 'quitter',
      command: 'sh',
      args: ['-c', 'echo bye; exit 3'],
      logDir: dir,
    })
    cleanup.add(() => proc.stop(), 'stop quitter')
    const started = Date.now()
    await expect(proc.waitForLine(() => undefined, { timeoutMs: 20_000 })).rejects.toThrow(
      /exited \(code 3.*bye/s,
    )
    await expect(waitFor(() => false, { process: proc, timeoutMs: 20_000 })).rejects.toThrow(/quitter exited/)
    expect(Date.now() - started).toBeLessThan(10_000)
    await expect(waitFor(() => false, { timeoutMs: 200, description: 'nothing' })).rejects.toThrow(/nothing/)
  })

  it('reports a failed command with its stderr', async () => {
    const failure = await runCommand('sh', ['-c', 'echo broken >&2; exit 4']).catch((err: unknown) => err)
    expect(failure).toBeInstanceOf(CommandFailedError)
    expect((failure as CommandFailedError).result.code).toBe(4)
    expect((failure as CommandFailedError).message).toContain('broken')
    expect((await runCommand('sh', ['-c', 'exit 4'], { allowFailure: true })).code).toBe(4)
    expect(() => requireBinaries(['shoal-no-such-binary'], { root: false })).toThrow(/shoal-no-such-binary/)
  })

  it('runs every cleanup step newest first even when one fails', async () => {
    const order: string[] = []
    const stack = createCleanup()
    stack.add(() => order.push('first'))
    stack.add(() => {
      throw new Error('boom')
    }, 'failing step')
    stack.add(() => order.push('last'))
    await expect(stack.run()).rejects.toThrow(/failing step: boom/)
    expect(order).toEqual(['last', 'first'])
    await stack.run()
  })

  it('creates a namespace with only lo that cannot reach the host loopback, and deletes it', async () => {
    const server = createServer((_, res) => res.end('host'))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
    cleanup.add(() => new Promise((resolve) => server.close(resolve)), 'close server')
    const port = (server.address() as AddressInfo).port

    const ns = await createNetns()
    cleanup.add(() => ns.delete(), 'delete namespace')
    expect(await listNetns()).toContain(ns.name)
    const links = await ns.exec('ip', ['-o', 'link', 'show'])
    expect(links.stdout.trim().split('\n')).toHaveLength(1)
    expect(links.stdout).toMatch(/: lo: .*UP/)
    const probe = `require('net').connect(${port}, '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(7))`
    expect((await ns.exec(process.execPath, ['-e', probe], { allowFailure: true })).code).toBe(7)
    expect((await runCommand(process.execPath, ['-e', probe], { allowFailure: true })).code).toBe(0)

    await ns.delete()
    await ns.delete()
    expect(await listNetns()).not.toContain(ns.name)
  })

  it('unmounts what is mounted inside a temp dir before removing it', async () => {
    const inner = await createTempDir('shoal-e2e-helpers-mount-')
    const mountPoint = join(inner, 'a', 'mnt')
    await mkdir(mountPoint, { recursive: true })
    await runCommand('mount', ['-t', 'tmpfs', 'tmpfs', mountPoint])
    await writeFile(join(mountPoint, 'file'), 'x')
    expect(await mountsUnder(inner)).toEqual([mountPoint])
    await removeTempDir(inner)
    expect(await mountsUnder(inner)).toEqual([])
    await expect(stat(inner)).rejects.toThrow(/ENOENT/)
  })

  it('recognises only the listening line of the asked service', () => {
    const line = JSON.stringify({
      level: 30,
      msg: 'listening',
      service: 'registry',
      url: 'http://127.0.0.1:5000',
    })
    expect(parseListeningLine(line, 'registry')).toBe('http://127.0.0.1:5000')
    expect(parseListeningLine(line, 'tracker')).toBeUndefined()
    expect(parseListeningLine('{"msg":"listening"', 'registry')).toBeUndefined()
    expect(parseListeningLine('listening', 'registry')).toBeUndefined()
  })
})
