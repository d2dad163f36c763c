/**
 * The `shoal` command: one subcommand per part, and `up` for all of them together.
 * bin/shoal.js bundles the sources with esbuild (or runs them through tsx) and loads this file.
 */
import { readFileSync } from 'node:fs'
import { Command } from 'commander'
import { agentCommand } from './commands/agent.js'
import { preheatCommand } from './commands/preheat.js'
import { registryCommand } from './commands/registry.js'
import { statusCommand } from './commands/status.js'
import { trackerCommand } from './commands/tracker.js'
import { upCommand } from './commands/up.js'
import { EXIT_USAGE } from './errors.js'

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string
}

const program = new Command('shoal')
  .description('peer-to-peer container image distribution: an OCI registry, a tracker and per-node agents')
  .version(pkg.version)

for (const command of [
  program,
  registryCommand(),
  trackerCommand(),
  agentCommand(),
  upCommand(),
  preheatCommand(),
  statusCommand(),
]) {
  // Usage errors (unknown option, missing argument) exit 2 like configuration errors; help and version exit 0.
  command.showHelpAfterError().exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE))
  if (command !== program) program.addCommand(command)
}

await program.parseAsync(process.argv)
