/**
 * The whole swarm with real clients, every part started through the CLI inside one
 * network namespace that has only `lo` (so nothing can leave the machine): a shoal seed
 * registry, a tracker and three agents (each its own data folder, mirror port and
 * libp2p port on loopback). An image with a busybox layer and a ~24 MB random layer is
 * pushed to the seed as `library/shoaltest:1`.
 *
 * - Node 1: containerd pulls through agent 1 (hosts.toml from `shoal agent hosts-toml`)
 *   and runs the image.
 * - Node 2: once the tracker lists agent 1 as a complete peer of every layer, a second
 *   containerd pulls through agent 2; agent 2's metrics must show the layer bytes came
 *   from peers and almost none from the seed.
 * - Node 3: dockerd with `registry-mirrors` pointing at agent 3 pulls the docker.io name
 *   `shoaltest:1` (agent 3 maps docker.io to the seed with `--upstream`); agent 3 also
 *   gets the layers from peers.
 * - skopeo copies the image out through a registries.conf mirror of docker.io to agent 1,
 *   byte-identical (manifest and every blob).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Containerd, startContainerd } from '../helpers/containerd.js'
import { type Dockerd, startDockerd } from '../helpers/dockerd.js'
import {
  buildTestImage,
  type PushedImage,
  pushImage,
  readLayoutBlob,
  type TestImage,
} from '../helpers/images.js'
import { createNetns, type NetworkNamespace } from '../helpers/netns.js'
import {
  createCleanup,
  createTempDir,
  removeTempDir,
  requireBinaries,
  runCommand,
  waitFor,
} from '../helpers/processes.js'
import { SHOAL_BIN, type ShoalService, startShoalRegistry, startShoalService } from '../helpers/shoal.js'
import { sampleSum } from '../helpers/metrics.js'

const RANDOM_LAYER_BYTES = 24 * 1024 * 1024
const REPOSITORY = 'library/shoaltest'
const TAG = '1'

describe('a three-agent swarm with containerd, dockerd and skopeo in a loopback-only namespace', () => {
  const cleanup = createCleanup()
  let work: string
  let netns: NetworkNamespace
  let registry: ShoalService
  let tracker: ShoalService
  const agents: ShoalService[] = []
  let image: TestImage
  let pushed: PushedImage
  let bigLayer: { digest: string; size: number }
  let hostsDir: string

  /** GETs a URL inside the namespace (curl) and returns the body. */
  async function get(url: string): Promise<string> {
    return (await netns.exec('curl', ['-sSf', '--max-time', '10', url], { timeoutMs: 20_000 })).stdout
  }

  async function startAgent(index: number, extraArgs: string[] = []): Promise<ShoalService> {
    const dataDir = join(work, `agent-${index}`)
    await mkdir(dataDir, { recursive: true })
    const agent = await startShoalService({
      args: [
        'agent',
        '--listen',
        '127.0.0.1:0',
        '--data',
        dataDir,
        '--registry',
        registry.url,
        '--tracker',
        tracker.url,
        '--p2p-listen',
        '/ip4/127.0.0.1/tcp/0',
        ...extraArgs,
      ],
      service: 'agent',
      name: `shoal-agent-${index}`,
      logDir: work,
      netns,
      startTimeoutMs: 120_000,
    })
    cleanup.add(() => agent.stop(), `stop agent ${index}`)
    return agent
  }

  /**
   * Waits until the tracker lists at least `count` complete agents (not the seed) in the
   * swarm of every blob of the image.
   */
  async function waitForCompletePeers(count: number): Promise<void> {
    for (const blob of [image.config, ...image.layers]) {
      await waitFor(
        async () => {
          const swarm = JSON.parse(await get(`${tracker.url}/v1/swarms/${blob.digest}`)) as {
            peers: Array<{ role: string; complete: boolean }>
          }
          return swarm.peers.filter((p) => p.role !== 'seed' && p.complete).length >= count
        },
        { timeoutMs: 60_000, intervalMs: 250, description: `${count} complete agents of ${blob.digest}` },
      )
    }
  }

  beforeAll(async () => {
    requireBinaries([
      'skopeo',
      'umoci',
      'busybox',
      'ip',
      'nsenter',
      'curl',
      'containerd',
      'ctr',
      'runc',
      'containerd-shim-runc-v2',
      'dockerd',
      '/usr/bin/docker',
    ])
    work = await createTempDir('shoal-e2e-swarm-')
    cleanup.add(() => removeTempDir(work), 'remove temp dir')
    image = await buildTestImage({
      dir: join(work, 'image'),
      randomLayerBytes: RANDOM_LAYER_BYTES,
      message: 'hello from the shoal swarm',
    })
    const largest = image.layers.reduce((a, b) => (b.size > a.size ? b : a))
    bigLayer = { digest: largest.digest, size: largest.size }
    netns = await createNetns()
    cleanup.add(() => netns.delete(), 'delete network namespace')

    await mkdir(join(work, 'tracker'), { recursive: true })
    tracker = await startShoalService({
      args: ['tracker', '--listen', '127.0.0.1:0', '--data-dir', join(work, 'tracker')],
      service: 'tracker',
      name: 'shoal-tracker',
      logDir: work,
      netns,
    })
    cleanup.add(() => tracker.stop(), 'stop tracker')
    registry = await startShoalRegistry({
      dataDir: join(work, 'registry-data'),
      logDir: work,
      netns,
      extraArgs: [
        '--gc-interval-ms',
        '0',
        '--seed-listen',
        '/ip4/127.0.0.1/tcp/0',
        '--seed-tracker-url',
        tracker.url,
      ],
    })
    cleanup.add(() => registry.stop(), 'stop registry')
    // Docker schema 2, so dockerd takes it too; containerd and skopeo read it as well.
    pushed = await pushImage(
      image,
      { host: registry.host, repository: REPOSITORY, tag: TAG, format: 'v2s2' },
      { netns },
    )
    agents.push(await startAgent(1))
    agents.push(await startAgent(2))
    agents.push(await startAgent(3, ['--upstream', `docker.io=${registry.url}`]))

    const printed = await runCommand(process.execPath, [
      SHOAL_BIN,
      'agent',
      'hosts-toml',
      registry.url,
      '--mirror',
      (agents[0] as ShoalService).url,
    ])
    hostsDir = join(work, 'certs.d')
    await mkdir(join(hostsDir, registry.host), { recursive: true })
    await writeFile(join(hostsDir, registry.host, 'hosts.toml'), printed.stdout)
  })

  afterAll(async () => {
    await cleanup.run()
  })

  it('pulls on node 1 from the seed, then nodes 2 and 3 get the layers from peers; skopeo copies it out', async () => {
    const [agent1, agent2, agent3] = agents as [ShoalService, ShoalService, ShoalService]
    const reference = `${registry.host}/${REPOSITORY}:${TAG}`

    // Node 1: containerd pulls through agent 1 and runs the image.
    const node1: Containerd = await startContainerd({ dir: join(work, 'containerd-1'), netns })
    cleanup.add(() => node1.stop(), 'stop containerd 1')
    await node1.pull(reference, { hostsDir, timeoutMs: 180_000 })
    expect((await node1.run(reference)).trim()).toBe(image.message)
    const metrics1 = await get(`${agent1.url}/metrics`)
    const delivered1 =
      sampleSum(metrics1, 'shoal_agent_blob_bytes_total', { source: 'seed' }) +
      sampleSum(metrics1, 'shoal_agent_blob_bytes_total', { source: 'peer' })
    expect(delivered1).toBeGreaterThanOrEqual(bigLayer.size)

    // Agent 1 is a complete peer of every layer before node 2 starts: the tracker then
    // hands agent 2 a peer holding everything, and the scheduler asks the seed only for
    // what no peer can give.
    await waitForCompletePeers(1)

    // Node 2: a second containerd pulls the same image through agent 2.
    const hostsDir2 = join(work, 'certs.d-2')
    await mkdir(join(hostsDir2, registry.host), { recursive: true })
    await writeFile(
      join(hostsDir2, registry.host, 'hosts.toml'),
      (await readFile(join(hostsDir, registry.host, 'hosts.toml'), 'utf8')).replaceAll(
        agent1.url,
        agent2.url,
      ),
    )
    const node2: Containerd = await startContainerd({ dir: join(work, 'containerd-2'), netns })
    cleanup.add(() => node2.stop(), 'stop containerd 2')
    await node2.pull(reference, { hostsDir: hostsDir2, timeoutMs: 180_000 })
    expect((await node2.run(reference)).trim()).toBe(image.message)
    await node2.stop()
    await node1.stop()
    const metrics2 = await get(`${agent2.url}/metrics`)
    const peer2 = sampleSum(metrics2, 'shoal_agent_blob_bytes_total', { source: 'peer' })
    const seed2 = sampleSum(metrics2, 'shoal_agent_blob_bytes_total', { source: 'seed' })
    expect(peer2, `agent 2 peer bytes (seed ${seed2})`).toBeGreaterThanOrEqual(bigLayer.size)
    expect(seed2, `agent 2 seed bytes (peer ${peer2})`).toBeLessThan(bigLayer.size / 4)
    expect(sampleSum(metrics2, 'shoal_agent_blob_bytes_total', { source: 'upstream' })).toBe(0)

    // Node 3: dockerd pulls the docker.io name through agent 3 as its registry mirror.
    await waitForCompletePeers(2)
    const dockerd: Dockerd = await startDockerd({
      dir: join(work, 'dockerd'),
      netns,
      insecureRegistries: [agent3.host],
      registryMirrors: [agent3.url],
    })
    cleanup.add(() => dockerd.stop(), 'stop dockerd')
    await dockerd.pull(`shoaltest:${TAG}`, { timeoutMs: 180_000 })
    expect((await dockerd.inspectImage(`shoaltest:${TAG}`)).Id).toBe(image.config.digest)
    expect((await dockerd.run(`shoaltest:${TAG}`)).trim()).toBe(image.message)
    await dockerd.stop()
    const metrics3 = await get(`${agent3.url}/metrics`)
    const peer3 = sampleSum(metrics3, 'shoal_agent_blob_bytes_total', { source: 'peer' })
    const seed3 =
      sampleSum(metrics3, 'shoal_agent_blob_bytes_total', { source: 'seed' }) +
      sampleSum(metrics3, 'shoal_agent_blob_bytes_total', { source: 'upstream' })
    expect(peer3, `agent 3 peer bytes (seed and upstream ${seed3})`).toBeGreaterThanOrEqual(bigLayer.size)
    expect(seed3, `agent 3 seed and upstream bytes (peer ${peer3})`).toBeLessThan(bigLayer.size / 4)

    // skopeo copies the image out through a registries.conf mirror of docker.io (agent 1).
    const conf = join(work, 'registries.conf')
    await writeFile(
      conf,
      [
        '[[registry]]',
        'prefix = "docker.io"',
        'location = "docker.io"',
        '',
        '[[registry.mirror]]',
        `location = "${agent1.host}"`,
        'insecure = true',
        '',
      ].join('\n'),
    )
    const out = join(work, 'skopeo-out')
    await netns.exec(
      'skopeo',
      [
        '--insecure-policy',
        '--registries-conf',
        conf,
        'copy',
        '--quiet',
        `docker://docker.io/${REPOSITORY}:${TAG}`,
        `dir:${out}`,
      ],
      { timeoutMs: 120_000 },
    )
    expect((await readFile(join(out, 'manifest.json'))).equals(pushed.manifest)).toBe(true)
    for (const blob of [image.config, ...image.layers]) {
      const copied = await readFile(join(out, blob.digest.slice('sha256:'.length)))
      expect(copied.equals(await readLayoutBlob(image.layout, blob.digest)), blob.digest).toBe(true)
    }
    // Every process is still up.
    for (const service of [registry, tracker, ...agents]) {
      expect(service.process.exitStatus(), service.process.name).toBeUndefined()
    }
  })
})
