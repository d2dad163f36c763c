import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import type { Digest } from '../../../protocol/src/index.js'
import { createTrackerClient } from '../../../protocol/src/index.js'
import type { PreheatJob } from '../../../protocol/src/preheat-api.js'
import { parseTrackerConfig, type TrackerConfigInput } from '../config.js'
import { createTrackerNode } from '../main.js'
import { serveApp } from '../testing/serve.js'

const TOKEN = 'test-admin-token-0123456789'
const sha = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}` as Digest

/** A fake registry behind `fetch`: team/app:1 is an index of two platforms; team/private needs basic alice:pw. */
function fakeRegistry() {
  const docs = new Map<string, { body: string; type: string }>()
  const put = (body: unknown, type: string) => {
    const text = JSON.stringify(body)
    docs.set(sha(text), { body: text, type })
    return { digest: sha(text), size: text.length, mediaType: type }
  }
  const image = (tag: string) =>
    put(
      {
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: sha(`config-${tag}`),
          size: 10,
        },
        layers: [
          { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(`layer-${tag}`), size: 100 },
        ],
      },
      'application/vnd.oci.image.manifest.v1+json',
    )
  const amd = image('amd64')
  const arm = image('arm64')
  const index = put(
    {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { ...amd, platform: { os: 'linux', architecture: 'amd64' } },
        { ...arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      ],
    },
    'application/vnd.oci.image.index.v1+json',
  )
  const tags = new Map([
    ['team/app:1', index.digest],
    ['team/private:1', amd.digest],
  ])
  const fetchImpl: typeof fetch = async (input, req) => {
    const url = new URL(String(input))
    const m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url.pathname)
    if (url.pathname === '/v2/' || url.pathname === '/v2') return new Response('{}', { status: 200 })
    if (m === null) return new Response('', { status: 404 })
    const [, repo, ref] = m
    if (repo === 'team/private') {
      const auth = new Headers(req?.headers).get('authorization')
      if (auth !== `Basic ${Buffer.from('alice:pw').toString('base64')}`)
        return new Response(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'no' }] }), {
          status: 401,
          headers: { 'www-authenticate': 'Basic realm="x"', 'content-type': 'application/json' },
        })
    }
    const digest = ref!.startsWith('sha256:') ? ref! : tags.get(`${repo}:${ref}`)
    const doc = digest === undefined ? undefined : docs.get(digest)
    if (doc === undefined)
      return new Response(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'unknown' }] }), {
        status: 404,
        headers: { 'content-type': 'application/json' },
      })
    return new Response(req?.method === 'HEAD' ? null : doc.body, {
      status: 200,
      headers: { 'content-type': doc.type, 'docker-content-digest': digest! },
    })
  }
  return {
    fetch: fetchImpl,
    amd: [sha('config-amd64'), sha('layer-amd64')],
    arm: [sha('config-arm64'), sha('layer-arm64')],
  }
}

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function startTracker(overrides: TrackerConfigInput = {}, dataDir?: string) {
  const dir = dataDir ?? (await mkdtemp(join(tmpdir(), 'shoal-preheat-')))
  if (dataDir === undefined) cleanups.push(() => rm(dir, { recursive: true, force: true }))
  const registry = fakeRegistry()
  const node = await createTrackerNode(
    parseTrackerConfig({
      dataDir: dir,
      preheat: { adminToken: TOKEN, heartbeatIntervalMs: 200, agentTtlMs: 1500 },
      ...overrides,
    }),
    { logger: pino({ level: 'silent' }), metrics: new Registry(), fetch: registry.fetch },
  )
  await node.start()
  const served = await serveApp(node.app)
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    await served.close()
    await node.stop()
  }
  cleanups.push(stop)
  const admin = async (method: string, path: string, body?: unknown, token: string | null = TOKEN) => {
    const res = await fetch(`${served.url}${path}`, {
      method,
      headers: {
        ...(token === null ? {} : { authorization: `Bearer ${token}` }),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
    return {
      status: res.status,
      json: (await res.json()) as PreheatJob & { jobs: PreheatJob[]; error: { message: string } },
    }
  }
  const client = createTrackerClient({ url: served.url })
  const beat = (peerId: string, extra: Record<string, unknown> = {}) =>
    client.heartbeat({ peerId, multiaddrs: [], ...extra })
  return { url: served.url, node, registry, admin, client, beat, stop, dir }
}

async function until<T>(
  fn: () => Promise<T>,
  ok: (v: T) => boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (ok(v)) return v
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v).slice(0, 500)}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

describe('preheat admin API', () => {
  it('requires the bearer token, and is closed without one configured', async () => {
    const t = await startTracker()
    expect((await t.admin('GET', '/v1/preheat', undefined, null)).status).toBe(401)
    expect((await t.admin('GET', '/v1/preheat', undefined, 'wrong-token-0123456789xx')).status).toBe(403)
    expect((await t.admin('GET', '/v1/preheat')).status).toBe(200)
    const closed = await startTracker({ preheat: {} })
    expect((await closed.admin('GET', '/v1/preheat')).status).toBe(403)
    expect((await t.admin('GET', '/v1/preheat/nope')).status).toBe(404)
    const bad = await t.admin('POST', '/v1/preheat', { image: '127.0.0.1:1/team/app:1', scope: 'half' })
    expect(bad.status).toBe(400)
    expect(bad.json.error.message).toMatch(/invalid scope/)
  })

  it('hands every agent its tasks for the chosen platform and succeeds when all hold every blob', async () => {
    const t = await startTracker()
    await t.beat('agentA', { zone: 'z1', address: '127.0.0.1:5001', cacheUsedBytes: 5 })
    await t.beat('agentB', { zone: 'z2' })
    const created = await t.admin('POST', '/v1/preheat', {
      image: '127.0.0.1:5000/team/app:1',
      platforms: ['linux/amd64'],
    })
    expect(created.status).toBe(201)
    expect(created.json.state).toBe('pending')
    const id = created.json.id
    const running = await until(
      async () => (await t.admin('GET', `/v1/preheat/${id}`)).json,
      (j) => j.state === 'running',
      'running',
    )
    expect(running.blobs.map((b) => b.digest).sort()).toEqual([...t.registry.amd].sort())
    expect(running.targets.map((x) => x.id).sort()).toEqual(['agentA', 'agentB'])

    const tasks = (await t.beat('agentA')).tasks
    expect(tasks.map((x) => x.digest).sort()).toEqual([...t.registry.amd].sort())
    expect(tasks[0]).toMatchObject({ jobId: id, host: '127.0.0.1:5000', repository: 'team/app' })
    // Tasks travel in announce answers too.
    const announced = await t.client.announce({
      peerId: 'agentB',
      multiaddrs: [],
      digest: t.registry.amd[0]!,
      state: 'partial',
    })
    expect(announced.tasks?.length).toBe(2)

    await t.beat('agentA', { held: [t.registry.amd[0]] })
    expect((await t.beat('agentA')).tasks.map((x) => x.digest)).toEqual([t.registry.amd[1]])
    await t.beat('agentA', { held: t.registry.amd })
    expect((await t.beat('agentA')).tasks).toEqual([])
    const half = (await t.admin('GET', `/v1/preheat/${id}`)).json
    expect(half.state).toBe('running')
    expect(half.progress).toMatchObject({ targets: 2, targetsDone: 1, bytesTotal: 2 * 110, bytesDone: 110 })
    await t.beat('agentB', { held: t.registry.amd })
    const done = (await t.admin('GET', `/v1/preheat/${id}`)).json
    expect(done.state).toBe('succeeded')
    expect(done.finishedAt).toBeDefined()
    expect((await t.admin('GET', '/v1/preheat')).json.jobs.map((j) => j.id)).toEqual([id])
  })

  it('fails a job for a missing image, bad credentials or an unknown platform, with the reason', async () => {
    const t = await startTracker()
    await t.beat('agentA')
    const missing = (await t.admin('POST', '/v1/preheat', { image: '127.0.0.1:5000/team/gone:1' })).json.id
    const denied = (
      await t.admin('POST', '/v1/preheat', {
        image: '127.0.0.1:5000/team/private:1',
        username: 'alice',
        password: 'bad',
      })
    ).json.id
    const allowed = (
      await t.admin('POST', '/v1/preheat', {
        image: '127.0.0.1:5000/team/private:1',
        username: 'alice',
        password: 'pw',
      })
    ).json.id
    const platform = (
      await t.admin('POST', '/v1/preheat', {
        image: '127.0.0.1:5000/team/app:1',
        platforms: ['windows/amd64'],
      })
    ).json.id
    const get = (id: string) => async () => (await t.admin('GET', `/v1/preheat/${id}`)).json
    const a = await until(get(missing), (j) => j.state === 'failed', 'missing image fails')
    expect(a.reason).toMatch(/image not found: team\/gone:1/)
    const b = await until(get(denied), (j) => j.state === 'failed', 'bad credentials fail')
    expect(b.reason).toMatch(/refused the credentials/)
    const c = await until(get(allowed), (j) => j.state === 'running', 'good credentials resolve')
    expect(c.blobs.length).toBe(2)
    expect(JSON.stringify(c)).not.toContain('pw')
    const d = await until(get(platform), (j) => j.state === 'failed', 'unknown platform fails')
    expect(d.reason).toMatch(/no entry for platform windows\/amd64/)
  })

  it('cancels a job: its tasks are no longer handed out and it stays cancelled', async () => {
    const t = await startTracker()
    await t.beat('agentA')
    const id = (await t.admin('POST', '/v1/preheat', { image: '127.0.0.1:5000/team/app:1' })).json.id
    await until(
      async () => (await t.beat('agentA')).tasks,
      (x) => x.length === 4,
      'tasks for all platforms',
    )
    const cancelled = await t.admin('DELETE', `/v1/preheat/${id}`)
    expect(cancelled.json.state).toBe('cancelled')
    expect(cancelled.json.targets[0]?.state).toBe('cancelled')
    expect((await t.beat('agentA', { held: [...t.registry.amd, ...t.registry.arm] })).tasks).toEqual([])
    expect((await t.admin('GET', `/v1/preheat/${id}`)).json.state).toBe('cancelled')
  })

  it('selects targets by zone, count and percentage, and fails when none match', async () => {
    const t = await startTracker()
    for (const [id, zone] of [
      ['a1', 'east'],
      ['a2', 'east'],
      ['a3', 'west'],
      ['a4', 'west'],
    ] as const)
      await t.beat(id, { zone })
    const make = async (scope: string) => {
      const id = (await t.admin('POST', '/v1/preheat', { image: '127.0.0.1:5000/team/app:1', scope })).json.id
      return until(
        async () => (await t.admin('GET', `/v1/preheat/${id}`)).json,
        (j) => j.state !== 'pending',
        scope,
      )
    }
    expect((await make('zone:west')).targets.map((x) => x.id).sort()).toEqual(['a3', 'a4'])
    expect((await make('count:3')).targets.length).toBe(3)
    expect((await make('percent:25')).targets.length).toBe(1)
    const none = await make('zone:north')
    expect(none.state).toBe('failed')
    expect(none.reason).toMatch(/no agent matches scope zone:north/)
  })

  it('fails the target of an agent that stops sending heartbeats', async () => {
    const t = await startTracker()
    await t.beat('agentA')
    await t.beat('quiet')
    const id = (
      await t.admin('POST', '/v1/preheat', { image: '127.0.0.1:5000/team/app:1', platforms: ['linux/amd64'] })
    ).json.id
    const job = await until(
      async () => {
        await t.beat('agentA', { held: t.registry.amd })
        return (await t.admin('GET', `/v1/preheat/${id}`)).json
      },
      (j) => j.state === 'failed',
      'the silent agent to fail the job',
    )
    expect(job.reason).toMatch(/quiet: agent quiet stopped sending heartbeats/)
    expect(job.targets.find((x) => x.id === 'agentA')?.state).toBe('done')
  })

  it('keeps jobs across a tracker restart and finishes them afterwards', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-preheat-restart-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const first = await startTracker({}, dir)
    await first.beat('agentA')
    const id = (
      await first.admin('POST', '/v1/preheat', {
        image: '127.0.0.1:5000/team/app:1',
        platforms: ['linux/arm64'],
      })
    ).json.id
    await until(
      async () => (await first.admin('GET', `/v1/preheat/${id}`)).json,
      (j) => j.state === 'running',
      'running',
    )
    await first.stop()
    const second = await startTracker({}, dir)
    const again = (await second.admin('GET', `/v1/preheat/${id}`)).json
    expect(again.state).toBe('running')
    expect(again.blobs.map((b) => b.digest).sort()).toEqual([...second.registry.arm].sort())
    expect((await second.beat('agentA')).tasks.length).toBe(2)
    await second.beat('agentA', { held: second.registry.arm })
    expect((await second.admin('GET', `/v1/preheat/${id}`)).json.state).toBe('succeeded')
  })
})
