import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createMemoryPreheatStore } from './memory-store.js'
import { jobFixture, preheatStoreConformance } from './store-conformance.js'

let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shoal-preheat-store-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

preheatStoreConformance('memory with a file', async () =>
  createMemoryPreheatStore({ file: join(dir, 'jobs.json') }),
)

describe('memory preheat store', () => {
  it('writes the jobs as JSON under the given file', async () => {
    const file = join(dir, 'sub', 'own.json')
    const store = createMemoryPreheatStore({ file })
    await store.start()
    await store.putJob(jobFixture('x', '2026-01-01T00:00:00.000Z'))
    await store.stop()
    const parsed = JSON.parse(await readFile(file, 'utf8')) as { jobs: Array<{ id: string }> }
    expect(parsed.jobs.map((j) => j.id)).toEqual(['x'])
  })
})
