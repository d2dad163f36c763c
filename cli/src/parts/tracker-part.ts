/**
 * How the CLI loads, composes and serves the tracker part; shared by `shoal tracker`
 * and `shoal up`.
 */
import type { Logger } from 'pino'
import { parseTrackerConfig, type TrackerConfig, trackerConfigSchema } from '../../../tracker/src/config.js'
import type { SectionSpec } from '../config/load.js'
import { listSettings } from '../config/settings.js'
import { type RunningPart, runPart } from '../server/lifecycle.js'
import { serviceLogger } from '../server/logger.js'
import { createMetricsRegistry } from '../server/metrics.js'

/** The tracker's config section as the loader sees it. */
export const trackerSection: SectionSpec<TrackerConfig> = {
  section: 'tracker',
  settings: listSettings('tracker', trackerConfigSchema),
  parse: parseTrackerConfig,
}

/** Composes the tracker from `config` and serves it; resolves once it listens. */
export async function startTrackerPart(config: TrackerConfig, root: Logger): Promise<RunningPart> {
  const { createTrackerNode } = await import('../../../tracker/src/main.js')
  const logger = serviceLogger(root, 'tracker', config.logLevel)
  const metrics = createMetricsRegistry()
  const node = await createTrackerNode(config, { logger, metrics })
  return runPart({ service: 'tracker', node, listen: config.listen, metrics, logger })
}
