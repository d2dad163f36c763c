/** `shoal registry`: runs the OCI registry (seed and pull-through cache) on its own. */
import { Command } from 'commander'
import { loadSectionConfig } from '../config/load.js'
import { addSettingOptions, readSettingFlags } from '../config/options.js'
import { readConfigFile } from '../config/sources.js'
import { guarded } from '../errors.js'
import { registrySection, startRegistryPart } from '../parts/registry-part.js'
import { exitOnSignals, stopParts } from '../server/lifecycle.js'
import { createLogger } from '../server/logger.js'

/** Builds the `registry` subcommand. */
export function registryCommand(): Command {
  const command = new Command('registry')
    .description('run the OCI registry: push, pull, pull-through cache, garbage collection')
    .option(
      '-c, --config <file>',
      'YAML or JSON config file; its `registry:` section applies (env SHOAL_CONFIG)',
    )
    .option('--data <dir>', 'same as --data-dir')
  const settings = addSettingOptions(command, registrySection.settings)
  command.addHelpText(
    'after',
    '\nPrecedence: flags > environment > config file > defaults. Every setting is listed in docs/CONFIGURATION.md.',
  )
  command.action(
    guarded('registry', async (opts: Record<string, unknown>) => {
      const flags = readSettingFlags(opts, settings)
      if (opts.data !== undefined && flags['data-dir'] === undefined) flags['data-dir'] = opts.data
      const configPath = (opts.config as string | undefined) ?? process.env.SHOAL_CONFIG
      const file = configPath ? await readConfigFile(configPath) : undefined
      const config = loadSectionConfig(registrySection, { file, env: process.env, flags })
      const logger = createLogger('info')
      const part = await startRegistryPart(config, logger)
      exitOnSignals(() => stopParts([part], logger), logger)
    }),
  )
  return command
}
