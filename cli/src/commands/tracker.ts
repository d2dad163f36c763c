/** `shoal tracker`: runs the swarm tracker on its own. */
import { Command } from 'commander'
import { loadSectionConfig } from '../config/load.js'
import { addSettingOptions, readSettingFlags } from '../config/options.js'
import { readConfigFile } from '../config/sources.js'
import { guarded } from '../errors.js'
import { startTrackerPart, trackerSection } from '../parts/tracker-part.js'
import { exitOnSignals, stopParts } from '../server/lifecycle.js'
import { createLogger } from '../server/logger.js'

/** Builds the `tracker` subcommand. */
export function trackerCommand(): Command {
  const command = new Command('tracker')
    .description('run the tracker that hands each peer a good set of peers for a blob')
    .option(
      '-c, --config <file>',
      'YAML or JSON config file; its `tracker:` section applies (env SHOAL_CONFIG)',
    )
  const settings = addSettingOptions(command, trackerSection.settings)
  command.addHelpText(
    'after',
    '\nPrecedence: flags > environment > config file > defaults. Every setting is listed in docs/CONFIGURATION.md.',
  )
  command.action(
    guarded('tracker', async (opts: Record<string, unknown>) => {
      const flags = readSettingFlags(opts, settings)
      const configPath = (opts.config as string | undefined) ?? process.env.SHOAL_CONFIG
      const file = configPath ? await readConfigFile(configPath) : undefined
      const config = loadSectionConfig(trackerSection, { file, env: process.env, flags })
      const logger = createLogger('info')
      const part = await startTrackerPart(config, logger)
      exitOnSignals(() => stopParts([part], logger), logger)
    }),
  )
  return command
}
