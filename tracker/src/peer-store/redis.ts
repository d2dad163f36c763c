/**
 * The Redis PeerStore: lets several tracker replicas serve one cluster. All state lives
 * in Redis; every update that reads and writes is one Lua script (atomic), and every
 * key carries a TTL so abandoned swarms vanish on their own.
 *
 * Keys (P = keyPrefix, {d} = the digest as a hash tag so one swarm's keys share a slot):
 *
 * ```
 * P{d}:peers          hash  peerId -> PeerRecord JSON
 * P{d}:exp            zset  peerId -> expiry (ms)      a peer is alive while expiry > now
 * P{d}:origin         zset  peerId -> slot lease expiry (ms)
 * P{d}:reports:<id>   zset  reporter -> report expiry (ms)
 * P{d}:banned         zset  peerId -> ban end (ms)
 * Pswarms             zset  digest -> latest peer expiry (ms), an index for listing
 * P{peer:<id>}:origin zset  digest -> slot lease expiry (ms): the swarms in which the peer
 *                           took an origin slot, for exclusive slots (checked against each
 *                           swarm's origin zset, which is the truth)
 * ```
 */
import { Redis } from 'ioredis'
import type { Digest } from '../../../protocol/src/index.js'
import type { PeerRecord, PeerStore, PeerStoreStats, SwarmCounts } from './index.js'

/** Options of createRedisPeerStore. */
export interface RedisPeerStoreInit {
  /** redis:// URL. */
  url: string
  /** Prefix of every key. @default 'shoal:tracker:' */
  keyPrefix?: string
  /** Keys of a swarm outlive its last write by at least this long, in milliseconds. @default 600000 */
  keyTtlMs?: number
  /** Deadline of one Redis command, in milliseconds. @default 5000 */
  commandTimeoutMs?: number
}

/** Drops the dead entries of a peers hash and its expiry zset. KEYS: peers, exp. ARGV: now. */
const PRUNE_PEERS = `
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if #dead > 0 then
  redis.call('HDEL', KEYS[1], unpack(dead))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
end
`

const SCRIPTS = {
  /** KEYS: peers, exp. ARGV: peerId, json, expiresAt, keyTtl. */
  shoalUpsertPeer: {
    keys: 2,
    lua: `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1`,
  },
  /** KEYS: peers, exp. ARGV: now. Returns the live records' JSON. */
  shoalListPeers: { keys: 2, lua: `${PRUNE_PEERS}\nreturn redis.call('HVALS', KEYS[1])` },
  /** KEYS: peers, exp, origin. ARGV: peerId. */
  shoalRemovePeer: {
    keys: 3,
    lua: `
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1`,
  },
  /**
   * KEYS: origin. ARGV: peerId, limit, now, expiresAt, keyTtl. Returns 1 when granted:
   * hand-out.ts's grantsOriginSlot, atomically over the live slots.
   */
  shoalAcquireOrigin: {
    keys: 1,
    lua: `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0`,
  },
  /** KEYS: zset. ARGV: now. Prunes and returns the live members. */
  shoalLiveMembers: {
    keys: 1,
    lua: `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)`,
  },
  /** KEYS: reports. ARGV: reporter, now, expiresAt, keyTtl. Returns distinct live reporters. */
  shoalAddReport: {
    keys: 1,
    lua: `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('ZCARD', KEYS[1])`,
  },
  /**
   * KEYS: peers, exp, origin, reports, banned. ARGV: peerId, until, wall-clock now, keyTtl.
   * The banned set lives until its longest ban ends (at least keyTtl).
   */
  shoalBan: {
    keys: 5,
    lua: `
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
redis.call('ZADD', KEYS[5], 'GT', ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')
local ttl = math.max(tonumber(last[2]) - tonumber(ARGV[3]), tonumber(ARGV[4]))
redis.call('PEXPIRE', KEYS[5], math.floor(ttl))
return 1`,
  },
  /** KEYS: peers, exp, origin. ARGV: now. Returns {peer JSON list..., originCount} flattened as {count, json...}. */
  shoalSwarmCounts: {
    keys: 3,
    lua: `${PRUNE_PEERS}
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
local out = { redis.call('ZCARD', KEYS[3]) }
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do out[#out + 1] = v end
return out`,
  },
} as const

