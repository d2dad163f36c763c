/**
 * Where benchmark results are written as JSON: bench/results/<name>-<timestamp>.json
 * by default (that folder is ignored by git), or a path the user chose.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'

/** The default result path for benchmark `name`, stamped with `now` in UTC. */
export function defaultResultPath(name: string, now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/\.\d+Z$/, 'Z')
    .replaceAll(':', '-')
  return resolve('bench', 'results', `${name}-${stamp}.json`)
}

/**
 * Writes `data` as indented JSON to `path`, creating its folder. Returns the absolute path.
 * @throws when the file cannot be written
 */
export async function writeJsonResult(path: string, data: unknown): Promise<string> {
  const absolute = resolve(path)
  await mkdir(dirname(absolute), { recursive: true })
  await writeFile(absolute, JSON.stringify(data, null, 2) + '\n')
  return absolute
}
