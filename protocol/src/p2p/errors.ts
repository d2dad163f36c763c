/**
 * Errors of the piece client, seen only by the fetching peer (they never reach an OCI
 * client, so they are not in protocol/src/errors.ts).
 */
import { ShoalError } from '../errors.js'
import type { PieceStatus, WireErrorCode } from '../messages/index.js'

/** The peer answered a piece request without the piece (`not-held`, `busy`, `not-found`). */
export class PieceUnavailableError extends ShoalError {
  readonly status: Exclude<PieceStatus, 'ok'>
  constructor(status: Exclude<PieceStatus, 'ok'>, detail?: unknown) {
    super(`peer did not send the piece: ${status}`, detail)
    this.name = 'PieceUnavailableError'
    this.status = status
  }
}

/** The peer answered with an error message instead of the expected reply. */
export class PeerRefusedError extends ShoalError {
  readonly code: WireErrorCode
  constructor(code: WireErrorCode, message: string, detail?: unknown) {
    super(`peer refused the request (${code}): ${message}`, detail)
    this.name = 'PeerRefusedError'
    this.code = code
  }
}

/**
 * The piece the peer sent does not have the sha256 the caller expected (fetchPiece's
 * `expectedSha256`): the peer lied or its copy is corrupt. `bytes` is the memory the
 * piece was read into, so a caller that supplied it (`allocate`) can take it back.
 */
export class PieceHashMismatchError extends ShoalError {
  readonly index: number
  readonly bytes: Uint8Array
  constructor(index: number, bytes: Uint8Array, detail?: unknown) {
    super(`piece ${index} does not match its sha256`, detail)
    this.name = 'PieceHashMismatchError'
    this.index = index
    this.bytes = bytes
  }
}
