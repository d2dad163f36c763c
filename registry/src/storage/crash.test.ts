import { type ChildProcess, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import * as fs from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createFilesystemDriver, createStorageRegistry } from './index.js'

const here = fileURLToPath(new URL('.', import.meta.url))
const runTs = join(here, '../../../bin/run-ts.js')
const childScript = join(here, 'crash-child.ts')
const CHUNK = 128 * 1024
const BLOB_SIZE = 6 * CHUNK

interface Acked {
  uploads: Map<string, number>
  committed: Map<string, number>
}

/** Runs the child until it has acknowledged `steps` lines, then SIGKILLs it. */
async function runAndKill(root: string, steps: number, children: ChildProcess[]): Promise<Acked> {
  const child = spawn(process.execPath, [runTs, childScript, root], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  const acked: Acked = { uploads: new Map(), committed: new Map() }
  let stderr = ''
  child.stderr!.on('data', (d) => {
    stderr += d
  })
  await new Promise<void>((resolve, reject) => {
    let buffered = ''
    let seen = 0
    child.stdout!.on('data', (d: Buffer) => {
      buffered += d.toString()
      let nl = buffered.indexOf('\n')
      while (nl >= 0) {
        const line = JSON.parse(buffered.slice(0, nl)) as {
          id?: string
          offset?: number
          committed?: string
          size?: number
        }
        buffered = buffered.slice(nl + 1)
        nl = buffered.indexOf('\n')
        if (line.id !== undefined) acked.uploads.set(line.id, line.offset!)
        if (line.committed !== undefined) acked.committed.set(line.committed, line.size!)
        if (++seen === steps) {
          child.kill('SIGKILL')
          resolve()
        }
      }
    })
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve()
      else reject(new Error(`child exited early (${code}): ${stderr}`))
    })
  })
  if (child.exitCode === null && child.signalCode === null) {
    await new Promise((resolve) => child.once('exit', resolve))
  }
  return acked
}

async function sha256File(file: string): Promise<string> {
  return `sha256:${createHash('sha256')
    .update(await fs.readFile(file))
    .digest('hex')}`
}

describe('crash safety (SIGKILL during pushes)', () => {
  let dir: string
  const children: ChildProcess[] = []

  beforeEach(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'shoal-crash-'))
  })
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    await fs.rm(dir, { recursive: true, force: true })
  })

  it('keeps every acknowledged chunk and blob, and never exposes a partial blob', async () => {
    const allCommitted = new Map<string, number>()
    // Kill points mid-upload and around a commit (7 lines per blob); each restart costs a CLI start-up.
    for (const steps of [10, 13]) {
      const acked = await runAndKill(dir, steps, children)
      for (const [d, size] of acked.committed) allCommitted.set(d, size)

      const registry = createStorageRegistry({ driver: createFilesystemDriver({ root: dir }) })
      for (const [digest, size] of allCommitted) {
        expect(await registry.statBlob('crash/test', digest)).toEqual({ digest, size })
      }
      for (const [id, offset] of acked.uploads) {
        const state = await registry.getUpload('crash/test', id).catch(() => undefined)
        if (state === undefined) {
          // Gone only because it was completed, which needs every chunk acknowledged.
          expect(offset).toBe(BLOB_SIZE)
          continue
        }
        // An acknowledged offset is durable; one more chunk may have landed unacknowledged.
        expect([offset, offset + CHUNK]).toContain(state.offset)
      }
      // Every file under blobs/ is whole: it hashes to the digest it is stored under. A
      // kill between creating a blob's folder and renaming its data into it leaves the
      // folder empty: that blob must read as unknown, never as a partial blob.
      const blobsRoot = join(dir, 'blobs', 'sha256')
      for (const prefix of await fs.readdir(blobsRoot).catch(() => [] as string[])) {
        for (const hex of await fs.readdir(join(blobsRoot, prefix))) {
          const data = join(blobsRoot, prefix, hex, 'data')
          const present = await fs.stat(data).then(
            () => true,
            () => false,
          )
          if (present) expect(await sha256File(data)).toBe(`sha256:${hex}`)
          else await expect(registry.statBlob('crash/test', `sha256:${hex}`)).rejects.toThrow()
        }
      }
      await registry.stop()
    }
    expect(allCommitted.size).toBeGreaterThan(0)
  }, 60_000)
})
