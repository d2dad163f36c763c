import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ConfigError } from '../../../protocol/src/index.js'
import {
  eventsConfigSchema,
  parseRegistryConfig,
  registryConfigSchema,
  seedConfigSchema,
} from '../../../registry/src/config.js'
import { agentSection } from '../parts/agent-part.js'
import { trackerSection } from '../parts/tracker-part.js'
import { loadSectionConfig } from './load.js'
import { listSettings } from './settings.js'
import { parseUrlSpec, readConfigFile } from './sources.js'

const settings = listSettings('registry', registryConfigSchema)
const spec = { section: 'registry' as const, settings, parse: parseRegistryConfig }

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shoal-cli-config-'))
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

function problemsOf(fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return (err as ConfigError).problems
  }
  throw new Error('expected a ConfigError')
}

describe('listSettings', () => {
  it('derives env names and flags systematically from the schema paths', () => {
    const byPath = Object.fromEntries(settings.map((s) => [s.path.join('.'), s]))
    expect(byPath.listen).toMatchObject({ env: 'SHOAL_REGISTRY_LISTEN', flag: 'listen', kind: 'string' })
    expect(byPath.dataDir).toMatchObject({ env: 'SHOAL_REGISTRY_DATA_DIR', flag: 'data-dir' })
    expect(byPath.gcIntervalMs).toMatchObject({
      env: 'SHOAL_REGISTRY_GC_INTERVAL_MS',
      flag: 'gc-interval-ms',
      kind: 'number',
      defaultValue: 3_600_000,
    })
    expect(byPath.upstreams).toMatchObject({
      env: 'SHOAL_REGISTRY_UPSTREAMS',
      flag: 'upstream',
      kind: 'url-array',
    })
    expect(byPath.storageDriver).toMatchObject({ kind: 'enum', choices: ['filesystem', 'memory'] })
    expect(settings.every((s) => s.description.length > 0)).toBe(true)
    expect(byPath['seed.uploadBytesPerSecond']).toMatchObject({
      env: 'SHOAL_REGISTRY_SEED_UPLOAD_BYTES_PER_SECOND',
      flag: 'seed-upload-bytes-per-second',
      kind: 'number',
    })
    // Every top-level setting is a leaf except the nested seed and events sections.
    expect(settings).toHaveLength(
      Object.keys(registryConfigSchema.shape).length -
        2 +
        Object.keys(seedConfigSchema.shape).length +
        Object.keys(eventsConfigSchema.shape).length,
    )
    expect(byPath['events.webhookUrls']).toMatchObject({
      env: 'SHOAL_REGISTRY_EVENTS_WEBHOOK_URLS',
      flag: 'events-webhook-url',
      kind: 'string-array',
    })
  })
})

describe('loadSectionConfig', () => {
  it('layers flags over env over file over defaults', async () => {
    const file = join(dir, 'shoal.yaml')
    await writeFile(
      file,
      'registry:\n  listen: 127.0.0.1:1111\n  gcIntervalMs: 1\n  gcGraceMs: 1\n  tagTtlMs: 1\n',
    )
    const config = loadSectionConfig(spec, {
      file: await readConfigFile(file),
      env: {
        SHOAL_REGISTRY_LISTEN: '127.0.0.1:2222',
        SHOAL_REGISTRY_GC_INTERVAL_MS: '2',
        SHOAL_REGISTRY_GC_GRACE_MS: '2',
      },
      flags: { listen: '127.0.0.1:3333', 'gc-interval-ms': '3' },
    })
    expect(config.listen).toBe('127.0.0.1:3333')
    expect(config.gcIntervalMs).toBe(3)
    expect(config.gcGraceMs).toBe(2)
    expect(config.tagTtlMs).toBe(1)
    expect(config.uploadTtlMs).toBe(86_400_000)
  })

  it('puts command defaults (base) below the file', async () => {
    const file = join(dir, 'shoal.json')
    await writeFile(file, JSON.stringify({ registry: { dataDir: '/from/file' } }))
    const withFile = loadSectionConfig(spec, {
      file: await readConfigFile(file),
      base: { dataDir: '/base', listen: '127.0.0.1:0' },
    })
    expect(withFile.dataDir).toBe('/from/file')
    expect(withFile.listen).toBe('127.0.0.1:0')
  })

  it('maps upstream specs from env and repeated flags', () => {
    const fromEnv = loadSectionConfig(spec, {
      env: {
        SHOAL_REGISTRY_UPSTREAMS: 'docker.io=https://u:p%40ss@registry-1.docker.io, http://127.0.0.1:5555',
      },
    })
    expect(fromEnv.upstreams).toEqual([
      { url: 'https://registry-1.docker.io', prefix: 'docker.io', username: 'u', password: 'p@ss' },
      { url: 'http://127.0.0.1:5555' },
    ])
    const fromFlags = loadSectionConfig(spec, {
      env: { SHOAL_REGISTRY_UPSTREAMS: 'http://127.0.0.1:1' },
      flags: { upstream: ['ghcr.io=https://ghcr.io'] },
    })
    expect(fromFlags.upstreams).toEqual([{ url: 'https://ghcr.io', prefix: 'ghcr.io' }])
    const json = loadSectionConfig(spec, {
      env: { SHOAL_REGISTRY_UPSTREAMS: '[{"url":"http://127.0.0.1:2","prefix":"x"}]' },
    })
    expect(json.upstreams).toEqual([{ url: 'http://127.0.0.1:2', prefix: 'x' }])
  })

  it('reports every problem from every source at once, naming the source', async () => {
    const file = join(dir, 'bad.yaml')
    await writeFile(file, 'registry:\n  storageDriver: s3\n  colour: blue\n')
    const problems = problemsOf(() =>
      loadSectionConfig(spec, {
        file: { path: file, sections: { registry: { storageDriver: 's3', colour: 'blue' } } },
        env: { SHOAL_REGISTRY_GC_INTERVAL_MS: 'soon', SHOAL_REGISTRY_LOG_LEVEL: 'loud' },
        flags: { listen: 'nowhere', upstream: ['not a url'] },
      }),
    )
    expect(problems).toHaveLength(6)
    expect(problems).toContainEqual(
      expect.stringMatching(/^registry\.gcIntervalMs: .*\(from environment SHOAL_REGISTRY_GC_INTERVAL_MS\)$/),
    )
    expect(problems).toContainEqual(
      expect.stringMatching(/^registry\.logLevel: .*\(from environment SHOAL_REGISTRY_LOG_LEVEL\)$/),
    )
    expect(problems).toContainEqual(expect.stringMatching(/^registry\.listen: .*\(from flag --listen\)$/))
    expect(problems).toContainEqual(
      expect.stringMatching(/^registry\.upstreams\.0\.url: .*\(from flag --upstream\)$/),
    )
    expect(problems).toContainEqual(
      expect.stringMatching(/^registry\.storageDriver: .*\(from file .*bad\.yaml\)$/),
    )
    expect(problems).toContainEqual(expect.stringMatching(/^registry: unknown setting colour/))
  })
})

