/** `shoal tracker`: runs the swarm tracker. Wired once tracker/src/main.ts exists. */
import { Command } from 'commander'
import { guarded, NotAvailableError } from '../errors.js'

/** Builds the `tracker` subcommand. */
export function trackerCommand(): Command {
  return new Command('tracker')
    .description('run the tracker that hands each peer a good set of peers for a blob (not available yet)')
    .option('-c, --config <file>', 'YAML or JSON config file; its `tracker:` section applies')
    .option('--listen <host:port>', 'address the tracker API listens on')
    .action(
      guarded('tracker', async () => {
        throw new NotAvailableError('the tracker is not available yet in this build of shoal')
      }),
    )
}
