/**
 * How the CLI loads, composes and serves the peer agent; shared by `shoal agent` and
 * `shoal up`.
 */
import type { Logger } from 'pino'
import { type AgentConfig, agentConfigSchema, parseAgentConfig } from '../../../peer-agent/src/config.js'
import type { SectionSpec } from '../config/load.js'
import { listSettings } from '../config/settings.js'
import { type RunningPart, runPart } from '../server/lifecycle.js'
import { serviceLogger } from '../server/logger.js'
import { createMetricsRegistry } from '../server/metrics.js'

/** The agent's config section as the loader sees it. */
export const agentSection: SectionSpec<AgentConfig> = {
  section: 'agent',
  settings: listSettings('agent', agentConfigSchema),
  parse: parseAgentConfig,
}

/** Composes the agent from `config` and serves its mirror endpoint; resolves once it listens. */
export async function startAgentPart(config: AgentConfig, root: Logger): Promise<RunningPart> {
  const { createAgentNode } = await import('../../../peer-agent/src/main.js')
  const logger = serviceLogger(root, 'agent', config.logLevel)
  const metrics = createMetricsRegistry()
  const node = await createAgentNode(config, { logger, metrics })
  const part = await runPart({ service: 'agent', node, listen: config.listen, metrics, logger })
  node.setMirrorAddress(new URL(part.url).host)
  return part
}
