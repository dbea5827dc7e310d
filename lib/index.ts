// The package's only entry point: everything public is listed here by name.

export { createBroker, Broker } from './broker.js'
export type { BrokerEvents, BrokerStats, RecoveryReport, SubscribeFilter } from './broker.js'
export { channels } from './diagnostics.js'
export type { InvokeOptions, InvokeRequest } from './invoke.js'
export { CommandStream } from './command-stream.js'
export type { CommandStreamOptions } from './command-stream.js'
export { Session } from './session.js'
export type { PushFunction } from './session.js'
export { DEFAULTS } from './options.js'
export type { BrokerOptions } from './options.js'
export { BrokerError } from './errors.js'
export type { BrokerErrorCode } from './errors.js'

export { memoryStore } from './store/memory.js'
export { sqliteStore, SCHEMA_VERSION } from './store/sqlite.js'
export type { SqliteStoreOptions, SqliteDatabase, SqliteStore, SqliteBackup } from './store/sqlite.js'
export { postgresStore, POSTGRES_SCHEMA_VERSION } from './store/postgres.js'
export type { PostgresStoreOptions } from './store/postgres.js'
export type {
  Store, SyncStore, SharedSpace, Awaitable, WriteBatch, CommandUpdate, CommitResult, DeviceRecord, CommandRecord,
  NewCommandRecord, CommandPatch, CommandScan, CommandPage, SortQuery, CountPage, ExpiringPage, Cursor
} from './store/store.js'
export { LocalBus } from './bus/bus.js'
export { PostgresBus } from './bus/postgres.js'
export type { PostgresBusOptions } from './bus/postgres.js'
export type { Bus, BusEvent, CommandBusEvent, DeviceDeletedEvent } from './bus/bus.js'

export { systemClock } from './clock.js'
export type { Clock, TimerHandle } from './clock.js'
export { manualClock } from './manual-clock.js'
export type { ManualClock } from './manual-clock.js'
export { TimerWheel } from './timer-wheel.js'
export type { TimerWheelOptions } from './timer-wheel.js'

export { signToken, deriveKey, Action } from './auth.js'
export type { ActionId, TokenClaims, SignTokenClaims, SignTokenOptions } from './auth.js'
export { formatTimestamp, parseTimestamp } from './timestamp.js'

export type {
  Command, Device, Json, Message, Reply, SuccessReply, ErrorReply, Push,
  AuthenticateMessage, CommandInsertMessage, CommandUpdateMessage, CommandGetMessage, CommandListMessage,
  CommandSubscribeMessage, CommandUnsubscribeMessage, SubscriptionListMessage,
  DeviceSaveMessage, DeviceGetMessage, DeviceDeleteMessage
} from './schema.js'
export type {
  ActionName, ReplyTo, SuccessReplyTo, ReplyPayloads, UncheckedMessage, InsertedCommand, ServerInfo,
  TokenRefreshMessage, TokenCreateMessage, ServerInfoMessage
} from './schema.js'
export type { SubscriptionListing } from './session.js'
