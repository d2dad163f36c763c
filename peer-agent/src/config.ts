/**
 * The peer agent's configuration section: schema, defaults and the one parser that
 * reports every problem at once. Files (`agent:` section), environment
 * (SHOAL_AGENT_<SETTING>) and flags (--<setting>) all map onto these names; the CLI
 * derives them from this schema.
 */
import { z } from 'zod'
import { ConfigError, labelSchema, multiaddrSchema, peerIdSchema } from '../../protocol/src/index.js'
import {
  MAX_CONCURRENT_UPLOADS,
  MAX_UPLOADS_PER_PIECE,
  UPLOAD_TURN_HOLD_MS,
} from '../../protocol/src/p2p/index.js'
import { MAX_IN_FLIGHT, STARTING_PEERS, STARTING_PIECES } from './transfer/piece-picker.js'

const SECOND_MS = 1000
const GIB = 1024 * 1024 * 1024

/** `host:port` (IPv6 hosts in brackets); port 0 picks a free port. */
function isListenAddress(value: string): boolean {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(value)
  return match !== null && Number(match[3]) <= 65535
}

/** A registry host as image references spell it: `docker.io`, `ghcr.io`, `127.0.0.1:5000`. */
const REGISTRY_HOST =
  /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::\d{1,5})?$/

/** True when `value` is a registry host name with an optional port (lower case). */
export function isRegistryHost(value: string): boolean {
  return value.length <= 255 && REGISTRY_HOST.test(value)
}

const httpUrl = () => z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })

/**
 * One upstream host mapping: images named `<host>/...` (containerd's `?ns=<host>`, or
 * docker.io for Docker's registry-mirrors) are fetched from `url` with these credentials.
 */
export const agentUpstreamSchema = z.strictObject({
  /** The registry host as image names spell it, e.g. `docker.io` or `ghcr.io`. */
  host: z.string().refine(isRegistryHost, 'expected a registry host such as docker.io or 127.0.0.1:5000'),
  /** Base URL to fetch from, e.g. `https://registry-1.docker.io`. */
  url: httpUrl(),
  username: z.string().optional(),
  password: z.string().optional(),
})

const nonNegativeInt = () => z.number().int().nonnegative()

function checkUpstreams(upstreams: Array<z.infer<typeof agentUpstreamSchema>>, ctx: z.RefinementCtx): void {
  const seen = new Set<string>()
  upstreams.forEach((upstream, index) => {
    if (seen.has(upstream.host)) {
      ctx.addIssue({
        code: 'custom',
        path: [index, 'host'],
        message: `host "${upstream.host}" is mapped twice`,
      })
    }
    seen.add(upstream.host)
    if ((upstream.username === undefined) !== (upstream.password === undefined)) {
      ctx.addIssue({ code: 'custom', path: [index], message: 'give both username and password, or neither' })
    }
  })
}

/**
 * Every agent setting. Field names carry their unit. Each `.describe()` text is the
 * one-line documentation shown in `--help` and docs/CONFIGURATION.md.
 */
