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

/** Composes the registry from `config` and serves it; resolves once it listens. */
export async function startRegistryPart(config: RegistryConfig, root: Logger): Promise<RunningPart> {
  // Loaded on demand so that `shoal --help` does not load storage, HTTP and libp2p code.
  const { createRegistryNode } = await import('../../../registry/src/main.js')
  const logger = serviceLogger(root, 'registry', config.logLevel)
  const metrics = createMetricsRegistry()
  const node = await createRegistryNode(config, { logger, metrics })
  return runPart({ service: 'registry', node, listen: config.listen, metrics, logger })
}
