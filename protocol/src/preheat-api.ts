/**
 * The tracker's preheat admin API (token-protected with `Authorization: Bearer <token>`):
 *
 * - `POST /v1/preheat` PreheatCreateRequest → PreheatJob (201)
 * - `GET /v1/preheat` → `{ jobs: PreheatJob[] }` (newest first)
 * - `GET /v1/preheat/:id` → PreheatJob
 * - `DELETE /v1/preheat/:id` → PreheatJob (cancelled, unless it had already finished)
 *
 * A job names an image (tag or digest) on any registry the tracker can reach, the
 * platforms to take from an index, and a scope: the seed registry, every agent, a count
 * or a percentage of the agents, or the agents of one zone.
 */
import { z } from 'zod'
import { type Digest, isDigest } from './digest.js'
import { labelSchema } from './tracker-api.js'

/** Where a preheat job puts the image. */
export type PreheatScope =
  | { type: 'all' }
  | { type: 'seed' }
  | { type: 'count'; count: number }
  | { type: 'percent'; percent: number }
  | { type: 'zone'; zone: string }

/**
 * Parses a scope string: `all`, `seed`, `count:N`, `percent:P` (0 < P <= 100) or
 * `zone:Z`. Throws TypeError with a readable message otherwise.
 */
export function parseScope(text: string): PreheatScope {
  if (text === 'all' || text === 'seed') return { type: text }
  const [kind, value = ''] = [text.slice(0, text.indexOf(':')), text.slice(text.indexOf(':') + 1)]
  if (kind === 'count' && /^[1-9]\d{0,5}$/.test(value)) return { type: 'count', count: Number(value) }
  if (kind === 'percent' && /^\d{1,3}(\.\d+)?$/.test(value)) {
    const percent = Number(value)
    if (percent > 0 && percent <= 100) return { type: 'percent', percent }
  }
  if (kind === 'zone' && value !== '' && labelSchema.safeParse(value).success)
    return { type: 'zone', zone: value }
  throw new TypeError(
    `invalid scope ${JSON.stringify(text)}: expected all, seed, count:N, percent:P or zone:Z`,
  )
}

/** Renders a scope back to its string form. */
export function formatScope(scope: PreheatScope): string {
  switch (scope.type) {
    case 'count':
      return `count:${scope.count}`
    case 'percent':
      return `percent:${scope.percent}`
    case 'zone':
      return `zone:${scope.zone}`
    default:
      return scope.type
  }
}

/** A parsed image reference `host[:port]/repository[:tag][@digest]`. */
export interface ImageReference {
  host: string
  repository: string
  /** The tag or digest to resolve. */
  reference: string
}

/**
 * Parses an image reference. The host part is required unless `defaultHost` is given
 * (a first component without `.`/`:` that is not `localhost` is a repository path).
 * Throws TypeError when malformed.
 */
export function parseImageReference(image: string, defaultHost?: string): ImageReference {
  if (image.length === 0 || image.length > 512 || /\s/.test(image))
    throw new TypeError('invalid image reference')
  let rest = image
  let host = defaultHost
  const slash = rest.indexOf('/')
  const first = slash < 0 ? '' : rest.slice(0, slash)
  if (first !== '' && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    host = first
    rest = rest.slice(slash + 1)
  }
  if (host === undefined) throw new TypeError(`image ${image} names no registry host`)
  let reference = 'latest'
  const at = rest.indexOf('@')
  if (at >= 0) {
    reference = rest.slice(at + 1)
    rest = rest.slice(0, at)
    if (!isDigest(reference)) throw new TypeError(`invalid digest in ${image}`)
  } else {
    const colon = rest.lastIndexOf(':')
    if (colon >= 0) {
      reference = rest.slice(colon + 1)
      rest = rest.slice(0, colon)
      if (!/^[\w][\w.-]{0,127}$/.test(reference)) throw new TypeError(`invalid tag in ${image}`)
    }
  }
  if (!/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/.test(rest))
    throw new TypeError(`invalid repository in ${image}`)
  return { host, repository: rest, reference }
}

/** A `os/arch[/variant]` platform filter. */
export const platformSchema = z
  .string()
  .regex(/^[a-z0-9_.-]+\/[a-z0-9_.-]+(\/[a-z0-9_.-]+)?$/, 'expected os/arch or os/arch/variant')

/** The body of POST /v1/preheat. */
export const preheatCreateRequestSchema = z
  .object({
    /** `host[:port]/repository[:tag|@digest]`. */
    image: z.string().min(1).max(512),
    /** Base URL of the image's registry; by default http for loopback hosts, https otherwise. */
    registryUrl: z.url().max(512).optional(),
    /** Platforms to take from an index; `all` (the default) takes every entry. */
    platforms: z
      .array(z.union([z.literal('all'), platformSchema]))
      .max(32)
      .optional(),
    /** all | seed | count:N | percent:P | zone:Z (default all). */
    scope: z.string().max(80).optional(),
    /** Credentials for the image's registry, used by the tracker to resolve it; never stored. */
    username: z.string().max(256).optional(),
    password: z.string().max(1024).optional(),
    token: z.string().max(4096).optional(),
  })
  .strict()
/** The body of POST /v1/preheat. */
export type PreheatCreateRequest = z.infer<typeof preheatCreateRequestSchema>

/** Job states. */
export const preheatJobStates = ['pending', 'running', 'succeeded', 'failed', 'cancelled'] as const
/** A job state. */
export type PreheatJobState = (typeof preheatJobStates)[number]
/** Target states. */
export type PreheatTargetState = 'pending' | 'done' | 'failed' | 'cancelled'

/** One blob of a job. */
export interface PreheatBlob {
  digest: Digest
  size: number
  mediaType: string
}

/** One target of a job: an agent (its peer id) or the seed registry (`seed`). */
export interface PreheatTarget {
  id: string
  kind: 'agent' | 'seed'
  zone?: string
  state: PreheatTargetState
  /** Digests of the job's blobs this target holds. */
  held: Digest[]
  bytesDone: number
  error?: string
}

/** A preheat job as stored and served. */
export interface PreheatJob {
  id: string
  image: string
  host: string
  repository: string
  reference: string
  registryUrl: string
  platforms: string[]
  scope: string
  state: PreheatJobState
  /** Why the job failed or was cancelled. */
  reason?: string
  createdAt: string
  updatedAt: string
  startedAt?: string
  finishedAt?: string
  /** The digest the reference resolved to. */
  manifestDigest?: Digest
  blobs: PreheatBlob[]
  targets: PreheatTarget[]
  progress: { targets: number; targetsDone: number; bytesTotal: number; bytesDone: number }
}

/** True for the states a job never leaves. */
export function isFinalJobState(state: PreheatJobState): boolean {
  return state === 'succeeded' || state === 'failed' || state === 'cancelled'
}
