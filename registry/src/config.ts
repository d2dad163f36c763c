/**
 * The registry's configuration section: its schema, its defaults and the one parser
 * that reports every problem at once. Config files, environment variables
 * (SHOAL_REGISTRY_<SETTING>) and command-line flags (--<setting>) all map onto the
 * names defined here; the CLI derives those names from this schema, so adding a
 * setting here adds its variable and flag too.
 */
import { z } from 'zod'
import { ConfigError, isRepositoryName } from '../../protocol/src/index.js'
import { parsePreheatRule } from './events/preheat-rules.js'
import { DEFAULT_REPEAT_AFTER_MS } from './seeder/first-copy.js'

const MINUTE_MS = 60_000
const HOUR_MS = 60 * MINUTE_MS

/** A TCP listen address `host:port` (IPv6 hosts in brackets); port 0 picks a free port. */
export const listenAddressSchema = z.string().refine((value) => parseListenAddress(value) !== undefined, {
  message: 'expected host:port with a port from 0 to 65535 (IPv6 hosts in brackets, e.g. [::1]:5000)',
})

/** Log levels pino understands, plus `silent`. */
export const logLevelSchema = z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])

/** One upstream registry that the pull-through cache may fetch from. */
export const upstreamSchema = z.strictObject({
  /** Base URL of the upstream registry, e.g. `https://registry-1.docker.io`. */
  url: z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' }),
  /**
   * Repository prefix this upstream serves (`docker.io` makes `docker.io/library/x`
   * come from this upstream as `library/x`); without it the upstream serves every name.
   */
  prefix: z.string().min(1).optional(),
  username: z.string().optional(),
  password: z.string().optional(),
})

const nonNegativeInt = () => z.number().int().nonnegative()

/** Rules across the upstream list: prefixes are repository names, unique, at most one catch-all. */
function checkUpstreams(upstreams: Array<z.infer<typeof upstreamSchema>>, ctx: z.RefinementCtx): void {
  const seen = new Set<string>()
  let catchAll = 0
  upstreams.forEach((upstream, index) => {
    if (upstream.prefix === undefined) {
      catchAll++
      if (catchAll === 2) {
        ctx.addIssue({ code: 'custom', path: [index], message: 'at most one upstream may have no prefix' })
      }
    } else if (!isRepositoryName(upstream.prefix)) {
      ctx.addIssue({
        code: 'custom',
        path: [index, 'prefix'],
        message: `"${upstream.prefix}" is not a repository name prefix (lowercase path components, e.g. docker.io)`,
      })
    } else if (seen.has(upstream.prefix)) {
      ctx.addIssue({
        code: 'custom',
        path: [index, 'prefix'],
        message: `prefix "${upstream.prefix}" is used twice`,
      })
    } else {
      seen.add(upstream.prefix)
    }
    if ((upstream.username === undefined) !== (upstream.password === undefined)) {
      ctx.addIssue({ code: 'custom', path: [index], message: 'give both username and password, or neither' })
    }
  })
}

/** A libp2p multiaddr string such as `/ip4/127.0.0.1/tcp/4001` (checked loosely here, fully at start). */
const multiaddrString = z
  .string()
  .regex(/^\/[a-z0-9]/, 'expected a multiaddr such as /ip4/127.0.0.1/tcp/4001')

/**
 * The registry as the swarm's seed: a libp2p node serving every held blob's pieces, signed
 * piece maps over HTTP, announces to the tracker and DHT provider records.
 */
