// authenticate (spec §11).
import { authenticateSchema, malformed, parse } from '../schema.js'
import type { Request, Result } from './request.js'

/**
 * `authenticate`: checks the token and, in a session, makes it the session's for later
 * requests. The session's subscriptions keep the rights they were made with.
 */
export function authenticate (request: Request): Result {
  const { token } = parse(authenticateSchema, request.msg, malformed)
  request.core.grant(undefined, token)
  if (request.session !== undefined) request.session.token = token
  return undefined
}
