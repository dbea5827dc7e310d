// Every action the broker serves, by its wire name: adding one is a file and a line here.
import * as commands from './commands.js'
import * as devices from './devices.js'
import type { Action } from './request.js'
import * as subscriptions from './subscriptions.js'
import * as tokens from './tokens.js'

export type { Action, Request, Result } from './request.js'

/** The actions, by wire name. */
export const ACTIONS: ReadonlyMap<string, Action> = new Map<string, Action>([
  ['authenticate', tokens.authenticate],
  ['token/refresh', tokens.refresh],
  ['token/create', tokens.create],
  ['server/info', tokens.serverInfo],
  ['command/insert', commands.insert],
  ['command/update', commands.update],
  ['command/get', commands.get],
  ['command/list', commands.list],
  ['command/subscribe', subscriptions.subscribe],
  ['command/unsubscribe', subscriptions.unsubscribe],
  ['subscription/list', subscriptions.listSubscriptions],
  ['device/save', devices.save],
  ['device/get', devices.get],
  ['device/delete', devices.remove]
])

/** The actions that queue a write: the session's later requests wait for them, they do not wait for its earlier ones to commit. */
export const WRITES: ReadonlySet<string> = new Set(['command/insert', 'command/update'])

/**
 * The actions a session serves in its order, each after the one before has queued its write
 * (or done it): on a store that answers later, reading the device could reorder them.
 */
export const ORDERED: ReadonlySet<string> = new Set(['command/insert', 'command/update', 'device/save', 'device/delete'])
