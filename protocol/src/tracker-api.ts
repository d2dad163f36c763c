/**
 * The tracker's HTTP API: request and response types and the zod schemas both sides
 * validate with. JSON over HTTP:
 *
 * - `POST /v1/announce` AnnounceRequest → AnnounceResponse
 * - `POST /v1/report` ReportBadPeerRequest → ReportBadPeerResponse
 * - `GET /v1/swarms` → SwarmList; `GET /v1/swarms/:digest` → SwarmDetail (observability)
 *
 * Errors are `{ "error": { "code", "message", "issues"? } }` with a 4xx/5xx status.
 *
 * Back-to-origin rationing: seeds (the registry's peers, `role: "seed"`) are never in
 * `peers`; they appear in `seeds` only when the answer says `allowOrigin: true`, which
 * the tracker grants to at most a few peers of a swarm at once. A peer keeps its origin
 * slot while it keeps announcing as partial; the slot is freed when it completes, stops
 * or expires.
 */
import { z } from 'zod'
import { MAX_BITFIELD_BITS } from './bitfield.js'
import { type Digest, isDigest } from './digest.js'

/** Longest accepted peer id string. */
export const MAX_PEER_ID_LENGTH = 128
/** Most multiaddrs per peer. */
export const MAX_MULTIADDRS = 16
/** Longest multiaddr string. */
export const MAX_MULTIADDR_LENGTH = 256
/** Longest zone or rack label. */
export const MAX_LABEL_LENGTH = 64
/** Most peers a client may ask for in one announce. */
export const MAX_NUM_WANT = 200
/** Longest announce or report body the tracker accepts, in bytes. */
export const MAX_TRACKER_BODY_BYTES = 64 * 1024

/** A peer id string (base58btc or base32 multibase form). */
export const peerIdSchema = z
  .string()
  .min(1)
  .max(MAX_PEER_ID_LENGTH)
  .regex(/^[A-Za-z0-9]+$/, 'peer id must be alphanumeric')
/** A blob digest. */
export const digestSchema = z.string().refine(isDigest, 'invalid digest') as unknown as z.ZodType<Digest>
/** A multiaddr string such as `/ip4/127.0.0.1/tcp/4001/p2p/12D3…`. */
export const multiaddrSchema = z
  .string()
  .min(2)
  .max(MAX_MULTIADDR_LENGTH)
  .regex(/^\/[\x21-\x7e]*$/, 'multiaddr must start with /')
/** A zone or rack label. */
export const labelSchema = z
  .string()
  .max(MAX_LABEL_LENGTH)
  .regex(/^[A-Za-z0-9._:/-]*$/, 'label may hold letters, digits and . _ : / -')
const base64Bitfield = z
  .string()
  .max(Math.ceil(MAX_BITFIELD_BITS / 8 / 3) * 4 + 4)
  .regex(/^[A-Za-z0-9+/]*={0,2}$/, 'bitfield must be base64')

/** What a peer is to the swarm: an ordinary peer, or a seed (the origin registry's peer). */
export const peerRoleSchema = z.enum(['peer', 'seed'])
/** Announce lifecycle events. */
export const announceEventSchema = z.enum(['started', 'completed', 'stopped'])

/** A peer's announce for one blob. */
export const announceRequestSchema = z
  .object({
    peerId: peerIdSchema,
    multiaddrs: z.array(multiaddrSchema).max(MAX_MULTIADDRS),
    digest: digestSchema,
    role: peerRoleSchema.default('peer'),
    /** complete: holds the whole blob; partial: holds some (or no) pieces. */
    state: z.enum(['complete', 'partial']),
    /** Number of pieces held (summary of the bitfield). */
    piecesHeld: z.number().int().min(0).max(MAX_BITFIELD_BITS).optional(),
    /** Number of pieces of the blob (needed with `bitfield`). */
    pieceCount: z.number().int().min(1).max(MAX_BITFIELD_BITS).optional(),
    /** Held pieces as a base64 bitfield (see protocol/src/bitfield.ts). */
    bitfield: base64Bitfield.optional(),
    /** Current upload load (active uploads, or any monotone measure); lower is preferred. */
    uploadLoad: z.number().min(0).max(1e9).default(0),
    zone: labelSchema.optional(),
    rack: labelSchema.optional(),
    event: announceEventSchema.optional(),
    /** True when the peer wants to fetch from the origin; defaults to true for a partial peer. */
    wantsSeed: z.boolean().optional(),
    /** How many peers the client wants at most (the tracker caps it). */
    numWant: z.number().int().min(0).max(MAX_NUM_WANT).optional(),
  })
  .strict()
  .refine((r) => r.bitfield === undefined || r.pieceCount !== undefined, {
    message: 'bitfield needs pieceCount',
    path: ['bitfield'],
  })
  .refine((r) => r.piecesHeld === undefined || r.pieceCount === undefined || r.piecesHeld <= r.pieceCount, {
    message: 'piecesHeld exceeds pieceCount',
    path: ['piecesHeld'],
  })