type ScriptName = keyof typeof SCRIPTS
type ScriptClient = Redis & Record<ScriptName, (...args: Array<string | number>) => Promise<unknown>>

type ScriptPipeline = ReturnType<Redis['pipeline']> &
  Record<ScriptName, (...args: Array<string | number>) => ScriptPipeline>

/** A pipeline typed with the scripts defined on the client (ioredis adds them at runtime). */
function scripted(pipeline: ReturnType<Redis['pipeline']>): ScriptPipeline {
  return pipeline as ScriptPipeline
}

/** Creates a PeerStore over Redis. The connection is opened by start(). */
export function createRedisPeerStore(init: RedisPeerStoreInit): PeerStore {
  const prefix = init.keyPrefix ?? 'shoal:tracker:'
  const keyTtlMs = init.keyTtlMs ?? 600_000
  let client: ScriptClient | undefined

  function redis(): ScriptClient {
    if (client === undefined) throw new Error('Redis peer store is not started')
    return client
  }

  function keys(digest: Digest) {
    const base = `${prefix}{${digest}}:`
    return {
      peers: `${base}peers`,
      exp: `${base}exp`,
      origin: `${base}origin`,
      banned: `${base}banned`,
      reports: (peerId: string) => `${base}reports:${peerId}`,
    }
  }
  const swarmsKey = `${prefix}swarms`
  const peerSlotsKey = (peerId: string): string => `${prefix}{peer:${peerId}}:origin`

  /** Whether `peerId` holds an unexpired origin slot of a swarm other than `digest`. */
  async function holdsSlotElsewhere(peerId: string, digest: Digest, nowMs: number): Promise<boolean> {
    const key = peerSlotsKey(peerId)
    const others = ((await redis().zrangebyscore(key, `(${nowMs}`, '+inf')) as Digest[]).filter(
      (d) => d !== digest,
    )
    if (others.length === 0) return false
    const leases = await Promise.all(others.map((d) => redis().zscore(keys(d).origin, peerId)))
    const gone = others.filter((_, i) => !(Number(leases[i] ?? 0) > nowMs))
    if (gone.length > 0) await redis().zrem(key, ...gone)
    return gone.length < others.length
  }

  function parseRecords(values: unknown): PeerRecord[] {
    const out: PeerRecord[] = []
    for (const v of values as string[]) {
      try {
        out.push(JSON.parse(v) as PeerRecord)
      } catch {
        // A record that is not JSON was not written by us; skip it rather than fail the swarm.
      }
    }
    return out
  }

  function counts(digest: Digest, reply: unknown): SwarmCounts {
    const [originCount, ...values] = reply as [number, ...string[]]
    const records = parseRecords(values)
    let complete = 0
    let seeds = 0
    for (const r of records) {
      if (r.role === 'seed') seeds++
      else if (r.complete) complete++
    }
    return { digest, peers: records.length, complete, seeds, originSlotsInUse: Number(originCount) }
  }

  async function liveSwarmDigests(nowMs: number): Promise<Digest[]> {
    return (await redis().shoalLiveMembers(swarmsKey, nowMs)) as Digest[]
  }

  async function allCounts(nowMs: number): Promise<SwarmCounts[]> {
    const digests = await liveSwarmDigests(nowMs)
    const out: SwarmCounts[] = []
    if (digests.length === 0) return out
    // One round trip for all swarms.
    const pipeline = scripted(redis().pipeline())
    for (const digest of digests) {
      const k = keys(digest)
      pipeline.shoalSwarmCounts(k.peers, k.exp, k.origin, nowMs)
    }
    const results = (await pipeline.exec()) ?? []
    results.forEach(([err, reply], i) => {
      if (err) throw err
      const c = counts(digests[i]!, reply)
      if (c.peers > 0) out.push(c)
    })
    return out.sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0))
  }

  return {
    async upsertPeer(digest, peer, ttlMs) {
      const k = keys(digest)
      const expiresAt = peer.lastSeenMs + ttlMs
      const ttl = Math.max(keyTtlMs, ttlMs * 2)
      // One round trip; the swarm index is a separate key (another slot), so not in the script.
      const pipeline = scripted(redis().pipeline())
      pipeline.shoalUpsertPeer(k.peers, k.exp, peer.peerId, JSON.stringify(peer), expiresAt, ttl)
      pipeline.zadd(swarmsKey, 'GT', expiresAt, digest)
      pipeline.pexpire(swarmsKey, ttl)
      const results = (await pipeline.exec()) ?? []
      for (const [err] of results) if (err) throw err
    },
    async removePeer(digest, peerId) {
      const k = keys(digest)
      await redis().shoalRemovePeer(k.peers, k.exp, k.origin, peerId)
    },
    async listPeers(digest, nowMs) {
      const k = keys(digest)
      return parseRecords(await redis().shoalListPeers(k.peers, k.exp, nowMs))
    },
    async acquireOriginSlot(digest, peerId, limit, nowMs, ttlMs, options = {}) {
      const k = keys(digest)
      const ttl = Math.max(keyTtlMs, ttlMs * 2)
      // Held elsewhere, an exclusive slot is only kept: a limit of 0 grants no new one.
      const elsewhere = options.exclusive === true && (await holdsSlotElsewhere(peerId, digest, nowMs))
      const granted =
        Number(
          await redis().shoalAcquireOrigin(
            k.origin,
            peerId,
            elsewhere ? 0 : limit,
            nowMs,
            nowMs + ttlMs,
            ttl,
          ),
        ) === 1
      if (granted && options.recordHolder === true) {
        const key = peerSlotsKey(peerId)
        const results =
          (await redis()
            .pipeline()
            .zadd(key, nowMs + ttlMs, digest)
            .pexpire(key, ttl)
            .exec()) ?? []
        for (const [err] of results) if (err) throw err
      }
      return granted
    },
    async releaseOriginSlot(digest, peerId) {
      const results =
        (await redis()
          .pipeline()
          .zrem(keys(digest).origin, peerId)
          .zrem(peerSlotsKey(peerId), digest)
          .exec()) ?? []
      for (const [err] of results) if (err) throw err
    },
    async listOriginSlots(digest, nowMs) {
      return (await redis().shoalLiveMembers(keys(digest).origin, nowMs)) as string[]
    },
    async addReport(digest, peerId, reporter, nowMs, ttlMs) {
      const ttl = Math.max(ttlMs, 1000)
      return Number(
        await redis().shoalAddReport(keys(digest).reports(peerId), reporter, nowMs, nowMs + ttlMs, ttl),
      )
    },
    async ban(digest, peerId, untilMs) {
      const k = keys(digest)
      // Key TTLs run on Redis' real clock, so they are computed from the wall clock, not nowMs.
      await redis().shoalBan(
        k.peers,
        k.exp,
        k.origin,
        k.reports(peerId),
        k.banned,
        peerId,
        untilMs,
        Date.now(),
        keyTtlMs,
      )
    },
    async isBanned(digest, peerId, nowMs) {
      const until = await redis().zscore(keys(digest).banned, peerId)
      return until !== null && Number(until) > nowMs
    },
    async listBanned(digest, nowMs) {
      return ((await redis().shoalLiveMembers(keys(digest).banned, nowMs)) as string[]).sort()
    },
    listSwarms: allCounts,
    async stats(nowMs) {
      const stats: PeerStoreStats = { swarms: 0, complete: 0, partial: 0, seeds: 0 }
      for (const c of await allCounts(nowMs)) {
        stats.swarms++
        stats.complete += c.complete
        stats.seeds += c.seeds
        stats.partial += c.peers - c.complete - c.seeds
      }
      return stats
    },
    async start() {
      if (client !== undefined) return
      const c = new Redis(init.url, {
        lazyConnect: true,
        maxRetriesPerRequest: 2,
        commandTimeout: init.commandTimeoutMs ?? 5000,
        enableOfflineQueue: true,
      }) as ScriptClient
      for (const [name, s] of Object.entries(SCRIPTS))
        c.defineCommand(name, { numberOfKeys: s.keys, lua: s.lua })
      // Errors surface on each command; without a listener ioredis would log them itself.
      c.on('error', () => {})
      try {
        await c.connect()
      } catch (err) {
        c.disconnect()
        throw err
      }
      client = c
    },
    async stop() {
      const c = client
      client = undefined
      if (c === undefined) return
      try {
        await c.quit()
      } catch {
        c.disconnect()
      }
    },
  }
}
