/**
 * The shoal CLI as a user runs it: `node bin/shoal.js registry|up|tracker ...` as a
 * child process. Checks the listening line, /healthz, /metrics, /v2/, configuration
 * errors (every problem, exit 2), a port in use, and a clean exit 0 on SIGTERM.
 */
import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { readdir, writeFile } from 'node:fs/promises'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createCleanup, createTempDir, removeTempDir, runCommand } from '../helpers/processes.js'
import {
  parseListeningLine,
  REPO_ROOT,
  SHOAL_BIN,
  startShoalRegistry,
  startShoalService,
} from '../helpers/shoal.js'

const cleanup = createCleanup()
let dir: string

beforeEach(async () => {
  dir = await createTempDir('shoal-e2e-cli-')
  cleanup.add(() => removeTempDir(dir), 'remove temp dir')
})
afterEach(async () => {
  await cleanup.run()
})

function shoal(args: string[], env: NodeJS.ProcessEnv = {}) {
  return runCommand(process.execPath, [SHOAL_BIN, ...args], {
    cwd: REPO_ROOT,
    env,
    allowFailure: true,
    timeoutMs: 60_000,
  })
}

describe('shoal registry', () => {
  it('logs where it listens, answers /healthz, /metrics and /v2/, and exits 0 on SIGTERM', async () => {
    const registry = await startShoalRegistry({ dataDir: join(dir, 'data'), logDir: dir })
    cleanup.add(() => registry.stop(), 'stop registry')
    expect(registry.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect(registry.port).toBeGreaterThan(0)

    const listening = registry.process
      .lines()
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((record) => record.msg === 'listening')
    expect(listening).toEqual([
      expect.objectContaining({ msg: 'listening', service: 'registry', url: registry.url }),
    ])

    const health = await fetch(`${registry.url}/healthz`)
    expect(health.status).toBe(200)
    expect(await health.json()).toEqual({ status: 'ok' })

    const base = await fetch(`${registry.url}/v2/`)
    expect(base.status).toBe(200)
    expect(base.headers.get('docker-distribution-api-version')).toBe('registry/2.0')

    const metrics = await fetch(`${registry.url}/metrics`)
    expect(metrics.status).toBe(200)
    expect(metrics.headers.get('content-type')).toContain('text/plain')
    const text = await metrics.text()
    expect(text).toContain('process_cpu_user_seconds_total')
    expect(text).toMatch(/shoal_registry_http_requests_total\{[^}]*\} \d+/)

    const status = await registry.process.stop()
    expect(status).toEqual({ code: 0, signal: null })
    expect(registry.process.lines().some((line) => line.includes('"msg":"stopped"'))).toBe(true)
  })

  it('takes its settings from a YAML config file, with flags above it', async () => {
    const file = join(dir, 'shoal.yaml')
    await writeFile(
      file,
      [
        'registry:',
        '  listen: 127.0.0.1:1',
        '  storageDriver: memory',
        '  seed:',
        '    enabled: false',
        '',
      ].join('\n'),
    )
    const registry = await startShoalService({
      args: ['registry', '--config', file, '--listen', '127.0.0.1:0'],
      service: 'registry',
      name: 'shoal-registry-config',
      logDir: dir,
    })
    cleanup.add(() => registry.stop(), 'stop registry')
    expect(registry.port).not.toBe(1)
    expect((await fetch(`${registry.url}/v2/`)).status).toBe(200)
    // seed.enabled: false from the file: no seed endpoint.
    expect((await fetch(`${registry.url}/shoal/v1/seed`)).status).toBe(404)
    expect(await registry.process.stop()).toEqual({ code: 0, signal: null })
  })

  it('reports every configuration problem at once and exits 2', async () => {
    const result = await shoal(['registry', '--listen', 'nowhere', '--storage-driver', 's3', '--data', dir], {
      SHOAL_REGISTRY_GC_INTERVAL_MS: 'soon',
      SHOAL_REGISTRY_UPSTREAMS: 'ftp://example.invalid',
    })
    expect(result.code).toBe(2)
    expect(result.stderr).toContain('invalid configuration (4 problems)')
    expect(result.stderr).toMatch(/registry\.listen: .*\(from flag --listen\)/)
    expect(result.stderr).toMatch(/registry\.storageDriver: .*\(from flag --storage-driver\)/)
    expect(result.stderr).toMatch(
      /registry\.gcIntervalMs: .*\(from environment SHOAL_REGISTRY_GC_INTERVAL_MS\)/,
    )
    expect(result.stderr).toMatch(
      /registry\.upstreams\.0\.url: .*\(from environment SHOAL_REGISTRY_UPSTREAMS\)/,
    )
    expect(result.stdout).not.toContain('listening')
  })

  it('says plainly that the port is in use and exits 1', async () => {
    const blocker: Server = createServer()
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
    cleanup.add(() => new Promise((resolve) => blocker.close(resolve)), 'close blocker')
    const { port } = blocker.address() as AddressInfo
    const result = await shoal(['registry', '--listen', `127.0.0.1:${port}`, '--data', dir])
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(`cannot listen on 127.0.0.1:${port}: the address is already in use`)
  })
})

