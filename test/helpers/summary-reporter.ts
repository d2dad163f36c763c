/**
 * A vitest reporter that ends the run with one plain line,
 * `vitest: N passed, M failed` (and `, K skipped` when any were), so that CI logs have
 * a closing line any tool can read. Skipped tests are named above it, so none is
 * skipped silently. Test files that failed to load and errors outside tests count as
 * failures. Registered beside the default reporter in vitest.config.ts.
 */
import { relative } from 'node:path'
import type { Reporter, TestModule } from 'vitest/node'

interface Counts {
  passed: number
  failed: number
  skipped: number
  skippedNames: string[]
}

/** Counts the results of `modules` plus `unhandled` errors. */
export function countResults(modules: ReadonlyArray<TestModule>, unhandled: number): Counts {
  const counts: Counts = { passed: 0, failed: unhandled, skipped: 0, skippedNames: [] }
  for (const module of modules) {
    let failedHere = 0
    for (const test of module.children.allTests()) {
      const state = test.result().state
      if (state === 'passed') counts.passed++
      else if (state === 'failed') {
        counts.failed++
        failedHere++
      } else {
        counts.skipped++
        counts.skippedNames.push(`${relative(process.cwd(), module.moduleId)} > ${test.fullName}`)
      }
    }
    // A file that failed outside its tests (import error, failing hook) counts once.
    if (module.state() === 'failed' && failedHere === 0) counts.failed++
  }
  return counts
}

/** Formats the closing line. */
export function summaryLine(counts: Pick<Counts, 'passed' | 'failed' | 'skipped'>): string {
  const skipped = counts.skipped > 0 ? `, ${counts.skipped} skipped` : ''
  return `vitest: ${counts.passed} passed, ${counts.failed} failed${skipped}`
}

/** The reporter itself (vitest instantiates the default export). */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>): void {
    const counts = countResults(testModules, unhandledErrors.length)
    const lines = counts.skippedNames.map((name) => `skipped: ${name}`)
    lines.push(summaryLine(counts))
    process.stdout.write(`\n${lines.join('\n')}\n`)
  }
}
