import t from 'tap'
import * as messages from '../lib/messages.js'

// Clients match on these strings: each is DeviceHive's own, byte for byte.
t.test('messages: the fixed strings are DeviceHive\'s', async (t) => {
  t.strictSame({
    MALFORMED_JSON: messages.MALFORMED_JSON,
    UNAUTHORIZED: messages.UNAUTHORIZED,
    INVALID_CREDENTIALS: messages.INVALID_CREDENTIALS,
    TOKEN_EXPIRED: messages.TOKEN_EXPIRED,
    ACCESS_DENIED: messages.ACCESS_DENIED,
    DEVICE_ID_REQUIRED: messages.DEVICE_ID_REQUIRED,
    DEVICE_ID_INVALID: messages.DEVICE_ID_INVALID,
    COMMAND_REQUIRED: messages.COMMAND_REQUIRED,
    COMMAND_NAME_INVALID: messages.COMMAND_NAME_INVALID,
    COMMAND_ID_REQUIRED: messages.COMMAND_ID_REQUIRED,
    INTERNAL_ERROR: messages.INTERNAL_ERROR
  }, {
    MALFORMED_JSON: 'Malformed Json received.',
    UNAUTHORIZED: 'Unauthorized',
    INVALID_CREDENTIALS: 'Invalid credentials',
    TOKEN_EXPIRED: 'Token expired',
    ACCESS_DENIED: 'Access is denied',
    DEVICE_ID_REQUIRED: 'Device id is wrong or empty',
    DEVICE_ID_INVALID: 'Device Id can only contain letters, digits and dashes.',
    COMMAND_REQUIRED: 'Command is required',
    COMMAND_NAME_INVALID: 'Field cannot be empty. The length of command should not be more than 128 symbols.',
    COMMAND_ID_REQUIRED: 'Command id is wrong or empty',
    INTERNAL_ERROR: 'Internal server error'
  })
})

t.test('messages: the parametrised strings', async (t) => {
  t.equal(messages.unknownAction('x/y'), 'Unknown action requested: x/y')
  t.equal(messages.deviceNotFound('lamp-1'), 'Device with such deviceId = lamp-1 not found')
  t.equal(messages.commandNotFound(42), 'Command with id = 42 not found')
  t.equal(messages.subscriptionNotFound(3), 'Subscription with id 3 was not found')
  t.equal(messages.validationFailed('lifetime must be positive'), 'Validation failed with following violations: lifetime must be positive')
})
