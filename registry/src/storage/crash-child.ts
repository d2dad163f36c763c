/**
 * The process crash.test.ts kills: it pushes blobs into a filesystem-backed storage
 * registry forever and prints one JSON line per acknowledged step, so the test knows
 * what was acknowledged before the SIGKILL. Usage: run-ts.js crash-child.ts <root>
 */
import { createHash } from 'node:crypto'
import { createFilesystemDriver, createStorageRegistry } from './index.js'

const root = process.argv[2]
if (!root) throw new Error('usage: crash-child.ts <root>')
const registry = createStorageRegistry({ driver: createFilesystemDriver({ root }) })
const CHUNK = 128 * 1024
const CHUNKS_PER_BLOB = 6

function chunk(blob: number, i: number): Buffer {
  return Buffer.alloc(CHUNK, (blob * 31 + i) & 0xff)
}

async function* once(data: Uint8Array): AsyncGenerator<Uint8Array> {
  yield data
}

for (let blob = 0; ; blob++) {
  const u = await registry.startUpload('crash/test')
  const hash = createHash('sha256')
  for (let i = 0; i < CHUNKS_PER_BLOB; i++) {
    const data = chunk(blob, i)
    hash.update(data)
    const state = await registry.appendUpload('crash/test', u.id, once(data), { start: i * CHUNK })
    process.stdout.write(`${JSON.stringify({ id: u.id, offset: state.offset })}\n`)
  }
  const digest = `sha256:${hash.digest('hex')}`
  await registry.completeUpload('crash/test', u.id, digest)
  process.stdout.write(`${JSON.stringify({ committed: digest, size: CHUNK * CHUNKS_PER_BLOB })}\n`)
}
