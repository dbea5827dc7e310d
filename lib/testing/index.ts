// `command-broker/testing`: the test kit. Everything public is listed here by name. Nothing
// here imports tap: storeSuite takes any test object shaped like tap's (SuiteTest).

export { createTestBroker, TEST_START } from './test-broker.js'
export type { TestBroker, TestBrokerOptions, TestTokens } from './test-broker.js'
export { deviceStub } from './device-stub.js'
export type { Answer, DeviceStub, DeviceStubOptions } from './device-stub.js'
export { nextCommand } from './next-command.js'
export { recordingSession } from './recording-session.js'
export type { RecordingSession } from './recording-session.js'
export type { WaitOptions } from './wait.js'
export { storeSuite } from './store-suite.js'
export type { SuiteTest } from './store-suite.js'
