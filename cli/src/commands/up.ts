/**
 * `shoal up`: the embedded default. Runs registry, tracker and one agent in this
 * process on localhost, with all data under one folder, points the agent at the
 * registry and the tracker, and says where each listens and how to push and pull.
 */
import { resolve } from 'node:path'
import { Command } from 'commander'
import { ConfigError } from '../../../protocol/src/index.js'
import { loadSectionConfig } from '../config/load.js'
import { readConfigFile } from '../config/sources.js'
import { guarded } from '../errors.js'
import { agentSection, startAgentPart } from '../parts/agent-part.js'
import { type RunningRegistryPart, registrySection, startRegistryPart } from '../parts/registry-part.js'
import { startTrackerPart, trackerSection } from '../parts/tracker-part.js'
import { exitOnSignals, type RunningPart, stopParts } from '../server/lifecycle.js'
import { createLogger } from '../server/logger.js'

interface UpOptions {
  data: string
  config?: string
  registryListen?: string
  trackerListen?: string
  agentListen?: string
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
    .option('--agent-listen <host:port>', "address of the agent's mirror endpoint (default 127.0.0.1:5001)")
    .option('--log-level <level>', 'log level of every part')
    .addHelpText(
      'after',
      '\nEach part also reads its own environment variables (SHOAL_REGISTRY_..., SHOAL_TRACKER_..., SHOAL_AGENT_...; see docs/CONFIGURATION.md).',
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
        const trackerConfig = load(() =>
          loadSectionConfig(trackerSection, {
            file,
            env: process.env,
            // Preheat jobs persist under the tracker's folder.
            base: { dataDir: resolve(dataDir, 'tracker') },
            flags: { ...common, ...listen(opts.trackerListen) },
          }),
        )
        // The registry's seed announces to the tracker, and the agent needs the registry,
        // the tracker and the seed's identity; those are known only once the parts run
        // (ports may be 0). So each section is loaded now with the configured addresses,
        // to report its problems up front, and loaded again just before it starts.
        const registrySources = (trackerUrl: string) => ({
          file,
          env: process.env,
          base: { dataDir: resolve(dataDir, 'registry'), seed: { trackerUrl } },
          flags: { ...common, ...listen(opts.registryListen) },
        })
        const agentSources = (registryUrl: string, trackerUrl: string, seed?: RunningRegistryPart) => ({
          file,
          env: process.env,
          base: {
            dataDir: resolve(dataDir, 'agent'),
            registryUrl,
            trackerUrl,
            ...(seed?.seedPeerId ? { registryPeerId: seed.seedPeerId } : {}),
            ...(seed && seed.seedMultiaddrs.length > 0 ? { bootstrap: seed.seedMultiaddrs } : {}),
          },
          flags: { ...common, ...listen(opts.agentListen) },
        })
        const configuredTracker = `http://${trackerConfig?.listen ?? '127.0.0.1:7070'}`
        const registryConfig = load(() =>
          loadSectionConfig(registrySection, registrySources(configuredTracker)),
        )
        const agentConfig = load(() =>
          loadSectionConfig(
            agentSection,
            agentSources(`http://${registryConfig?.listen ?? '127.0.0.1:5000'}`, configuredTracker),
          ),
        )
        if (!registryConfig || !trackerConfig || !agentConfig) throw new ConfigError(problems)

        const logger = createLogger('info')
        const parts: RunningPart[] = []
        exitOnSignals(() => stopParts(parts, logger), logger)
        try {
          const tracker = await startTrackerPart(trackerConfig, logger)
          parts.push(tracker)
          const registry = await startRegistryPart(
            loadSectionConfig(registrySection, registrySources(tracker.url)),
            logger,
          )
          parts.push(registry)
          const agent = await startAgentPart(
            loadSectionConfig(agentSection, agentSources(registry.url, tracker.url, registry)),
            logger,
          )
          parts.push(agent)
        } catch (err) {
          await stopParts(parts, logger).catch(() => {})
          throw err
        }
        process.stderr.write(summary(dataDir, parts))
      }),
    )
}

function summary(dataDir: string, parts: RunningPart[]): string {
  const url = (service: string) => parts.find((p) => p.service === service)?.url ?? ''
  const registry = new URL(url('registry')).host
  const agent = new URL(url('agent')).host
  const lines = ['', `shoal is up (data in ${dataDir}; Ctrl-C stops it)`]
  for (const part of parts) lines.push(`  ${part.service.padEnd(9)} ${part.url}`)
  lines.push(
    '',
    'Push an image to the registry (from an OCI layout directory, or any registry image):',
    `  skopeo copy --dest-tls-verify=false oci:./my-image:latest docker://${registry}/my-image:latest`,
    'Pull it from the registry:',
    `  ctr images pull --plain-http ${registry}/my-image:latest`,
    `  docker pull ${registry}/my-image:latest`,
    'Or through the agent (the node mirror): a containerd hosts dir with',
    `  certs.d/${registry}/hosts.toml:  server = "http://${registry}"`,
    `                                  [host."http://${agent}"] capabilities = ["pull", "resolve"]`,
    `  ctr images pull --hosts-dir certs.d ${registry}/my-image:latest`,
    'Each part answers <url>/healthz and <url>/metrics.',
    '',
    '',
  )
  return lines.join('\n')
}
