/**
 * `shoal up`: the embedded default. Runs every available part (registry and tracker;
 * the agent once it exists) in this process on localhost, with all data under one
 * folder, and says where each listens and how to push and pull.
 */
import { resolve } from 'node:path'
import { Command } from 'commander'
import { ConfigError } from '../../../protocol/src/index.js'
import { loadSectionConfig } from '../config/load.js'
import { readConfigFile } from '../config/sources.js'
import { guarded } from '../errors.js'
import { registrySection, startRegistryPart } from '../parts/registry-part.js'
import { startTrackerPart, trackerSection } from '../parts/tracker-part.js'
import { exitOnSignals, type RunningPart, stopParts } from '../server/lifecycle.js'
import { createLogger } from '../server/logger.js'

interface UpOptions {
  data: string
  config?: string
  registryListen?: string
  trackerListen?: string
  logLevel?: string
}

/** Builds the `up` subcommand. */
export function upCommand(): Command {
  return new Command('up')
    .description('run registry, tracker and agent together on localhost, data under one folder')
    .option('--data <dir>', "folder holding every part's data (a subfolder each)", '.shoal')
    .option(
      '-c, --config <file>',
      'YAML or JSON config file with registry:, tracker:, agent: sections (env SHOAL_CONFIG)',
    )
    .option('--registry-listen <host:port>', 'address of the registry (default 127.0.0.1:5000)')
    .option('--tracker-listen <host:port>', 'address of the tracker (default 127.0.0.1:7070)')
    .option('--log-level <level>', 'log level of every part')
    .addHelpText(
      'after',
      '\nEach part also reads its own environment variables (SHOAL_REGISTRY_..., SHOAL_TRACKER_...; see docs/CONFIGURATION.md).',
    )
    .action(
      guarded('up', async (opts: UpOptions) => {
        const dataDir = resolve(opts.data)
        const configPath = opts.config ?? process.env.SHOAL_CONFIG
        const file = configPath ? await readConfigFile(configPath) : undefined
        const common = opts.logLevel ? { 'log-level': opts.logLevel } : {}
        const listen = (address: string | undefined) => (address ? { listen: address } : {})

        // Load every section before reporting, so that all problems of all parts show at once.
        const problems: string[] = []
        const load = <T>(fn: () => T): T | undefined => {
          try {
            return fn()
          } catch (err) {
            if (!(err instanceof ConfigError)) throw err
            problems.push(...err.problems)
            return undefined
          }
        }
        const registryConfig = load(() =>
          loadSectionConfig(registrySection, {
            file,
            env: process.env,
            base: { dataDir: resolve(dataDir, 'registry') },
            flags: { ...common, ...listen(opts.registryListen) },
          }),
        )
        const trackerConfig = load(() =>
          loadSectionConfig(trackerSection, {
            file,
            env: process.env,
            flags: { ...common, ...listen(opts.trackerListen) },
          }),
        )
        if (!registryConfig || !trackerConfig) throw new ConfigError(problems)

        const logger = createLogger('info')
        const parts: RunningPart[] = []
        exitOnSignals(() => stopParts(parts, logger), logger)
        try {
          parts.push(await startRegistryPart(registryConfig, logger))
          parts.push(await startTrackerPart(trackerConfig, logger))
        } catch (err) {
          await stopParts(parts, logger).catch(() => {})
          throw err
        }
        process.stderr.write(summary(dataDir, parts))
      }),
    )
}

function summary(dataDir: string, parts: RunningPart[]): string {
  const registry = parts.find((p) => p.service === 'registry')
  const lines = ['', `shoal is up (data in ${dataDir}; Ctrl-C stops it)`]
  for (const part of parts) lines.push(`  ${part.service.padEnd(9)} ${part.url}`)
  if (registry) {
    const host = new URL(registry.url).host
    lines.push(
      '',
      'Push an image (an OCI layout directory, or any registry image):',
      `  skopeo copy --dest-tls-verify=false oci:./my-image:latest docker://${host}/my-image:latest`,
      'Pull it:',
      `  ctr images pull --plain-http ${host}/my-image:latest`,
      `  docker pull ${host}/my-image:latest`,
      `Health and metrics of each part: <url>/healthz  <url>/metrics`,
    )
  }
  lines.push('', '')
  return lines.join('\n')
}
