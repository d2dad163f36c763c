/**
 * Reads V8 .cpuprofile files (written by `node --cpu-prof`) and answers where the time
 * went: self time per function and per source file, heaviest first.
 */
import { readFile } from 'node:fs/promises'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
}

interface CpuProfile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples?: number[]
}

/** Self time attributed to one function or file. */
export interface ProfileEntry {
  /** `function (file:line)` or a file path. */
  name: string
  selfMs: number
  /** Share of all sampled time, 0..1. */
  share: number
}

/** The heaviest functions and files of a profile. */
export interface ProfileSummary {
  totalMs: number
  functions: ProfileEntry[]
  files: ProfileEntry[]
}

function shortUrl(url: string, root: string): string {
  const path = url.startsWith('file://') ? decodeURIComponent(url.slice(7)) : url
  return root && path.startsWith(root) ? path.slice(root.length).replace(/^\//, '') : path
}

/**
 * Summarizes a .cpuprofile file: the `top` functions and files by self time. Paths under
 * `root` are shown relative to it; `(idle)` and `(program)` are kept so that waiting is
 * visible.
 * @throws when the file is not a V8 CPU profile
 */
export async function summarizeCpuProfile(path: string, options: { top?: number; root?: string } = {}) {
  const profile = JSON.parse(await readFile(path, 'utf8')) as CpuProfile
  if (!Array.isArray(profile.nodes)) throw new Error(`${path} is not a V8 CPU profile`)
  const top = options.top ?? 25
  const root = options.root ?? ''
  const totalHits = profile.nodes.reduce((sum, node) => sum + (node.hitCount ?? 0), 0)
  const totalMs = (profile.endTime - profile.startTime) / 1000
  const msPerHit = totalHits > 0 ? totalMs / totalHits : 0
  const byFunction = new Map<string, number>()
  const byFile = new Map<string, number>()
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0
    if (hits === 0) continue
    const { functionName, url, lineNumber } = node.callFrame
    const file = url ? shortUrl(url, root) : '(native)'
    const fn = `${functionName || '(anonymous)'}${url ? ` (${file}:${lineNumber + 1})` : ''}`
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + hits)
    byFile.set(file, (byFile.get(file) ?? 0) + hits)
  }
  const rank = (map: Map<string, number>): ProfileEntry[] =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, hits]) => ({ name, selfMs: hits * msPerHit, share: totalHits > 0 ? hits / totalHits : 0 }))
  const summary: ProfileSummary = { totalMs, functions: rank(byFunction), files: rank(byFile) }
  return summary
}
