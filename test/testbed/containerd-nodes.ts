/**
 * A containerd per node namespace (own root, state and socket, from
 * test/helpers/containerd.ts) and a hosts dir per node, so a round can pull with a real
 * `ctr images pull` (resolve, fetch, unpack) instead of the HTTP puller: through the
 * node's agent as a hosts.toml mirror, or straight from the registry for the baseline.
 * The content store is shared across containerd namespaces: start fresh ones for every
 * measured round.
 */
import { join } from 'node:path'
import { type Containerd, startContainerd, writeHostsToml } from '../helpers/containerd.js'
import { removeTempDir } from '../helpers/processes.js'
import type { PullTarget } from './services.js'
import type { TestbedHost } from './topology.js'

/** containerds running on some nodes. */
export interface NodeContainerds {
  /**
   * One pull target per node: `ctr images pull <registryHost>/<repository>:<tag>` with
   * a hosts.toml whose server is `http://<registryHost>` and, when given, whose mirror
   * is `mirrorUrl` (the agent on the node's loopback).
   */
  targets(init: {
    registryHost: string
    repository: string
    tag: string
    mirrorUrl?: string
  }): Promise<PullTarget[]>
  /** Stops every containerd and removes its folders (unmounting snapshots). Safe to call twice. */
  stop(): Promise<void>
}

/** Starts one containerd in each of `hosts`' namespaces, under `dir/<node id>`. */
export async function startNodeContainerds(
  hosts: readonly TestbedHost[],
  dir: string,
): Promise<NodeContainerds> {
  const started: Array<{ host: TestbedHost; containerd: Containerd; dir: string }> = []
  const stop = async (): Promise<void> => {
    const all = started.splice(0)
    await Promise.all(
      all.map(async (s) => {
        await s.containerd.stop().catch(() => {})
        await removeTempDir(s.dir).catch(() => {})
      }),
    )
  }
  try {
    for (const host of hosts) {
      const nodeDir = join(dir, host.id)
      const containerd = await startContainerd({ dir: nodeDir, netns: host.ns, snapshotter: 'native' })
      started.push({ host, containerd, dir: nodeDir })
    }
  } catch (err) {
    await stop()
    throw err
  }
  let round = 0
  return {
    async targets(init) {
      round++
      return Promise.all(
        started.map(async ({ host, containerd, dir: nodeDir }) => {
          // A hosts.toml with only a server is refused ("invalid host tree"): the
          // baseline pulls with --plain-http instead.
          const source: string[] = ['--plain-http']
          if (init.mirrorUrl) {
            const hostsDir = join(nodeDir, `hosts-${round}`)
            await writeHostsToml({
              hostsDir,
              host: init.registryHost,
              server: `http://${init.registryHost}`,
              mirrors: [{ url: init.mirrorUrl }],
            })
            source.splice(0, 1, '--hosts-dir', hostsDir)
          }
          const command = [
            'ctr',
            '-a',
            containerd.socket,
            '-n',
            containerd.namespace,
            'images',
            'pull',
            '--snapshotter',
            containerd.snapshotter,
            ...source,
            `${init.registryHost}/${init.repository}:${init.tag}`,
          ]
          return { host, url: `http://${init.registryHost}`, command }
        }),
      )
    },
    stop,
  }
}