export const agentConfigSchema = z.strictObject({
  listen: z
    .string()
    .refine(isListenAddress, 'expected host:port with a port from 0 to 65535 (IPv6 hosts in brackets)')
    .default('127.0.0.1:5001')
    .describe('address the mirror endpoint listens on (host:port); containerd and docker pull from it'),
  dataDir: z
    .string()
    .min(1)
    .default('.shoal/agent')
    .describe('folder holding the blob cache and the manifest cache'),
  cacheQuotaBytes: z
    .number()
    .int()
    .positive()
    .default(10 * GIB)
    .describe('disk budget of the blob cache, in bytes; least recently used blobs are evicted beyond it'),
  registryUrl: httpUrl()
    .default('http://127.0.0.1:5000')
    .describe('URL of the seed registry; image hosts without an upstream mapping are fetched from it'),
  registryPeerId: peerIdSchema
    .optional()
    .describe('libp2p peer id of the seed registry, the signer piece maps must carry (trust root)'),
  seedNamePrefix: z
    .boolean()
    .default(false)
    .describe(
      'ask the seed for <host>/<name> for image hosts other than its own (when the seed is a pull-through cache with host prefixes)',
    ),
  trackerUrl: httpUrl().optional().describe('URL of the tracker that hands out peers'),
  upstreams: z
    .array(agentUpstreamSchema)
    .superRefine(checkUpstreams)
    .default([])
    .describe(
      'upstream registries by image host (host=url, credentials in the URL); other hosts use the seed',
    ),
  upstreamTimeoutMs: z
    .number()
    .int()
    .positive()
    .default(30 * SECOND_MS)
    .describe(
      'deadline of an upstream manifest or HEAD request and of the first byte of a blob, in milliseconds',
    ),
  authCacheTtlMs: nonNegativeInt()
    .default(60 * SECOND_MS)
    .describe(
      'how long a private-repository verdict (is it private, does the upstream accept this client) is reused, in milliseconds',
    ),
  p2pListen: z
    .array(multiaddrSchema)
    .default(['/ip4/127.0.0.1/tcp/0'])
    .describe('libp2p multiaddrs the agent listens on for other peers'),
  p2pLane: z
    .boolean()
    .default(true)
    .describe(
      'serve and use the piece lane: pieces and bitfields on TCP sockets of their own, keyed over libp2p (ADR 0008); false keeps them on libp2p streams',
    ),
  p2pLanePort: z
    .number()
    .int()
    .min(0)
    .max(65_535)
    .default(0)
    .describe(
      'TCP port of the piece lane, on the host of the first p2pListen address (0: any free port; set it where a firewall must let the lane through)',
    ),
  zone: labelSchema.optional().describe('topology zone label announced to the tracker'),
  rack: labelSchema.optional().describe('topology rack label announced to the tracker'),
  maxConcurrentUploads: z
    .number()
    .int()
    .positive()
    .default(MAX_CONCURRENT_UPLOADS)
    .describe(
      'most pieces served to other peers at once (each gets its share of the uplink, so fewer pass a piece on sooner)',
    ),
  minConcurrentUploads: z
    .number()
    .int()
    .positive()
    .default(4)
    .describe('fewest pieces served at once when uploadPieceTargetMs sizes the cap by the uplink'),
  uploadPieceTargetMs: nonNegativeInt()
    .default(0)
    .describe(
      'size the upload cap by the uplink: serve at most as many pieces at once as the upload rate reached can send in this many ms each, between minConcurrentUploads and maxConcurrentUploads (0: always maxConcurrentUploads)',
    ),
  maxUploadsPerPiece: nonNegativeInt()
    .default(MAX_UPLOADS_PER_PIECE)
    .describe(
      'most copies of one piece served at once; more askers are answered busy and fetch it from a peer that got it meanwhile (0: no limit)',
    ),
  uploadTurnHoldMs: nonNegativeInt()
    .default(UPLOAD_TURN_HOLD_MS)
    .describe(
      'while uploads take this many ms or more, a free upload slot goes first to the peers answered busy in the last this many ms, in the order they were refused, rather than to whoever asks first (0: first come, first served)',
    ),
  uploadRateBytesPerSec: nonNegativeInt()
    .default(0)
    .describe('cap on the bytes per second served to other peers (0: no cap)'),
  pskFile: z
    .string()
    .min(1)
    .optional()
    .describe('file holding the libp2p pre-shared key of a private cluster (swarm key format)'),
  allowPeers: z
    .array(peerIdSchema)
    .default([])
    .describe('peer ids allowed to connect (empty: any peer that passes the pre-shared key)'),
  swarm: z
    .boolean()
    .optional()
    .describe('fetch blobs from other agents and the seed over libp2p (default: on when trackerUrl is set)'),
  bootstrap: z
    .array(multiaddrSchema)
    .default([])
    .describe('libp2p multiaddrs (with /p2p/<id>) dialled at start so the DHT has somewhere to begin'),
  swarmStallTimeoutMs: z
    .number()
    .int()
    .positive()
    .default(20 * SECOND_MS)
    .describe(
      'give a swarm download up (and use the seed or upstream over HTTP) after this long without a byte of a piece while no peer is sending or answering busy; up to three times this long while peers are busy, and ten times this long without a whole piece, in milliseconds',
    ),
  swarmHaveRefreshMs: z
    .number()
    .int()
    .positive()
    .default(SECOND_MS)
    .describe(
      'how often a download asks a peer that is still downloading which pieces it holds, for peers whose pieces cannot be watched (an agent without have watches; the others push what they gain), in milliseconds',
    ),
  swarmMaxPeers: z
    .number()
    .int()
    .min(1)
    .max(64)
    .default(16)
    .describe(
      'agents one download takes pieces from at once (plus the seed, and up to 4 more for pieces no peer in use holds); fewer costs less CPU per byte, more finds pieces sooner',
    ),
  swarmStartingPeers: z
    .number()
    .int()
    .min(0)
    .max(64)
    .default(STARTING_PEERS)
    .describe(
      `agents one download takes pieces from while it holds fewer than ${STARTING_PIECES} pieces (0: swarmMaxPeers from the start); a whole cluster sets up its peers at the same moment, and fewer at first leaves CPU for the first pieces`,
    ),
  swarmMaxInFlight: z
    .number()
    .int()
    .min(0)
    .max(256)
    .default(MAX_IN_FLIGHT)
    .describe(
      "most piece requests one download keeps in flight, each a TCP stream into this node's downlink (0: no cap); on a slow, crowded link fewer streams time out less, but too few leave the downlink idle",
    ),
  swarmMinBlobBytes: z
    .number()
    .int()
    .min(0)
    .default(64 * 1024)
    .describe(
      'blobs smaller than this (configs, tiny layers) come straight from the seed or upstream: the swarm costs more round trips than their bytes',
    ),
  // 15 s, not 5: a tracker request rides the node's own links, and with them full of
  // pieces (a node's downlink queue on the 2 Mbit testbed held seconds of them) a 5 s
  // deadline declared a healthy tracker down and sent agents to the DHT; N = 25 took
  // 260.5 s with 7 such fallbacks and 219.3 s with none at 15 s (docs/BENCHMARKS.md,
  // cluster, tenth round). A tracker that is gone refuses connections at once.
  trackerTimeoutMs: z
    .number()
    .int()
    .positive()
    .default(15 * SECOND_MS)
    .describe('deadline of one tracker request, in milliseconds'),
  dhtTimeoutMs: z
    .number()
    .int()
    .positive()
    .default(5 * SECOND_MS)
    .describe('deadline of one DHT lookup or provide, in milliseconds'),
  dhtProvidersPerBlob: z
    .number()
    .int()
    .min(0)
    .default(8)
    .describe(
      'while the tracker answers, a complete blob is not provided in the DHT when the tracker already names this many other complete agents (provided later if the tracker goes away)',
    ),
  dhtProvideDelayMs: z
    .number()
    .int()
    .min(0)
    .default(30 * SECOND_MS)
    .describe(
      'while the tracker answers, a complete blob is provided in the DHT after a random wait up to this long, one provide at a time (the whole cluster completing at once would otherwise flood the DHT); with the tracker down, at once; in milliseconds',
    ),
  logLevel: z
    .enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
    .default('info')
    .describe('log level'),
})