describe('shoal tracker', () => {
  it('serves the tracker API with /healthz and /metrics, and exits 0 on SIGTERM', async () => {
    const tracker = await startShoalService({
      args: ['tracker', '--listen', '127.0.0.1:0'],
      service: 'tracker',
      name: 'shoal-tracker',
      logDir: dir,
    })
    cleanup.add(() => tracker.stop(), 'stop tracker')
    expect(tracker.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect(await (await fetch(`${tracker.url}/healthz`)).json()).toEqual({ status: 'ok' })
    const metrics = await (await fetch(`${tracker.url}/metrics`)).text()
    expect(metrics).toContain('shoal_tracker_swarms')
    expect(metrics).toContain('process_resident_memory_bytes')
    expect(await tracker.process.stop()).toEqual({ code: 0, signal: null })
  })

  it('reports tracker configuration problems from every source and exits 2', async () => {
    const result = await shoal(['tracker', '--store-type', 'redis', '--peer-ttl-ms', '5'], {
      SHOAL_TRACKER_ANNOUNCE_INTERVAL_MS: '10',
    })
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/tracker\.store\.redisUrl: required/)
    expect(result.stderr).toMatch(/tracker\.peerTtlMs: .*\(from flag --peer-ttl-ms\)/)
  })
})

describe('shoal agent', () => {
  it('serves the mirror endpoint with /healthz and /metrics, and exits 0 on SIGTERM', async () => {
    const agent = await startShoalService({
      args: [
        'agent',
        '--listen',
        '127.0.0.1:0',
        '--data',
        join(dir, 'agent'),
        '--registry-url',
        'http://127.0.0.1:9',
      ],
      service: 'agent',
      name: 'shoal-agent',
      logDir: dir,
    })
    cleanup.add(() => agent.stop(), 'stop agent')
    expect(await (await fetch(`${agent.url}/healthz`)).json()).toEqual({ status: 'ok' })
    expect((await fetch(`${agent.url}/v2/`)).status).toBe(200)
    const metrics = await (await fetch(`${agent.url}/metrics`)).text()
    expect(metrics).toContain('shoal_agent_http_requests_total')
    expect(await agent.process.stop()).toEqual({ code: 0, signal: null })
  })

  it('reports agent configuration problems and exits 2', async () => {
    const result = await shoal([
      'agent',
      '--upstream',
      'Not A Host=http://127.0.0.1:1',
      '--cache-quota-bytes',
      '-1',
    ])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/agent\.upstreams\.0\.host: .*\(from flag --upstream\)/)
    expect(result.stderr).toMatch(/agent\.cacheQuotaBytes: .*\(from flag --cache-quota-bytes\)/)
  })
})

describe('shoal up', () => {
  it('runs registry, tracker and an agent pointed at them, data under --data, and exits 0 on SIGTERM', async () => {
    const data = join(dir, 'shoal-data')
    const up = await startShoalService({
      args: [
        'up',
        '--data',
        data,
        '--registry-listen',
        '127.0.0.1:0',
        '--tracker-listen',
        '127.0.0.1:0',
        '--agent-listen',
        '127.0.0.1:0',
      ],
      service: 'registry',
      name: 'shoal-up',
      logDir: dir,
    })
    cleanup.add(() => up.stop(), 'stop shoal up')
    const trackerUrl = await up.process.waitForLine((line) => parseListeningLine(line, 'tracker'), {
      timeoutMs: 30_000,
      description: 'the tracker listening line',
    })
    expect((await fetch(`${trackerUrl}/healthz`)).status).toBe(200)
    const agentUrl = await up.process.waitForLine((line) => parseListeningLine(line, 'agent'), {
      timeoutMs: 30_000,
      description: 'the agent listening line',
    })
    expect((await fetch(`${agentUrl}/healthz`)).status).toBe(200)
    expect((await fetch(`${up.url}/v2/`)).status).toBe(200)
    expect((await fetch(`${up.url}/healthz`)).status).toBe(200)
    // The summary for people names the registry and how to push to it.
    await up.process.waitForLine((line) => (line.includes(`docker://${up.host}/`) ? true : undefined), {
      timeoutMs: 10_000,
      description: 'the push hint',
    })
    // A pushed blob lands under <data>/registry. 100 KiB: blobs under the agent's
    // swarmMinBlobBytes (64 KiB) skip the swarm, and this one must go through it.
    const blob = Buffer.alloc(100 * 1024, 'shoal up e2e blob')
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
    const push = await fetch(`${up.url}/v2/e2e/up/blobs/uploads/?digest=${digest}`, {
      method: 'POST',
      body: blob,
    })
    expect(push.status).toBe(201)
    const files = await readdir(join(data, 'registry'), { recursive: true })
    expect(files.some((file) => file.includes(digest.slice('sha256:'.length)))).toBe(true)
    // The agent is pointed at this registry: a mirror request (containerd's ?ns=) gets the blob.
    const mirrored = await fetch(`${agentUrl}/v2/e2e/up/blobs/${digest}?ns=${up.host}`)
    expect(mirrored.status).toBe(200)
    expect(Buffer.from(await mirrored.arrayBuffer())).toEqual(blob)
    // ...and it came over libp2p from the registry's seed, which shoal up wired in.
    const agentMetrics = await (await fetch(`${agentUrl}/metrics`)).text()
    expect(agentMetrics).toMatch(/shoal_agent_swarm_pieces_total\{source="seed"\} [1-9]/)
    expect(await up.process.stop()).toEqual({ code: 0, signal: null })
  })
})

describe('shoal help and unfinished parts', () => {
  it('lists every subcommand in --help', async () => {
    const result = await shoal(['--help'])
    expect(result.code).toBe(0)
    for (const name of ['registry', 'tracker', 'agent', 'up']) expect(result.stdout).toContain(name)
  })

  it('exits 2 on an unknown option', async () => {
    const result = await shoal(['registry', '--no-such-option'])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain('unknown option')
  })
})
