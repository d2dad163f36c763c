/** `shoal agent`: runs the per-node peer agent (the registry mirror for containerd and docker). */
import { Command } from 'commander'
import { loadSectionConfig } from '../config/load.js'
import { addSettingOptions, readSettingFlags } from '../config/options.js'
import { readConfigFile } from '../config/sources.js'
import { guarded } from '../errors.js'
import { agentSection, startAgentPart } from '../parts/agent-part.js'
import { exitOnSignals, stopParts } from '../server/lifecycle.js'
import { createLogger } from '../server/logger.js'

/** Builds the `agent` subcommand. */
export function agentCommand(): Command {
  const command = new Command('agent')
    .description('run the per-node peer agent: the registry mirror for containerd and docker')
    .option(
      '-c, --config <file>',
      'YAML or JSON config file; its `agent:` section applies (env SHOAL_CONFIG)',
    )
    .option('--data <dir>', 'same as --data-dir')
  const settings = addSettingOptions(command, agentSection.settings)
  command.addHelpText(
    'after',
    '\nPrecedence: flags > environment > config file > defaults. Every setting is listed in docs/CONFIGURATION.md.',
  )
  command.action(
    guarded('agent', async (opts: Record<string, unknown>) => {
      const flags = readSettingFlags(opts, settings)
      if (opts.data !== undefined && flags['data-dir'] === undefined) flags['data-dir'] = opts.data
      const configPath = (opts.config as string | undefined) ?? process.env.SHOAL_CONFIG
      const file = configPath ? await readConfigFile(configPath) : undefined
      const config = loadSectionConfig(agentSection, { file, env: process.env, flags })
      const logger = createLogger('info')
      const part = await startAgentPart(config, logger)
      exitOnSignals(() => stopParts([part], logger), logger)
    }),
  )
  return command
}
