import { ProtocolError } from '../errors.js'
import type { Message } from '../core.js'
import type { ValueLimits } from '../limits.js'
import { validationFailed } from '../messages.js'

const LISTS = ['networkIds', 'deviceTypeIds', 'names'] as const

/** Refuses a filter list longer than `maxFilterItems` before anything walks it. */
export function checkLengths (msg: Message, limits: ValueLimits): void {
  const max = limits.maxFilterItems
  for (const name of LISTS) {
    const list = msg[name]
    if (Array.isArray(list) && list.length > max) throw new ProtocolError(400, validationFailed(`${name} must have at most ${max} entries`))
  }
}