export const seedConfigSchema = z.strictObject({
  enabled: z.boolean().default(true).describe('run the seed: libp2p piece server, piece maps, announces'),
  listen: z
    .array(multiaddrString)
    .default(['/ip4/127.0.0.1/tcp/0'])
    .describe('libp2p multiaddrs the seed listens on'),
  announce: z
    .array(multiaddrString)
    .default([])
    .describe('libp2p multiaddrs announced to peers instead of the listen addresses'),
  lane: z
    .boolean()
    .default(true)
    .describe('also serve pieces on the piece lane, keyed over libp2p (ADR 0008), beside libp2p streams'),
  lanePort: z
    .number()
    .int()
    .min(0)
    .max(65_535)
    .default(0)
    .describe('TCP port of the piece lane, on the host of the first listen address (0: any free port)'),
  trackerUrl: z
    .url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })
    .optional()
    .describe('tracker the seed announces every held blob to (none: no announces)'),
  uploadBytesPerSecond: nonNegativeInt()
    .default(0)
    .describe('cap on the piece bytes the seed sends to peers per second (0: unlimited)'),
  maxConcurrentUploads: z
    .number()
    .int()
    .positive()
    .default(16)
    .describe('piece requests the seed serves at once; more are answered busy'),
  repeatPieceAfterMs: nonNegativeInt()
    .default(DEFAULT_REPEAT_AFTER_MS)
    .describe(
      'first-copy rule: a piece sent to one peer is refused to others while it is on its way and at least this long after (as long as the swarm had been pulling, if longer), and beyond that while the tracker says two agents hold it, so agents pass it on (0: off)',
    ),
  bootstrap: z
    .array(multiaddrString)
    .default([])
    .describe('libp2p multiaddrs (with /p2p/<id>) the seed dials to join the DHT'),
  pskFile: z
    .string()
    .min(1)
    .optional()
    .describe('file holding the libp2p pre-shared key of a private cluster (swarm key format)'),
  allowPeers: z
    .array(z.string().min(1))
    .default([])
    .describe('peer ids allowed to connect to the seed (none: anyone)'),
  reprovideIntervalMs: z
    .number()
    .int()
    .positive()
    .default(6 * HOUR_MS)
    .describe('how often every held blob is provided in the DHT again, in milliseconds'),
})

/** Webhooks and preheat rules (registry/src/events, docs/adr/0005). */
export const eventsConfigSchema = z
  .strictObject({
    webhookUrls: z
      .array(z.url())
      .max(32)
      .default([])
      .describe('URLs that receive push, pull, delete and preheat events as JSON POSTs'),
    webhookEvents: z
      .array(z.enum(['push', 'pull', 'delete', 'preheat']))
      .default(['push', 'pull', 'delete', 'preheat'])
      .describe('event types sent to the webhooks'),
    webhookMaxAttempts: z.number().int().min(1).max(20).default(6).describe('attempts per webhook delivery'),
    webhookInitialBackoffMs: z
      .number()
      .int()
      .positive()
      .default(500)
      .describe('wait before the first webhook retry, doubled each retry, in milliseconds'),
    webhookMaxBackoffMs: z
      .number()
      .int()
      .positive()
      .default(30_000)
      .describe('longest wait between webhook retries, in milliseconds'),
    trackerUrl: z.url().optional().describe('tracker whose admin API preheat rules call'),
    trackerAdminToken: z.string().min(1).optional().describe("the tracker's admin token, for preheat rules"),
    preheatRules: z
      .array(
        z.string().refine((v) => {
          try {
            parsePreheatRule(v)
            return true
          } catch {
            return false
          }
        }, 'expected <repository-glob>[:<tag-glob>][@all|seed|count:N|percent:P|zone:Z][#os/arch,...]'),
      )
      .default([])
      .describe(
        'preheat a pushed image whose repository and tag match: repo-glob[:tag-glob][@scope][#platforms]',
      ),
    preheatRegistryUrl: z
      .url()
      .optional()
      .describe('URL the tracker reaches this registry at, for preheat rules (default http://<listen>)'),
  })
  .superRefine((e, ctx) => {
    if (e.preheatRules.length === 0) return
    for (const key of ['trackerUrl', 'trackerAdminToken'] as const) {
      if (e[key] === undefined)
        ctx.addIssue({ code: 'custom', path: [key], message: 'required when preheatRules are set' })
    }
  })