/** Agents that must hold a piece for the tracker to call it spread (announce answers to seeds). */
export const SPREAD_HOLDERS = 2

/** A peer's announce as sent (role and uploadLoad may be left out). */
export type AnnounceRequestInput = z.input<typeof announceRequestSchema>
/** A validated announce. */
export type AnnounceRequest = z.output<typeof announceRequestSchema>

/** One peer handed out by the tracker. */
export const announcePeerSchema = z.object({
  peerId: peerIdSchema,
  multiaddrs: z.array(multiaddrSchema).max(MAX_MULTIADDRS),
  complete: z.boolean(),
  zone: labelSchema.optional(),
  rack: labelSchema.optional(),
  piecesHeld: z.number().int().min(0).optional(),
  pieceCount: z.number().int().min(1).optional(),
  bitfield: base64Bitfield.optional(),
  uploadLoad: z.number().min(0).optional(),
})
/** One peer handed out by the tracker. */
export type AnnouncePeer = z.infer<typeof announcePeerSchema>

/** Longest repository name in a preheat task. */
export const MAX_TASK_REPOSITORY_LENGTH = 255
/** Most preheat tasks handed out in one answer. */
export const MAX_TASKS_PER_ANSWER = 64

/**
 * A preheat task handed to an agent in an announce or heartbeat answer (pull model):
 * fetch this blob through the swarm into the cache and keep it seeded. The agent says it
 * is done by listing the digest in `held` of a later heartbeat.
 */
export const preheatTaskSchema = z.object({
  jobId: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[A-Za-z0-9_-]+$/),
  digest: digestSchema,
  /** The registry host the image is named after (the agent's upstream host, `ns`). */
  host: z.string().min(1).max(255),
  repository: z.string().min(1).max(MAX_TASK_REPOSITORY_LENGTH),
  size: z.number().int().min(0).optional(),
})
/** A preheat task. */
export type PreheatTask = z.infer<typeof preheatTaskSchema>

/** The tracker's answer to an announce. */
export const announceResponseSchema = z.object({
  /** Other peers of the swarm (never the asking peer, never seeds). */
  peers: z.array(announcePeerSchema).max(MAX_NUM_WANT),
  /** Seeds of the swarm; non-empty only when allowOrigin is true. */
  seeds: z.array(announcePeerSchema).max(MAX_NUM_WANT),
  /** Announce again after this many milliseconds. */
  intervalMs: z.number().int().min(0),
  /** True when this peer may fetch from the origin (seed or upstream) now. */
  allowOrigin: z.boolean(),
  /** Preheat tasks for this peer (optional; trackers without preheat jobs leave it out). */
  tasks: z.array(preheatTaskSchema).max(MAX_TASKS_PER_ANSWER).optional(),
  /**
   * Only in answers to a seed that gave `pieceCount`: the pieces at least SPREAD_HOLDERS
   * agents of the swarm hold, as the tracker last heard (complete agents hold every piece,
   * partial ones what their last announce's bitfield said), a base64 bitfield of
   * `pieceCount` bits. The seed keeps holding back such a piece (its first-copy rule):
   * the swarm has it without the origin.
   */
  spread: base64Bitfield.optional(),
})
/** The tracker's answer to an announce. */
export type AnnounceResponse = z.infer<typeof announceResponseSchema>

/**
 * An agent's heartbeat announce (`POST /v1/heartbeat`): sent every `intervalMs` even
 * when the agent downloads nothing, with its stats (for the live view) and the digests
 * of its preheat tasks it now holds complete or failed to fetch.
 */