/** The agent's configuration after defaults were applied. */
export type AgentConfig = z.output<typeof agentConfigSchema>
/** One upstream host mapping. */
export type AgentUpstreamConfig = z.output<typeof agentUpstreamSchema>
/** What a file, the environment or flags may give before defaults. */
export type AgentConfigInput = z.input<typeof agentConfigSchema>

/**
 * Validates raw settings and fills in defaults. Throws ConfigError whose `problems`
 * lists every problem as `path: message`. An upstream entry may name its host `prefix`
 * instead of `host`, which is what the CLI's `--upstream docker.io=URL` form produces.
 */
export function parseAgentConfig(raw: unknown): AgentConfig {
  const result = agentConfigSchema.safeParse(normalise(raw ?? {}))
  if (result.success) return result.data
  throw new ConfigError(
    result.error.issues.map((issue) => {
      const path = issue.path.length === 0 ? '(root)' : issue.path.map(String).join('.')
      if (issue.code === 'unrecognized_keys') {
        return `${path}: unknown setting${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`
      }
      return `${path}: ${issue.message}`
    }),
  )
}

function normalise(raw: unknown): unknown {
  if (typeof raw !== 'object' || raw === null || !('upstreams' in raw)) return raw
  const upstreams = (raw as { upstreams: unknown }).upstreams
  if (!Array.isArray(upstreams)) return raw
  return {
    ...raw,
    upstreams: upstreams.map((entry: unknown) => {
      if (typeof entry !== 'object' || entry === null || !('prefix' in entry) || 'host' in entry) return entry
      const { prefix, ...rest } = entry as { prefix: unknown }
      return { host: prefix, ...rest }
    }),
  }
}
