// The README's invoke() example, verbatim but for the import path: test/example-invoke.ts runs
// it (answered, refused, expired, timed out, aborted, closed) and checks the two stay the same.
import { BrokerError, type Broker, type CommandInsertMessage, type Json } from '../lib/index.js'

/**
 * A gateway's POST /device/:id/command?waitTimeout=s: insert the body as a command, then answer
 * with the device's result, waiting at most `waitTimeout` seconds, and no longer than the caller.
 */
export async function runCommand (broker: Broker, token: string, deviceId: string, command: CommandInsertMessage['command'],
  waitTimeout: number, signal: AbortSignal): Promise<{ status: number, body: Json }> {
  try {
    const answered = await broker.invoke({ deviceId, command }, token, { signal, timeout: waitTimeout * 1000 })
    return { status: 200, body: { id: answered.id, status: answered.status, result: answered.result } }
  } catch (err) {
    if (!(err instanceof BrokerError)) throw err
    switch (err.code) {
      case 'ERR_REFUSED': // DeviceHive's answer to the insert: 400 (bad command), 401, 403, 404 (no such device)
        return { status: err.reply?.code ?? 500, body: { error: err.reply?.error ?? err.message } }
      case 'ERR_EXPIRED': // its lifetime ran out before the device answered: the command is gone
        return { status: 504, body: { error: 'the device did not answer within the command\'s lifetime' } }
      case 'ERR_TIMEOUT': // no answer within waitTimeout: the command stays pending for the rest of its lifetime
        return { status: 202, body: { error: 'no answer yet' } }
      default: // ERR_ABORTED (the caller went away), ERR_CLOSED (shutting down): no one to answer
        throw err
    }
  }
}
