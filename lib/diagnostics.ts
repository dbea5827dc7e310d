import diagnosticsChannel from 'node:diagnostics_channel'

/**
 * The broker's `node:diagnostics_channel` channels, in the style of undici's: an APM tool or a
 * test subscribes by name (`diagnostics_channel.subscribe('command-broker:insert', fn)`) and
 * the broker needs no code change. Each message is built only while a channel has
 * subscribers, so an unobserved broker pays a property read per event.
 *
 * - `command-broker:insert` `{ command }`: a command committed, on the broker that wrote it.
 * - `command-broker:update` `{ command }`: a `command/update` committed, the command as it is after.
 * - `command-broker:expire` `{ command }`: a command expired before any update, on the broker that expired it.
 * - `command-broker:push` `{ push }`: a session push about to be handed to its `push` function.
 * - `command-broker:error` `{ error }`: what the broker reports on its `error` event.
 *
 * Messages are deeply frozen where they carry a command; a subscriber that throws is Node's
 * to report (diagnostics_channel rethrows it on a later turn), not the broker's.
 */
export const channels = Object.freeze({
  insert: diagnosticsChannel.channel('command-broker:insert'),
  update: diagnosticsChannel.channel('command-broker:update'),
  expire: diagnosticsChannel.channel('command-broker:expire'),
  push: diagnosticsChannel.channel('command-broker:push'),
  error: diagnosticsChannel.channel('command-broker:error')
})

/**
 * Whether the broker does its observability work: the channels above and the bookkeeping
 * behind `broker.stats()`'s `commits` (counts, batch sizes, and a `performance.now()` on
 * each side of every commit). Internal, for bench/observability.ts alone, and not exported
 * from the package: it gives that benchmark a baseline that really skips the work, to
 * compare an unobserved broker against. Default true. Footgun: it is process-wide, and
 * while it is false no channel hears anything and `stats().commits` stops counting.
 */
export let observing = true

/** Sets `observing`: internal, for bench/observability.ts (and its test) alone. */
export function setObserving (on: boolean): void {
  observing = on
}
