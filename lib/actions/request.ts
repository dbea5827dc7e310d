import type { Core, Message } from '../core.js'
import type { Payload, WriteOp } from '../group-commit.js'
import type { SessionState } from '../session.js'

/** One request on its way through an action. */
export interface Request {
  readonly core: Core
  /** The session it came through, or undefined for `broker.handle()`. */
  readonly session: SessionState | undefined
  readonly msg: Message
  /** The message-level token, or undefined to use the session's. */
  readonly token: unknown
  /** What must wait until this request's reply is out (a new subscription's pushes). */
  readonly afterReply: Array<() => void> | undefined
}

/**
 * What an action answers: a payload for the success reply (or undefined for none), or a
 * write queued for the next group commit, whose reply comes once it has committed. An action
 * throws a `ProtocolError` to answer with an error.
 */
export type Result = Payload | WriteOp

/** Serves one action; see {@link Result}. */
export type Action = (request: Request) => Result | Promise<Result>

/** Serves a request again after a wait: first refusing it if the broker or session closed meanwhile. */
export function again (request: Request, action: Action): Result | Promise<Result> {
  request.core.checkOpen(request.session)
  return action(request)
}
