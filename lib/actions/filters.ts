import { ProtocolError } from '../errors.js'
import type { Message } from '../core.js'
import type { ValueLimits } from '../limits.js'
import { validationFailed } from '../messages.js'

const LISTS: readonly string[] = ['networkIds', 'deviceTypeIds', 'names']

/** Refuses a list (a filter's, by default) longer than `maxFilterItems` before anything walks it. */
export function checkLengths (msg: Message, limits: ValueLimits, lists = LISTS): void {
  const max = limits.maxFilterItems
  for (const name of lists) {
    const list = msg[name]
    if (Array.isArray(list) && list.length > max) throw new ProtocolError(400, validationFailed(`${name} must have at most ${max} entries`))
  }
}