export const heartbeatRequestSchema = z
  .object({
    peerId: peerIdSchema,
    multiaddrs: z.array(multiaddrSchema).max(MAX_MULTIADDRS),
    zone: labelSchema.optional(),
    rack: labelSchema.optional(),
    /** The agent's mirror endpoint (host:port or URL), for the live view. */
    address: z.string().max(256).optional(),
    cacheUsedBytes: z.number().min(0).optional(),
    cacheQuotaBytes: z.number().min(0).optional(),
    /** Bytes per second served to other peers (recent average). */
    uploadBytesPerSec: z.number().min(0).optional(),
    /** Bytes per second obtained from peers, the seed or the upstream (recent average). */
    downloadBytesPerSec: z.number().min(0).optional(),
    /** Totals by source since start: peer, seed, upstream, uploaded. */
    bytesBySource: z
      .partialRecord(z.enum(['peer', 'seed', 'upstream', 'cache', 'uploaded']), z.number().min(0))
      .optional(),
    /** Recently active blobs with the bytes this agent got for each, by source (live view). */
    blobs: z
      .array(
        z.object({
          digest: digestSchema,
          peer: z.number().min(0),
          seed: z.number().min(0),
          upstream: z.number().min(0),
        }),
      )
      .max(64)
      .optional(),
    /** Preheat task digests this agent holds complete now. */
    held: z.array(digestSchema).max(1024).optional(),
    /** Preheat tasks that failed on this agent. */
    failed: z
      .array(z.object({ jobId: z.string().max(64), digest: digestSchema, reason: z.string().max(512) }))
      .max(MAX_TASKS_PER_ANSWER)
      .optional(),
  })
  .strict()
/** An agent heartbeat. */
export type HeartbeatRequest = z.infer<typeof heartbeatRequestSchema>
/** The answer to a heartbeat: when to beat again and the preheat tasks to work on. */
export const heartbeatResponseSchema = z.object({
  intervalMs: z.number().int().min(0),
  tasks: z.array(preheatTaskSchema).max(MAX_TASKS_PER_ANSWER),
})
/** The answer to a heartbeat. */
export type HeartbeatResponse = z.infer<typeof heartbeatResponseSchema>

/** A report that `peerId` served bad data for `digest`. */
export const reportBadPeerRequestSchema = z
  .object({
    reporter: peerIdSchema,
    peerId: peerIdSchema,
    digest: digestSchema,
    reason: z.string().max(256).optional(),
    pieceIndex: z.number().int().min(0).max(MAX_BITFIELD_BITS).optional(),
  })
  .strict()
/** A bad-peer report. */
export type ReportBadPeerRequest = z.infer<typeof reportBadPeerRequestSchema>

/** The answer to a report: whether the peer is now dropped from the swarm, and the distinct reporters so far. */
export const reportBadPeerResponseSchema = z.object({
  dropped: z.boolean(),
  reporters: z.number().int().min(0),
})
/** The answer to a report. */
export type ReportBadPeerResponse = z.infer<typeof reportBadPeerResponseSchema>

/** Summary of one swarm (GET /v1/swarms). */
export const swarmSummarySchema = z.object({
  digest: digestSchema,
  peers: z.number().int(),
  complete: z.number().int(),
  seeds: z.number().int(),
  originSlotsInUse: z.number().int(),
})
/** Summary of one swarm. */
export type SwarmSummary = z.infer<typeof swarmSummarySchema>
/** GET /v1/swarms. */
export const swarmListSchema = z.object({ swarms: z.array(swarmSummarySchema) })
/** GET /v1/swarms. */
export type SwarmList = z.infer<typeof swarmListSchema>

/** One peer as the tracker sees it (GET /v1/swarms/:digest). */
export const swarmPeerSchema = announcePeerSchema.extend({
  role: peerRoleSchema,
  lastSeenMs: z.number(),
  originSlot: z.boolean(),
})
/** One peer as the tracker sees it. */
export type SwarmPeer = z.infer<typeof swarmPeerSchema>
/** GET /v1/swarms/:digest. */
export const swarmDetailSchema = z.object({
  digest: digestSchema,
  peers: z.array(swarmPeerSchema),
  banned: z.array(peerIdSchema),
})
/** GET /v1/swarms/:digest. */
export type SwarmDetail = z.infer<typeof swarmDetailSchema>

/** The error body of every tracker endpoint. */
export interface TrackerErrorBody {
  error: { code: string; message: string; issues?: string[] }
}

/** Renders zod issues as `path: message` lines (bounded). */
export function formatIssues(error: z.ZodError, max = 20): string[] {
  return error.issues
    .slice(0, max)
    .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(body)'}: ${i.message}`)
}
