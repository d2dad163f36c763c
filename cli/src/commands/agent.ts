/** `shoal agent`: runs the per-node peer agent. Wired once peer-agent/src/main.ts exists. */
import { Command } from 'commander'
import { guarded, NotAvailableError } from '../errors.js'

/** Builds the `agent` subcommand. */
export function agentCommand(): Command {
  return new Command('agent')
    .description(
      'run the per-node peer agent: the registry mirror for containerd and docker (not available yet)',
    )
    .option('-c, --config <file>', 'YAML or JSON config file; its `agent:` section applies')
    .option('--listen <host:port>', 'address the mirror endpoint listens on')
    .action(
      guarded('agent', async () => {
        throw new NotAvailableError('the peer agent is not available yet in this build of shoal')
      }),
    )
}
