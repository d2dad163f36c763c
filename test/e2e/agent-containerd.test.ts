/**
 * The peer agent as real clients use it, all through the CLI: a shoal seed registry
 * holds an image; `shoal agent` mirrors it. containerd pulls through a hosts.toml made
 * by `shoal agent hosts-toml` and runs the image; a second pull with an empty content
 * store is served from the agent's cache; skopeo pulls a docker.io-named image through
 * a registries.conf mirror (no `ns`: the agent maps docker.io to the seed); and dockerd
 * (which runs on containerd) pulls a docker.io name through `registry-mirrors` inside a
 * network namespace with only `lo`, so nothing can leave the machine. The agent's
 * metrics must show where the bytes came from, so a silent fallback of the client to
 * the registry itself cannot pass.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { digestOf } from '../../protocol/src/index.js'
import { type Containerd, startContainerd } from '../helpers/containerd.js'
import { startDockerd } from '../helpers/dockerd.js'
import { createNetns } from '../helpers/netns.js'
import {
  buildTestImage,
  layoutBlobPath,
  pushImage,
  readLayoutBlob,
  type TestImage,
} from '../helpers/images.js'
import {
  createCleanup,
  createTempDir,
  removeTempDir,
  requireBinaries,
  runCommand,
} from '../helpers/processes.js'
import { SHOAL_BIN, type ShoalService, startShoalRegistry, startShoalService } from '../helpers/shoal.js'
import { sampleSum } from '../helpers/metrics.js'

const RANDOM_LAYER_BYTES = 8 * 1024 * 1024

describe('shoal agent with containerd and skopeo', () => {
  const fileCleanup = createCleanup()
  const testCleanup = createCleanup()
  let work: string
  let registry: ShoalService
  let agent: ShoalService
  let image: TestImage
  let reference: string
  let layerBytes: number

  async function agentMetrics(): Promise<string> {
    return (await fetch(`${agent.url}/metrics`)).text()
  }

  beforeAll(async () => {
    requireBinaries(['skopeo', 'umoci', 'busybox', 'containerd', 'ctr', 'runc', 'containerd-shim-runc-v2'])
    work = await createTempDir('shoal-e2e-agent-')
    fileCleanup.add(() => removeTempDir(work), 'remove temp dir')
    image = await buildTestImage({
      dir: join(work, 'image'),
      randomLayerBytes: RANDOM_LAYER_BYTES,
      message: 'hello from shoal via the agent',
    })
    layerBytes = image.layers.reduce((sum, layer) => sum + layer.size, 0)
    registry = await startShoalRegistry({ dataDir: join(work, 'registry-data'), logDir: work })
    fileCleanup.add(() => registry.stop(), 'stop registry')
    reference = (await pushImage(image, { host: registry.host, repository: 'e2e/busybox' })).reference
    await mkdir(join(work, 'agent-data'), { recursive: true })
    agent = await startShoalService({
      args: [
        'agent',
        '--listen',
        '127.0.0.1:0',
        '--data',
        join(work, 'agent-data'),
        '--registry',
        registry.url,
      ],
      service: 'agent',
      name: 'shoal-agent',
      logDir: work,
    })
    fileCleanup.add(() => agent.stop(), 'stop agent')
  })

  afterAll(async () => {
    await fileCleanup.run()
  })

  afterEach(async () => {
    await testCleanup.run()
  })

  it('lets containerd pull through hosts.toml and run the image, then serves a re-pull from its cache', async () => {
    const containerd: Containerd = await startContainerd({ dir: join(work, 'containerd') })
    testCleanup.add(() => containerd.stop(), 'stop containerd')

    const printed = await runCommand(process.execPath, [
      SHOAL_BIN,
      'agent',
      'hosts-toml',
      registry.url,
      '--mirror',
      agent.url,
    ])
    expect(printed.stdout).toContain(`server = "${registry.url}"`)
    expect(printed.stdout).toContain(`[host."${agent.url}"]`)
    const hostsDir = join(work, 'certs.d')
    await mkdir(join(hostsDir, registry.host), { recursive: true })
    await writeFile(join(hostsDir, registry.host, 'hosts.toml'), printed.stdout)

    await containerd.pull(reference, { hostsDir })
    expect((await containerd.run(reference)).trim()).toBe(image.message)
    for (const layer of image.layers) {
      const stored = (await containerd.ctr(['content', 'get', layer.digest], { timeoutMs: 60_000 }))
        .stdoutBytes
      expect(digestOf(stored)).toBe(layer.digest)
    }
    let metrics = await agentMetrics()
    // Every layer byte came through the agent (from the seed, the registry itself).
    expect(sampleSum(metrics, 'shoal_agent_blob_bytes_total', { source: 'seed' })).toBeGreaterThanOrEqual(
      layerBytes,
    )
    expect(
      sampleSum(metrics, 'shoal_agent_http_requests_total', {
        method: 'GET',
        route: '/v2/<name>/blobs/<digest>',
        status: '200',
      }),
    ).toBeGreaterThanOrEqual(image.layers.length + 1)

    // A second node's containerd (containerd 1.6 skips fetching layers it has unpacked,
    // so a fresh one) pulls again: the agent answers from its cache.
    const second: Containerd = await startContainerd({ dir: join(work, 'containerd-2') })
    testCleanup.add(() => second.stop(), 'stop second containerd')
    await second.pull(reference, { hostsDir })
    expect((await second.run(reference)).trim()).toBe(image.message)
    metrics = await agentMetrics()
    expect(sampleSum(metrics, 'shoal_agent_blob_bytes_total', { source: 'cache' })).toBeGreaterThanOrEqual(
      layerBytes,
    )
  })

  it('serves skopeo through a registries.conf mirror of docker.io', async () => {
    const conf = join(work, 'registries.conf')
    await writeFile(
      conf,
      [
        '[[registry]]',
        'prefix = "docker.io"',
        'location = "docker.io"',
        '',
        '[[registry.mirror]]',
        `location = "${agent.host}"`,
        'insecure = true',
        '',
      ].join('\n'),
    )
    const before = await agentMetrics()
    const out = join(work, 'skopeo-out')
    await runCommand(
      'skopeo',
      [
        '--insecure-policy',
        '--registries-conf',
        conf,
        'copy',
        '--quiet',
        `docker://docker.io/e2e/busybox:${image.tag}`,
        `oci:${out}:copy`,
      ],
      { timeoutMs: 120_000 },
    )
    const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as {
      manifests: Array<{ digest: string }>
    }
    expect(index.manifests.map((m) => m.digest)).toEqual([image.manifestDigest])
    for (const layer of image.layers) {
      const copied = await readFile(layoutBlobPath(out, layer.digest))
      expect(copied.equals(await readLayoutBlob(image.layout, layer.digest))).toBe(true)
    }
    const after = await agentMetrics()
    const served = (text: string) =>
      sampleSum(text, 'shoal_agent_blob_bytes_total', { source: 'seed' }) +
      sampleSum(text, 'shoal_agent_blob_bytes_total', { source: 'cache' })
    expect(served(after) - served(before)).toBeGreaterThanOrEqual(layerBytes)
  })
})

describe('shoal agent with dockerd registry-mirrors in a loopback-only namespace', () => {
  const cleanup = createCleanup()

  afterAll(async () => {
    await cleanup.run()
  })

  it('serves a docker.io name to docker pull and run, from the seed, counted by the agent', async () => {
    requireBinaries([
      'skopeo',
      'umoci',
      'busybox',
      'ip',
      'nsenter',
      'curl',
      'containerd',
      'runc',
      'containerd-shim-runc-v2',
      'dockerd',
      '/usr/bin/docker',
    ])
    const work = await createTempDir('shoal-e2e-agent-dockerd-')
    cleanup.add(() => removeTempDir(work), 'remove temp dir')
    const image = await buildTestImage({
      dir: join(work, 'image'),
      randomLayerBytes: 4 * 1024 * 1024,
      message: 'hello from shoal via dockerd and the agent',
    })
    const netns = await createNetns()
    cleanup.add(() => netns.delete(), 'delete network namespace')
    const registry = await startShoalRegistry({ dataDir: join(work, 'registry-data'), logDir: work, netns })
    cleanup.add(() => registry.stop(), 'stop registry')
    await mkdir(join(work, 'agent-data'), { recursive: true })
    const agent = await startShoalService({
      args: [
        'agent',
        '--listen',
        '127.0.0.1:0',
        '--data',
        join(work, 'agent-data'),
        '--registry',
        registry.url,
      ],
      service: 'agent',
      name: 'shoal-agent',
      logDir: work,
      netns,
    })
    cleanup.add(() => agent.stop(), 'stop agent')
    // Docker Hub's official images are library/<name>; dockerd asks the mirror for that name.
    await pushImage(
      image,
      { host: registry.host, repository: 'library/shoal-agent-e2e', tag: 'mirror', format: 'v2s2' },
      { netns },
    )
    const dockerd = await startDockerd({
      dir: join(work, 'dockerd'),
      netns,
      insecureRegistries: [agent.host],
      registryMirrors: [agent.url],
    })
    cleanup.add(() => dockerd.stop(), 'stop dockerd')

    await dockerd.pull('shoal-agent-e2e:mirror')
    expect((await dockerd.inspectImage('shoal-agent-e2e:mirror')).Id).toBe(image.config.digest)
    expect((await dockerd.run('shoal-agent-e2e:mirror')).trim()).toBe(image.message)

    const metrics = (await netns.exec('curl', ['-sf', `${agent.url}/metrics`])).stdout
    const layerBytes = image.layers.reduce((sum, layer) => sum + layer.size, 0)
    expect(sampleSum(metrics, 'shoal_agent_blob_bytes_total', { source: 'seed' })).toBeGreaterThanOrEqual(
      layerBytes,
    )
  })
})
