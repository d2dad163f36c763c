/**
 * The seed registry against dockerd, all inside a network namespace that has only `lo`
 * (so a docker.io pull that slips past the mirror cannot leave the machine): dockerd
 * pulls from shoal as an insecure registry and through `registry-mirrors` for a docker.io
 * name, `docker image inspect` shows the pushed digests, and `docker run --rm` prints the
 * image's message.
 */
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Dockerd, startDockerd } from '../helpers/dockerd.js'
import { buildTestImage, pushImage, type TestImage } from '../helpers/images.js'
import { createNetns, type NetworkNamespace } from '../helpers/netns.js'
import { createCleanup, createTempDir, removeTempDir, requireBinaries } from '../helpers/processes.js'
import { type ShoalService, startShoalRegistry } from '../helpers/shoal.js'

const RANDOM_LAYER_BYTES = 16 * 1024 * 1024

describe('shoal registry with dockerd in a loopback-only namespace', () => {
  const cleanup = createCleanup()
  let work: string
  let netns: NetworkNamespace
  let registry: ShoalService
  let image: TestImage
  let dockerd: Dockerd

  beforeAll(async () => {
    requireBinaries([
      'skopeo',
      'umoci',
      'busybox',
      'ip',
      'nsenter',
      'containerd',
      'runc',
      'containerd-shim-runc-v2',
      'dockerd',
      '/usr/bin/docker',
    ])
    work = await createTempDir('shoal-e2e-dockerd-')
    cleanup.add(() => removeTempDir(work), 'remove temp dir')
    image = await buildTestImage({
      dir: join(work, 'image'),
      randomLayerBytes: RANDOM_LAYER_BYTES,
      message: 'hello from shoal via dockerd',
    })
    netns = await createNetns()
    cleanup.add(() => netns.delete(), 'delete network namespace')
    const links = await netns.exec('ip', ['-o', 'link', 'show'])
    expect(links.stdout.trim().split('\n')).toHaveLength(1)

    registry = await startShoalRegistry({ dataDir: join(work, 'registry-data'), logDir: work, netns })
    cleanup.add(() => registry.stop(), 'stop registry')
    dockerd = await startDockerd({
      dir: join(work, 'dockerd'),
      netns,
      insecureRegistries: [registry.host],
      registryMirrors: [registry.url],
    })
    cleanup.add(() => dockerd.stop(), 'stop dockerd')
  })

  afterAll(async () => {
    await cleanup.run()
  })

  it('pulls from shoal as an insecure registry, inspects and runs the image', async () => {
    const pushed = await pushImage(image, { host: registry.host, repository: 'e2e/busybox' }, { netns })
    await dockerd.pull(pushed.reference)

    const inspected = await dockerd.inspectImage(pushed.reference)
    expect(inspected.Id).toBe(image.config.digest)
    expect(inspected.RepoTags).toContain(pushed.reference)
    expect(inspected.RepoDigests).toContain(`${registry.host}/e2e/busybox@${pushed.digest}`)
    expect(inspected.Config.Cmd).toEqual(['/bin/echo', image.message])
    expect(inspected.RootFS.Layers).toHaveLength(image.layers.length)
    expect(inspected.Size).toBeGreaterThan(RANDOM_LAYER_BYTES)

    expect((await dockerd.run(pushed.reference)).trim()).toBe(image.message)
  })

  it('serves docker.io names through registry-mirrors (Docker schema 2)', async () => {
    // Only the mirror can answer: the namespace has no route to Docker Hub. No layer
    // may be left over from another test, so that the blobs come through the mirror too.
    await dockerd.removeAllImages()
    const pushed = await pushImage(
      image,
      { host: registry.host, repository: 'library/shoal-e2e', tag: 'mirror', format: 'v2s2' },
      { netns },
    )
    await dockerd.pull('shoal-e2e:mirror')

    const inspected = await dockerd.inspectImage('shoal-e2e:mirror')
    expect(inspected.Id).toBe(image.config.digest)
    expect(inspected.RepoDigests).toContain(`shoal-e2e@${pushed.digest}`)
    expect((await dockerd.run('shoal-e2e:mirror')).trim()).toBe(image.message)
  })
})