/**
 * Every registry setting. Field names carry their unit (`Ms`, `Bytes`). Each field's
 * `.describe()` text is the one-line documentation shown in `--help`.
 */
export const registryConfigSchema = z.strictObject({
  listen: listenAddressSchema
    .default('127.0.0.1:5000')
    .describe('address the HTTP API listens on (host:port)'),
  dataDir: z
    .string()
    .min(1)
    .default('.shoal/registry')
    .describe('folder holding blobs, manifests and uploads (filesystem storage)'),
  storageDriver: z
    .enum(['filesystem', 'memory'])
    .default('filesystem')
    .describe('where content is stored: filesystem (under dataDir) or memory (lost at exit)'),
  maxManifestBytes: z
    .number()
    .int()
    .positive()
    .default(4 * 1024 * 1024)
    .describe('largest manifest accepted on push, in bytes'),
  uploadTtlMs: nonNegativeInt()
    .default(24 * HOUR_MS)
    .describe('idle upload sessions older than this are removed, in milliseconds'),
  gcIntervalMs: nonNegativeInt()
    .default(HOUR_MS)
    .describe('how often garbage collection runs, in milliseconds (0 disables it)'),
  gcGraceMs: nonNegativeInt()
    .default(HOUR_MS)
    .describe('unreferenced content younger than this survives garbage collection, in milliseconds'),
  upstreams: z
    .array(upstreamSchema)
    .superRefine(checkUpstreams)
    .default([])
    .describe('upstream registries for the pull-through cache ([prefix=]url; none disables it)'),
  tagTtlMs: nonNegativeInt()
    .default(MINUTE_MS)
    .describe('how long a tag resolved from an upstream is trusted before asking again, in milliseconds'),
  logLevel: logLevelSchema.default('info').describe('log level'),
  seed: seedConfigSchema.prefault({}),
  events: eventsConfigSchema.prefault({}),
})

/** The registry's configuration after defaults were applied. */
export type RegistryConfig = z.infer<typeof registryConfigSchema>
/** The seed's settings. */
export type SeedConfig = z.infer<typeof seedConfigSchema>
/** One pull-through upstream. */
export type UpstreamConfig = z.infer<typeof upstreamSchema>
/** What a config file, the environment or flags may give before defaults: any subset. */
export type RegistryConfigInput = z.input<typeof registryConfigSchema>

/**
 * Validates raw settings (merged from file, environment and flags) and fills in
 * defaults. Throws ConfigError whose `problems` lists every problem found, each as
 * `path: message`, so that a user can fix them all in one go.
 */
export function parseRegistryConfig(raw: unknown): RegistryConfig {
  return parseWithSchema(registryConfigSchema, raw ?? {})
}

/**
 * Parses `raw` with any zod schema and turns all of its issues into one ConfigError.
 * Shared by the config parsers so that every component reports problems alike.
 */
export function parseWithSchema<S extends z.ZodType>(schema: S, raw: unknown): z.output<S> {
  const result = schema.safeParse(raw)
  if (result.success) return result.data
  throw new ConfigError(result.error.issues.map(formatIssue))
}

function formatIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.length === 0 ? '(root)' : issue.path.map(String).join('.')
  if (issue.code === 'unrecognized_keys') {
    return `${path}: unknown setting${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`
  }
  return `${path}: ${issue.message}`
}

/** A parsed listen address. */
export interface ListenAddress {
  host: string
  port: number
}

/**
 * Splits `host:port` (or `[v6]:port`) into its parts; undefined when it is not a
 * valid listen address.
 */
export function parseListenAddress(value: string): ListenAddress | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(value)
  if (!match) return undefined
  const port = Number(match[3])
  if (port > 65535) return undefined
  return { host: (match[1] ?? match[2])!, port }
}