describe('other sections', () => {
  it("maps the agent's host=url upstreams and list flags onto its schema", () => {
    const agent = { section: 'agent' as const, settings: agentSection.settings, parse: agentSection.parse }
    const config = loadSectionConfig(agent, {
      env: { SHOAL_AGENT_P2P_LISTEN: '/ip4/127.0.0.1/tcp/4001,/ip4/127.0.0.1/tcp/4002' },
      flags: { upstream: ['docker.io=https://u:p@registry-1.docker.io'], 'seed-name-prefix': 'true' },
    })
    expect(config.upstreams).toEqual([
      { host: 'docker.io', url: 'https://registry-1.docker.io', username: 'u', password: 'p' },
    ])
    expect(config.p2pListen).toEqual(['/ip4/127.0.0.1/tcp/4001', '/ip4/127.0.0.1/tcp/4002'])
    expect(config.seedNamePrefix).toBe(true)
  })

  it('maps nested tracker settings to SHOAL_TRACKER_STORE_* and --store-*', () => {
    const config = loadSectionConfig(trackerSection, {
      env: { SHOAL_TRACKER_STORE_TYPE: 'redis' },
      flags: { 'store-redis-url': 'redis://127.0.0.1:6379/0' },
    })
    expect(config.store).toMatchObject({ type: 'redis', redisUrl: 'redis://127.0.0.1:6379/0' })
  })
})

describe('readConfigFile', () => {
  it('rejects unknown sections and unparsable files with a ConfigError', async () => {
    const unknown = join(dir, 'a.yaml')
    await writeFile(unknown, 'registry: {}\nregistyr: {}\nagent: 3\n')
    await expect(readConfigFile(unknown)).rejects.toMatchObject({
      name: 'ConfigError',
      problems: [expect.stringContaining('registyr'), expect.stringContaining('agent')],
    })
    const broken = join(dir, 'b.json')
    await writeFile(broken, '{"registry":')
    await expect(readConfigFile(broken)).rejects.toMatchObject({ name: 'ConfigError' })
    await expect(readConfigFile(join(dir, 'missing.yaml'))).rejects.toMatchObject({ name: 'ConfigError' })
  })

  it('accepts an empty file', async () => {
    const empty = join(dir, 'empty.yaml')
    await writeFile(empty, '')
    expect((await readConfigFile(empty)).sections).toEqual({})
  })
})

describe('parseUrlSpec', () => {
  it('splits prefix and credentials off the url', () => {
    expect(parseUrlSpec('http://127.0.0.1:5000')).toEqual({ url: 'http://127.0.0.1:5000' })
    expect(parseUrlSpec('quay.io=https://quay.io')).toEqual({ url: 'https://quay.io', prefix: 'quay.io' })
    expect(parseUrlSpec('https://a:b@h.example/v')).toEqual({
      url: 'https://h.example/v',
      username: 'a',
      password: 'b',
    })
  })
})
