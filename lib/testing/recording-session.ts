// recordingSession(): a session whose pushes a test awaits one by one.
import type { Broker } from '../broker.js'
import { BrokerError } from '../errors.js'
import { describe } from '../options.js'
import type { Push, Reply } from '../schema.js'
import type { Session } from '../session.js'
import { checkBroker, kitOf, refused } from './kit.js'
import { waitFor, type WaitOptions } from './wait.js'

/** A session that keeps its pushes: see {@link recordingSession}. */
export interface RecordingSession {
  /** The session itself. */
  readonly session: Session
  /** Every push so far, in order, whether `next()` took it or not. */
  readonly pushes: readonly Push[]
  /** `session.handle()`: sends a request on the session (`command/subscribe`, say). */
  handle: (message: unknown, token?: unknown) => Promise<Reply>
  /**
   * The oldest push not yet taken by `next()`, or the next one to come. Each push is taken
   * once; several `next()` calls take the pushes in order. Rejects with a `BrokerError`:
   * `ERR_TIMEOUT` (`options.timeout` ms on the test broker's manual clock), `ERR_ABORTED`,
   * `ERR_CLOSED` (the session or broker closed, or was, and no push is left).
   */
  next: (options?: WaitOptions) => Promise<Push>
  /** Closes the session; `next()` calls still waiting reject with `ERR_CLOSED`. */
  close: () => void
}

/**
 * Opens a session on `broker` that records its pushes, authenticated with `token` (on a
 * test broker, `tokens.client` by default; on another broker, left unauthenticated without
 * one). Subscribe through `handle()`, then `await session.next()` for each push. Rejects with
 * `ERR_REFUSED` (the reply in `reply`) if `authenticate` fails. Throws `TypeError` for bad
 * arguments.
 *
 * @example
 * const client = await recordingSession(broker)
 * await client.handle({ action: 'command/subscribe', deviceId: 'lamp-1' })
 * await broker.handle({ action: 'command/insert', deviceId: 'lamp-1', command: { command: 'on' } }, tokens.client)
 * const push = await client.next({ timeout: 1000 })
 */
export function recordingSession (broker: Broker, token?: string): Promise<RecordingSession> {
  checkBroker('recordingSession', broker)
  if (token !== undefined && typeof token !== 'string') throw new TypeError(`recordingSession: token must be a string, received ${describe(token)}`)
  const pushes: Push[] = []
  const unread: Push[] = []
  const waiting: Array<(push: Push) => void> = []
  const closing = new Set<() => void>()
  const session = broker.session((push) => {
    pushes.push(push)
    const waiter = waiting.shift()
    if (waiter === undefined) unread.push(push)
    else waiter(push)
  })
  const recording: RecordingSession = {
    session,
    pushes,
    handle: (message, as) => session.handle(message, as),
    next: (options = {}) => waitFor<Push>('recordingSession.next', broker, options, (deliver) => {
      const push = unread.shift()
      if (push !== undefined) {
        deliver(push)
        return () => {}
      }
      if (session.closed) throw new BrokerError('ERR_CLOSED', 'recordingSession.next: the session is closed')
      waiting.push(deliver)
      return () => {
        const at = waiting.indexOf(deliver)
        if (at >= 0) waiting.splice(at, 1)
      }
    }, closing),
    close: () => {
      session.close()
      for (const closed of [...closing]) closed()
    }
  }
  const as = token ?? kitOf(broker)?.tokens.client
  if (as === undefined) return Promise.resolve(recording)
  return session.handle({ action: 'authenticate', token: as }).then((reply) => {
    if (reply.status === 'error') {
      session.close()
      throw refused('recordingSession: authenticate failed', reply)
    }
    return recording
  })
}
