/** `shoal agent`: runs the per-node peer agent (the registry mirror for containerd and docker). */
import { Command } from 'commander'
import { loadSectionConfig } from '../config/load.js'
import { addSettingOptions, readSettingFlags } from '../config/options.js'
import { readConfigFile } from '../config/sources.js'
import { hostsToml } from '../../../peer-agent/src/hosts-toml.js'
import { EXIT_USAGE, guarded } from '../errors.js'
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
    .option('--registry <url>', 'same as --registry-url')
    .option('--tracker <url>', 'same as --tracker-url')
  const settings = addSettingOptions(command, agentSection.settings)
  command.addHelpText(
    'after',
    '\nPrecedence: flags > environment > config file > defaults. Every setting is listed in docs/CONFIGURATION.md.',
  )
  command.action(
    guarded('agent', async (opts: Record<string, unknown>) => {
      const flags = readSettingFlags(opts, settings)
      if (opts.data !== undefined && flags['data-dir'] === undefined) flags['data-dir'] = opts.data
      if (opts.registry !== undefined && flags['registry-url'] === undefined)
        flags['registry-url'] = opts.registry
      if (opts.tracker !== undefined && flags['tracker-url'] === undefined)
        flags['tracker-url'] = opts.tracker
      const configPath = (opts.config as string | undefined) ?? process.env.SHOAL_CONFIG
      const file = configPath ? await readConfigFile(configPath) : undefined
      const config = loadSectionConfig(agentSection, { file, env: process.env, flags })
      const logger = createLogger('info')
      const part = await startAgentPart(config, logger)
      exitOnSignals(() => stopParts([part], logger), logger)
    }),
  )
  command.addCommand(hostsTomlCommand())
  return command
}

/** Builds `agent hosts-toml`: prints the containerd hosts.toml that sends one upstream's pulls through the agent. */
function hostsTomlCommand(): Command {
  return new Command('hosts-toml')
    .description(
      'print the containerd hosts.toml (certs.d/<host>/hosts.toml) that pulls <upstream> images through the agent',
    )
    .argument('<upstream>', 'registry host (docker.io, ghcr.io) or URL (http://127.0.0.1:5000)')
    .option('--mirror <url>', "the agent's mirror URL", 'http://127.0.0.1:5001')
    .showHelpAfterError()
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE))
    .action((upstream: string, opts: { mirror: string }) => {
      let text: string
      try {
        text = hostsToml(upstream, { mirror: opts.mirror }).text
      } catch (err) {
        process.stderr.write(`shoal agent hosts-toml: ${(err as Error).message}\n`)
        process.exitCode = EXIT_USAGE
        return
      }
      process.stdout.write(text)
    })
}
