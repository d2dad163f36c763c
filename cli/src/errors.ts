/**
 * How the CLI ends on an error: which exit code and what it prints. Configuration
 * problems and unavailable commands exit 2 (a usage error, nothing was started);
 * anything else exits 1.
 */
import { ConfigError } from '../../protocol/src/index.js'
import { ListenError } from './server/http-server.js'

/** Exit code for usage and configuration errors. */
export const EXIT_USAGE = 2
/** Exit code for failures at run time (a port in use, a crash). */
export const EXIT_FAILURE = 1

/** A command that exists in the CLI but whose part is not built yet. */
export class NotAvailableError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'NotAvailableError'
  }
}

/** Prints `err` for a person on stderr and returns the exit code to use. */
export function reportError(command: string, err: unknown): number {
  if (err instanceof ConfigError) {
    process.stderr.write(
      `shoal ${command}: invalid configuration (${err.problems.length} problem${err.problems.length === 1 ? '' : 's'}):\n${err.problems.map((p) => `  - ${p}\n`).join('')}`,
    )
    return EXIT_USAGE
  }
  if (err instanceof NotAvailableError) {
    process.stderr.write(`shoal ${command}: ${err.message}\n`)
    return EXIT_USAGE
  }
  if (err instanceof ListenError) {
    process.stderr.write(`shoal ${command}: ${err.message}\n`)
    return EXIT_FAILURE
  }
  process.stderr.write(
    `shoal ${command}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  )
  return EXIT_FAILURE
}

/** Wraps a command action so that any error is reported and ends the process with its exit code. */
export function guarded<A extends unknown[]>(
  command: string,
  action: (...args: A) => Promise<void>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await action(...args)
    } catch (err) {
      process.exitCode = reportError(command, err)
      // Parts that started before the failure may hold timers or sockets: do not wait for them.
      setImmediate(() => process.exit())
    }
  }
}
