// `command-broker/ws`: serves broker sessions over a `ws` WebSocketServer that the caller
// created and owns. The core never imports ws (it opens no socket of its own); this entry
// imports only ws's types, so `ws` is an optional peer dependency: needed by whoever calls
// attach(), by nobody else.
import type { IncomingMessage } from 'node:http'
import type { RawData, WebSocket, WebSocketServer } from 'ws'
import { Broker } from '../broker.js'
import { describe } from '../options.js'
import type { Session } from '../session.js'

/** What `onError` is told besides the error: the connection, and the HTTP request that opened it. */
export interface AttachErrorContext {
  socket: WebSocket
  request: IncomingMessage
}

export interface AttachOptions {
  /**
   * Most bytes a connection may have queued and unsent. A client that stops reading is
   * closed with 1008 (policy violation) and its session closed once one more message would
   * pass this; one message onto an empty queue always goes out, however large. Default 4 MiB.
   */
  maxBufferedBytes?: number
  /**
   * How long `close()` waits, in ms, for a client to answer its 1001 close frame before
   * cutting the connection off. Default 1000.
   */
  closeGraceMs?: number
  /**
   * Told of what ended or refused a connection: a socket error (ws then closes the connection
   * itself: 1009 for a frame over `maxPayload`, 1007 for a text frame that is not UTF-8, 1002
   * for a protocol error), a client that stopped reading (`code` `ERR_NOT_READING`, closed with
   * 1008), or a session the broker refused (a `BrokerError`, closed with 1011). Must not throw.
   * Default: `process.emitWarning(error)`.
   */
  onError?: (error: Error, context: AttachErrorContext) => void
}

/** What `attach()` returns. */
export interface Attachment {
  /** Connections open now (closing ones included). */
  readonly connections: number
  /**
   * Shuts the connections down: frames that arrive from now on are not served; each
   * connection's requests under way get their replies, then a close frame with 1001 (going
   * away); a client that has not closed within `closeGraceMs` is cut off. A connection made
   * after this gets 1001 at once. Resolves once every connection has ended. Leaves the server
   * and the broker open: close the server first (to stop accepting), the broker after.
   * Idempotent.
   */
  close: () => Promise<void>
}

const OPTIONS: readonly string[] = ['maxBufferedBytes', 'closeGraceMs', 'onError']

/**
 * Serves every connection `wss` accepts from now on with a session of `broker`: its frames
 * (text, or binary read as UTF-8) go to `session.handle()`, each reply is sent as soon as it
 * resolves (so a subscription's reply precedes its pushes), and pushes follow. The session
 * closes with its connection. Give `wss` a `maxPayload` of the broker's `maxFrameBytes`
 * (default 1 MiB; ws's own default is 100 MiB). Throws `TypeError`/`RangeError` naming a
 * bad argument or option.
 */
export function attach (wss: WebSocketServer, broker: Broker, options: AttachOptions = {}): Attachment {
  if (wss === null || typeof wss !== 'object' || typeof (wss as Partial<WebSocketServer>).on !== 'function') {
    throw new TypeError(`attach: wss must be a ws WebSocketServer, received ${describe(wss)}`)
  }
  if (!(broker instanceof Broker)) throw new TypeError(`attach: broker must be a Broker, received ${describe(broker)}`)
  if (options === null || typeof options !== 'object') throw new TypeError(`attach: options must be an object, received ${describe(options)}`)
  for (const name of Object.keys(options)) {
    if (!OPTIONS.includes(name)) throw new TypeError(`attach: unknown option ${name}; expected one of ${OPTIONS.join(', ')}`)
  }
  const maxBufferedBytes = integer(options.maxBufferedBytes, 'maxBufferedBytes', 4 * 1024 * 1024, 1, Number.MAX_SAFE_INTEGER)
  const closeGraceMs = integer(options.closeGraceMs, 'closeGraceMs', 1000, 0, 2 ** 31 - 1)
  const onError = options.onError ?? ((error: Error) => { process.emitWarning(error) })
  if (typeof onError !== 'function') throw new TypeError(`attach: options.onError must be a function, received ${describe(onError)}`)

  // Each open connection, with what sends it 1001 once its requests under way are answered.
  const open = new Map<WebSocket, () => void>()
  let closing: Promise<void> | undefined
  let ended: (() => void) | undefined

  const goAway = (socket: WebSocket, after: Promise<void>): void => {
    void after.then(() => { socket.close(1001, 'server shutting down') })
    const cutOff = setTimeout(() => { socket.terminate() }, closeGraceMs).unref()
    socket.once('close', () => { clearTimeout(cutOff) })
  }

  wss.on('connection', (socket: WebSocket, request: IncomingMessage) => {
    // ws emits 'error' and then closes the connection itself (1009, 1007, 1002): without a
    // listener, the error would be thrown and take the process down.
    socket.on('error', (error) => { onError(error, { socket, request }) })
    open.set(socket, () => { goAway(socket, Promise.resolve()) })
    socket.once('close', () => {
      open.delete(socket)
      if (open.size === 0) ended?.()
    })
    if (closing !== undefined) {
      goAway(socket, Promise.resolve())
      return
    }
    let session: Session
    try {
      session = broker.session(send)
    } catch (error) {
      onError(error as Error, { socket, request })
      socket.close(1011, 'no session')
      return
    }
    // The reply of the last request: replies resolve in request order, so once it is out,
    // every reply of the connection is.
    let last = Promise.resolve()
    function send (message: object): void {
      if (socket.readyState !== socket.OPEN) return
      const text = JSON.stringify(message)
      // A client that stops reading would make unsent output pile up in this process without end.
      if (socket.bufferedAmount > 0 && socket.bufferedAmount + Buffer.byteLength(text) > maxBufferedBytes) {
        const error = Object.assign(new Error(`the client is not reading: ${socket.bufferedAmount} bytes unsent`),
          { code: 'ERR_NOT_READING', bufferedAmount: socket.bufferedAmount })
        session.close()
        socket.close(1008, 'not reading')
        onError(error, { socket, request })
        return
      }
      socket.send(text)
    }
    socket.on('message', (data: RawData) => {
      if (closing !== undefined) return
      last = session.handle(text(data)).then(send)
    })
    socket.once('close', () => { session.close() })
    open.set(socket, () => { goAway(socket, last) })
  })

  return {
    get connections () {
      return open.size
    },
    close () {
      closing ??= new Promise((resolve) => {
        ended = resolve
        for (const away of open.values()) away()
        if (open.size === 0) resolve()
      })
      return closing
    }
  }
}

/** A frame's bytes as text, whatever the socket's binaryType. */
function text (data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8')
  return (Buffer.isBuffer(data) ? data : Buffer.from(data)).toString('utf8')
}

function integer (value: unknown, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number') throw new TypeError(`attach: options.${name} must be an integer, received ${describe(value)}`)
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`attach: options.${name} must be an integer from ${min} to ${max}, received ${describe(value)}`)
  }
  return value
}
