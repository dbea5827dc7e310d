// Every error string the wire carries, in one place. They are DeviceHive's own, byte for
// byte: clients match on them, so a change here is a breaking change.

export const MALFORMED_JSON = 'Malformed Json received.'
export const UNAUTHORIZED = 'Unauthorized'
export const INVALID_CREDENTIALS = 'Invalid credentials'
export const TOKEN_EXPIRED = 'Token expired'
export const ACCESS_DENIED = 'Access is denied'
export const NO_NETWORK_ACCESS = 'No access to any device type or network'
export const DEVICE_ID_REQUIRED = 'Device id is wrong or empty'
export const DEVICE_ID_INVALID = 'Device Id can only contain letters, digits and dashes.'
export const DEVICE_REQUIRED = 'Device is required'
export const DEVICE_NAME_INVALID = 'Field cannot be empty. The length of name should not be more than 128 symbols.'
export const COMMAND_REQUIRED = 'Command is required'
export const COMMAND_NAME_INVALID = 'Field cannot be empty. The length of command should not be more than 128 symbols.'
export const COMMAND_ID_REQUIRED = 'Command id is wrong or empty'
export const INTERNAL_ERROR = 'Internal server error'
export const BROKER_CLOSED = 'Broker is closed'
export const REFRESH_TOKEN_REQUIRED = 'Refresh token is required'
export const SESSION_REQUIRED = 'Subscriptions need a session: use broker.session(push)'

export function unknownAction (action: string): string {
  return `Unknown action requested: ${action}`
}

export function deviceNotFound (deviceId: string): string {
  return `Device with such deviceId = ${deviceId} not found`
}

export function commandNotFound (commandId: number): string {
  return `Command with id = ${commandId} not found`
}

export function subscriptionNotFound (subscriptionId: number): string {
  return `Subscription with id ${subscriptionId} was not found`
}

export function validationFailed (violations: string): string {
  return `Validation failed with following violations: ${violations}`
}
