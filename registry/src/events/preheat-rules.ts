/**
 * Preheat rules: when a manifest is pushed to a repository (and tag) matching a rule,
 * the registry asks the tracker's admin API for a preheat job of that image, follows
 * the job until it ends and reports the outcome as a `preheat` event (for webhooks).
 *
 * A rule is a string `<repository-glob>[:<tag-glob>][@<scope>][#<platform>,...]`, for
 * example `team/*:release-*@zone:eu#linux/amd64`; `*` matches within a path segment,
 * `**` across segments; no tag glob matches every tag. Pushes by digest (the children
 * of an index, pushed before it) never match: the tagged push that follows does.
 */
import type { Logger } from 'pino'
import { parseScope } from '../../../protocol/src/preheat-api.js'
import type { PreheatClient } from '../../../protocol/src/tracker-client/preheat.js'
import type { EventSink, RegistryEvent } from './types.js'

/** A parsed rule. */
export interface PreheatRule {
  repository: string
  tag?: string
  scope: string
  platforms: string[]
}

function globToRegExp(glob: string): RegExp {
  let out = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!
    if (c === '*' && glob[i + 1] === '*') {
      out += '.*'
      i++
    } else if (c === '*') out += '[^/]*'
    else if (c === '?') out += '[^/]'
    else out += c.replace(/[.+^${}()|[\]\\]/g, '\\$&')
  }
  return new RegExp(`^${out}$`)
}

/** Parses a rule string; throws TypeError with the reason. */
export function parsePreheatRule(text: string): PreheatRule {
  let rest = text.trim()
  let platforms: string[] = []
  const hash = rest.indexOf('#')
  if (hash >= 0) {
    platforms = rest
      .slice(hash + 1)
      .split(',')
      .map((p) => p.trim())
      .filter((p) => p !== '')
    rest = rest.slice(0, hash)
  }
  let scope = 'all'
  const at = rest.indexOf('@')
  if (at >= 0) {
    scope = rest.slice(at + 1)
    rest = rest.slice(0, at)
  }
  parseScope(scope)
  const colon = rest.lastIndexOf(':')
  const repository = colon >= 0 ? rest.slice(0, colon) : rest
  const tag = colon >= 0 ? rest.slice(colon + 1) : undefined
  if (!/^[a-z0-9._\-/*?]+$/.test(repository))
    throw new TypeError(`invalid repository pattern in rule ${text}`)
  if (tag !== undefined && !/^[\w.\-*?]+$/.test(tag))
    throw new TypeError(`invalid tag pattern in rule ${text}`)
  return { repository, ...(tag === undefined ? {} : { tag }), scope, platforms }
}

/** True when a push of `repository` by `tag` matches (undefined: by digest, never). */
export function ruleMatches(rule: PreheatRule, repository: string, tag: string | undefined): boolean {
  if (tag === undefined || !globToRegExp(rule.repository).test(repository)) return false
  return rule.tag === undefined || globToRegExp(rule.tag).test(tag)
}

/** Options of the rules engine. */
export interface PreheatRulesInit {
  rules: PreheatRule[]
  /** The URL the tracker reaches this registry at (read at each push). */
  registryUrl(): string
  /** Poll interval while following a job. @default 1000 */
  pollIntervalMs?: number
  /** Give up following a job after this long. @default 3600000 */
  followTimeoutMs?: number
}

/** The rules engine. */
export interface PreheatRules {
  /** Feed it registry events; pushes that match start jobs. */
  handle(event: RegistryEvent): void
  /** Resolves when no job is being created or followed (tests). */
  idle(): Promise<void>
  stop(): Promise<void>
}

/** Creates the rules engine. */
export function createPreheatRules(
  components: { client: PreheatClient; sink?: EventSink; logger?: Logger },
  init: PreheatRulesInit,
): PreheatRules {
  const { client, logger } = components
  const stopping = new AbortController()
  const pending = new Set<Promise<void>>()
  const pollMs = init.pollIntervalMs ?? 1000
  const followMs = init.followTimeoutMs ?? 3_600_000

  async function run(rule: PreheatRule, event: RegistryEvent): Promise<void> {
    const base = init.registryUrl()
    const host = new URL(base).host
    const ref = `:${event.tag}`
    const image = `${host}/${event.repository}${ref}`
    const signal = stopping.signal
    let job = await client.create(
      {
        image,
        registryUrl: base,
        scope: rule.scope,
        ...(rule.platforms.length > 0 ? { platforms: rule.platforms } : {}),
      },
      { signal },
    )
    logger?.info({ job: job.id, image, scope: rule.scope }, 'preheat rule started a job')
    const deadline = Date.now() + followMs
    while (job.state === 'pending' || job.state === 'running') {
      if (Date.now() > deadline) return
      await new Promise((r) => setTimeout(r, pollMs))
      if (signal.aborted) return
      job = await client.get(job.id, { signal })
    }
    components.sink?.({
      id: `${job.id}-${job.state}`,
      type: 'preheat',
      at: new Date().toISOString(),
      repository: event.repository,
      ...(event.tag === undefined ? {} : { tag: event.tag }),
      ...(event.digest === undefined ? {} : { digest: event.digest }),
      job: {
        id: job.id,
        state: job.state,
        image: job.image,
        scope: job.scope,
        ...(job.reason === undefined ? {} : { reason: job.reason }),
      },
    })
  }

  return {
    handle(event) {
      if (event.type !== 'push' || stopping.signal.aborted) return
      for (const rule of init.rules) {
        if (!ruleMatches(rule, event.repository, event.tag)) continue
        const p: Promise<void> = run(rule, event)
          .catch((err: unknown) => {
            if (!stopping.signal.aborted)
              logger?.warn({ err, repository: event.repository }, 'preheat rule failed')
          })
          .finally(() => pending.delete(p))
        pending.add(p)
        break
      }
    },
    async idle() {
      while (pending.size > 0) await Promise.allSettled([...pending])
    },
    async stop() {
      stopping.abort()
      await Promise.allSettled([...pending])
    },
  }
}
