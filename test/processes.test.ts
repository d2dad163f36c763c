import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startProcess } from './helpers/processes.js'

let logDir: string

beforeAll(async () => {
  logDir = await mkdtemp(join(tmpdir(), 'shoal-processes-test-'))
})

afterAll(async () => {
  await rm(logDir, { recursive: true, force: true })
})

/**
 * A node child that writes `lines` lines of `width` characters, then `last`, and ends
 * as soon as its writes are done (not with process.exit, which drops what a full pipe
 * has not taken yet).
 */
function chatty(name: string, lines: number, width: number, last: string) {
  const script = `const l = 'x'.repeat(${width}) + '\\n'; let s = ''; for (let i = 0; i < ${lines}; i++) s += l; process.stdout.write(s + ${JSON.stringify(`${last}\n`)})`
  return startProcess({ name, command: process.execPath, args: ['-e', script], logDir })
}

describe('startProcess', () => {
  it('finds a line written just before the child exits, however much came before it', async () => {
    // Megabytes in the pipe when the child exits: its 'exit' event comes before the
    // parent has read them, and the line must still be found.
    const children = await Promise.all(
      Array.from({ length: 16 }, (_, i) => chatty(`chatty-${i}`, 2_000, 1_000, `DONE ${i}`)),
    )
    const found = await Promise.all(
      children.map((c) =>
        c.waitForLine((line) => (line.startsWith('DONE') ? line : undefined), { timeoutMs: 20_000 }),
      ),
    )
    expect(found).toEqual(children.map((_, i) => `DONE ${i}`))
  })

  it('still fails when the child exits without the line', async () => {
    const child = await chatty('silent', 10, 10, 'something else')
    await expect(
      child.waitForLine((line) => (line === 'DONE' ? line : undefined), {
        timeoutMs: 20_000,
        description: 'DONE',
      }),
    ).rejects.toThrow(/silent exited \(code 0, signal null\) before DONE/)
  })
})
