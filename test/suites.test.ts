/**
 * Guards against a test file that no vitest project picks up (it would never run, and
 * nothing would say so): every *.test.ts in the repository must match the include
 * globs of exactly one project in vitest.config.ts.
 */
import { readdirSync } from 'node:fs'
import { join, matchesGlob, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import config from '../vitest.config.js'

const root = fileURLToPath(new URL('..', import.meta.url))

/** Test files on disk (tracked or not), skipping dependencies and build output. */
function testFiles(dir = root): string[] {
  const found: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name.startsWith('.') || entry.name === 'dist') continue
    const path = join(dir, entry.name)
    if (entry.isDirectory()) found.push(...testFiles(path))
    else if (entry.name.endsWith('.test.ts')) found.push(relative(root, path))
  }
  return found
}

interface ProjectConfig {
  test: { name: string; include: string[] }
}

describe('vitest projects', () => {
  it('pick up every test file exactly once', () => {
    const projects = (config.test?.projects ?? []) as ProjectConfig[]
    expect(projects.map((p) => p.test.name).sort()).toEqual(['e2e', 'integration', 'unit'])
    const files = testFiles()
    expect(files).toContain('test/suites.test.ts')
    const orphans: string[] = []
    const doubles: string[] = []
    for (const file of files) {
      const owners = projects.filter((p) => p.test.include.some((glob) => matchesGlob(file, glob)))
      if (owners.length === 0) orphans.push(file)
      if (owners.length > 1) doubles.push(file)
    }
    expect(orphans, 'test files no vitest project runs: add their folder to vitest.config.ts').toEqual([])
    expect(doubles, 'test files that run in more than one project').toEqual([])
  })
})
