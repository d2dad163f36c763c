/**
 * Errors of the download scheduler that only the agent sees (it falls back to the seed
 * or the upstream on them), so they are not in protocol/src/errors.ts.
 */
import { ShoalError } from '../../../protocol/src/errors.js'

/** No peer could serve the missing pieces within the stall timeout. */
export class SwarmUnavailableError extends ShoalError {
  constructor(message: string, detail?: unknown) {
    super(message, detail)
    this.name = 'SwarmUnavailableError'
  }
}
