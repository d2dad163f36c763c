/**
 * The set of repositories: a directory under repositories/ is one when it holds a
 * `_layers` or `_manifests` directory (names can never have '_'-prefixed components,
 * so these markers cannot collide with a nested repository name).
 */
import type { AbortOptions } from '../service.js'
import type { StorageContext } from './context.js'
import { REPOSITORIES_ROOT, REPOSITORY_MARKERS, repositoryDir } from './paths.js'

/** Whether `repository` exists (something was ever pushed or mounted into it). */
export async function repositoryExists(
  ctx: StorageContext,
  repository: string,
  options?: AbortOptions,
): Promise<boolean> {
  for (const marker of REPOSITORY_MARKERS) {
    const st = await ctx.driver.stat(`${repositoryDir(repository)}/${marker}`, options)
    if (st?.isDirectory) return true
  }
  return false
}

/** Every repository name, lexically sorted. */
export async function listRepositories(ctx: StorageContext, options?: AbortOptions): Promise<string[]> {
  const out: string[] = []
  async function walk(dir: string, name: string): Promise<void> {
    const children = await ctx.driver.list(dir, options)
    if (name !== '' && children.some((c) => (REPOSITORY_MARKERS as readonly string[]).includes(c)))
      out.push(name)
    for (const child of children) {
      if (child.startsWith('_')) continue
      await walk(`${dir}/${child}`, name === '' ? child : `${name}/${child}`)
    }
  }
  await walk(REPOSITORIES_ROOT, '')
  return out.sort()
}
