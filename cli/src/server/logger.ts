/**
 * The process logger: pino writing one JSON object per line to stdout, so that logs
 * can be piped to any collector and tests can parse them.
 */
import { type Level, type Logger, pino } from 'pino'

/** pino levels plus `silent`. */
export type LogLevel = Level | 'silent'

/**
 * Creates the root logger. Each part logs through a child that names it
 * (`logger.child({ service: 'registry' })`).
 */
export function createLogger(level: LogLevel = 'info'): Logger {
  // Synchronous writes keep lines in order and lose none when the process exits right after logging.
  return pino({ level }, pino.destination({ dest: 1, sync: true }))
}

/** A child logger for one part, at that part's own level. */
export function serviceLogger(root: Logger, service: string, level: LogLevel): Logger {
  return root.child({ service }, { level })
}
