/**
 * How the CLI loads, composes and serves the registry part; shared by `shoal registry`
 * and `shoal up`.
 */
import type { Logger } from 'pino'
import {
  parseRegistryConfig,
  type RegistryConfig,
  registryConfigSchema,
} from '../../../registry/src/config.js'
import type { SectionSpec } from '../config/load.js'
import { listSettings } from '../config/settings.js'
import { type RunningPart, runPart } from '../server/lifecycle.js'
import { serviceLogger } from '../server/logger.js'
import { createMetricsRegistry } from '../server/metrics.js'

/** The registry's config section as the loader sees it. */
export const registrySection: SectionSpec<RegistryConfig> = {
  section: 'registry',
  settings: listSettings('registry', registryConfigSchema),
  parse: parseRegistryConfig,
}

/** A running registry part, with what other parts in the process need to know of its seed. */
export interface RunningRegistryPart extends RunningPart {
  /** The seed's libp2p peer id (the trust root of piece maps), when the seed runs. */
  seedPeerId?: string
  /** The seed's dialable multiaddrs, each ending in /p2p/<peer id>. */
  seedMultiaddrs: string[]
}

/** Composes the registry from `config` and serves it; resolves once it listens. */
export async function startRegistryPart(config: RegistryConfig, root: Logger): Promise<RunningRegistryPart> {
  // Loaded on demand so that `shoal --help` does not load storage, HTTP and libp2p code.
  const { createRegistryNode } = await import('../../../registry/src/main.js')
  const logger = serviceLogger(root, 'registry', config.logLevel)
  const metrics = createMetricsRegistry()
  const node = await createRegistryNode(config, { logger, metrics })
  const part = await runPart({ service: 'registry', node, listen: config.listen, metrics, logger })
  // Preheat rules name the registry to the tracker by the URL it is actually served at.
  node.setUrl?.(part.url)
  return {
    ...part,
    ...(node.seed ? { seedPeerId: node.seed.peerId.toString() } : {}),
    seedMultiaddrs: node.seed?.multiaddrs() ?? [],
  }
}
