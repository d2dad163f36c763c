/**
 * The tracker's configuration section: schema, defaults and the one parser that reports
 * every problem at once. Files, environment (SHOAL_TRACKER_<SETTING>, e.g.
 * SHOAL_TRACKER_STORE_REDIS_URL) and flags (--store-redis-url) map onto these names.
 */
import { z } from 'zod'
import { ConfigError } from '../../protocol/src/index.js'

const SECOND_MS = 1000
const MINUTE_MS = 60 * SECOND_MS

function isListenAddress(value: string): boolean {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(value)
  return match !== null && Number(match[3]) <= 65535
}

/** Where the tracker keeps its state. */
export const trackerStoreSchema = z.strictObject({
  type: z
    .enum(['memory', 'redis'])
    .default('memory')
    .describe('where swarm state lives: memory (one process) or redis (shared by several tracker replicas)'),
  redisUrl: z
    .string()
    .regex(/^rediss?:\/\/\S+$/, 'expected a redis:// or rediss:// URL')
    .optional()
    .describe('Redis URL when store.type is redis, e.g. redis://127.0.0.1:6379/0'),
  keyPrefix: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[A-Za-z0-9:_.-]+$/, 'letters, digits and : _ . - only')
    .default('shoal:tracker:')
    .describe('prefix of every Redis key the tracker writes'),
})

const positiveInt = () => z.number().int().positive()

/** Preheat jobs and agent heartbeats (docs/adr/0005-preheat-jobs-in-the-tracker.md). */
export const trackerPreheatSchema = z.strictObject({
  adminToken: z
    .string()
    .min(16, 'use at least 16 characters')
    .max(256)
    .optional()
    .describe('bearer token of the admin API (/v1/preheat); absent, the admin API refuses every request'),
  maxConcurrentJobs: positiveInt().max(64).default(4).describe('preheat jobs resolved or running at once'),
  heartbeatIntervalMs: positiveInt()
    .default(5 * SECOND_MS)
    .describe('how often agents are told to send a heartbeat (stats, preheat progress), in milliseconds'),
  agentTtlMs: positiveInt()
    .optional()
    .describe(
      'an agent silent this long is gone and its preheat targets fail (default 3 heartbeats, at least 15 s), in milliseconds',
    ),
  jobTimeoutMs: positiveInt()
    .default(30 * MINUTE_MS)
    .describe('a running preheat job not finished after this long fails, in milliseconds'),
  seedRegistryUrl: z
    .url()
    .optional()
    .describe("URL of the seed registry that scope 'seed' pulls through (default: the image's own registry)"),
  retainFinishedJobs: positiveInt().default(200).describe('finished preheat jobs kept for listing'),
})

/** Every tracker setting. Field names carry their unit. */
export const trackerConfigSchema = z
  .strictObject({
    listen: z
      .string()
      .refine(isListenAddress, 'expected host:port with a port from 0 to 65535 (IPv6 hosts in brackets)')
      .default('127.0.0.1:7070')
      .describe('address the tracker API listens on (host:port)'),
    store: trackerStoreSchema.prefault({}),
    dataDir: z
      .string()
      .min(1)
      .optional()
      .describe('folder for durable state with the memory store (preheat jobs in preheat-jobs.json)'),
    preheat: trackerPreheatSchema.prefault({}),
    announceIntervalMs: positiveInt()
      .default(10 * SECOND_MS)
      .describe('how often peers are told to announce again, in milliseconds'),
    peerTtlMs: positiveInt()
      .default(35 * SECOND_MS)
      .describe('a peer that has not announced for this long leaves its swarm, in milliseconds'),
    maxPeersPerAnswer: positiveInt().max(200).default(30).describe('most peers handed out per announce'),
    originSlotsPerSwarm: z
      .number()
      .int()
      .min(0)
      .default(8)
      .describe(
        'how many peers of a swarm may fetch from the origin (seed) at once; the seed sends each piece once anyway (its first-copy rule), so more holders only spread its pieces faster',
      ),
    exclusiveOriginSlots: z
      .boolean()
      .default(false)
      .describe(
        'give a node no origin slot while it holds one of another swarm and others of this swarm want one (a node pulling several layers at once then takes one slot, not one per layer, and the origin spreads over more downlinks); in the simulator it sped up slow links (2 Mbit/s nodes) and slowed the last node on fast ones, so it is off',
      ),
    badPeerReporters: positiveInt()
      .default(2)
      .describe(
        'distinct reporters after which a peer is dropped from a swarm (one report from a seed suffices)',
      ),
    badPeerBanMs: positiveInt()
      .default(10 * MINUTE_MS)
      .describe('how long a dropped bad peer is refused re-entry to the swarm, in milliseconds'),
    seedPeerIds: z
      .array(
        z
          .string()
          .min(1)
          .max(128)
          .regex(/^[A-Za-z0-9]+$/, 'expected a peer id'),
      )
      .max(64)
      .default([])
      .describe(
        'peer ids allowed to announce as seeds; a seed report drops a peer at once (empty: any peer may)',
      ),
    logLevel: z
      .enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
      .default('info')
      .describe('log level'),
  })
  .superRefine((c, ctx) => {
    if (c.peerTtlMs <= c.announceIntervalMs) {
      ctx.addIssue({
        code: 'custom',
        path: ['peerTtlMs'],
        message: `must be longer than announceIntervalMs (${c.announceIntervalMs}) or peers expire between announces`,
      })
    }
    if (c.store.type === 'redis' && c.store.redisUrl === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['store', 'redisUrl'],
        message: 'required when store.type is redis',
      })
    }
  })

/** The tracker's configuration after defaults were applied. */
export type TrackerConfig = z.output<typeof trackerConfigSchema>
/** What a file, the environment or flags may give before defaults. */
export type TrackerConfigInput = z.input<typeof trackerConfigSchema>

/**
 * Validates raw settings and fills in defaults. Throws ConfigError whose `problems`
 * lists every problem as `path: message`.
 */
export function parseTrackerConfig(raw: unknown): TrackerConfig {
  const result = trackerConfigSchema.safeParse(raw ?? {})
  if (result.success) return result.data
  throw new ConfigError(
    result.error.issues.map((issue) => {
      const path = issue.path.length === 0 ? '(root)' : issue.path.map(String).join('.')
      if (issue.code === 'unrecognized_keys') return `${path}: unknown setting ${issue.keys.join(', ')}`
      return `${path}: ${issue.message}`
    }),
  )
}
