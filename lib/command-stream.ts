import { BrokerError } from './errors.js'
import { describe } from './options.js'
import type { Command } from './schema.js'
import { checkSignal } from './waiting.js'

/** Options of `broker.commands()`. */
export interface CommandStreamOptions {
  /** Aborting it ends the stream (as `return()` does). */
  signal?: AbortSignal | undefined
  /** Most commands held for a consumer that has not asked for them yet. Default 1000. */
  bufferSize?: number | undefined
  /**
   * What happens to a command that finds the buffer full. `'error'` (the default): the stream
   * stops listening, hands out what it holds, then throws `BrokerError` `ERR_OVERFLOW`, so a
   * consumer that fell behind knows it missed commands. `'drop-oldest'`: the oldest held
   * command is dropped for it, and `dropped` counts them.
   */
  overflow?: 'error' | 'drop-oldest' | undefined
}

const BUFFER_SIZE = 1000
const MAX_BUFFER_SIZE = 1_000_000

/**
 * Commands as an async iterable: what `broker.commands()` returns. Listens from its creation
 * until it ends (`return()`, `break` out of a `for await`, `await using`'s dispose, its
 * signal, an overflow, or the broker closing); commands that come while nobody is waiting
 * wait in a bounded buffer (see {@link CommandStreamOptions}). Each command is deeply frozen.
 */
export class CommandStream implements AsyncIterableIterator<Command> {
  /** Commands dropped by `overflow: 'drop-oldest'`. */
  dropped = 0
  readonly #size: number
  readonly #overflow: 'error' | 'drop-oldest'
  // Held commands are #buffer[#head..]; a consumer waits only while none are held.
  #buffer: Command[] = []
  #head = 0
  #waiting: ((result: IteratorResult<Command>) => void) | undefined
  #ended = false
  #error: BrokerError | undefined
  #stop: (() => void) | undefined
  readonly #signal: AbortSignal | undefined
  readonly #onEnd: (stream: CommandStream) => void
  readonly #onAbort = (): void => { this.#end(undefined) }

  /** @internal Use `broker.commands()`. */
  constructor (listen: (deliver: (command: Command) => void) => () => void, options: CommandStreamOptions, onEnd: (stream: CommandStream) => void) {
    const { signal, bufferSize = BUFFER_SIZE, overflow = 'error' } = options
    this.#size = bufferSize
    this.#overflow = overflow
    this.#signal = signal
    this.#onEnd = onEnd
    if (signal?.aborted === true) {
      this.#ended = true
      return
    }
    signal?.addEventListener('abort', this.#onAbort, { once: true })
    this.#stop = listen((command) => { this.#deliver(command) })
  }

  /** Whether it has stopped listening (it may still hand out what it holds). */
  get ended (): boolean {
    return this.#ended
  }

  next (): Promise<IteratorResult<Command>> {
    if (this.#head < this.#buffer.length) {
      const value = this.#buffer[this.#head++] as Command
      // Reclaim the array once drained, so the buffer never holds more than it must.
      if (this.#head === this.#buffer.length) {
        this.#buffer = []
        this.#head = 0
      }
      return Promise.resolve({ value, done: false })
    }
    if (this.#error !== undefined) {
      const error = this.#error
      this.#error = undefined
      return Promise.reject(error)
    }
    if (this.#ended) return Promise.resolve({ value: undefined, done: true })
    return new Promise((resolve) => { this.#waiting = resolve })
  }

  /** Ends the stream: it stops listening and drops what it holds. */
  return (): Promise<IteratorResult<Command>> {
    this.#end(undefined)
    this.#buffer = []
    this.#head = 0
    this.#error = undefined
    return Promise.resolve({ value: undefined, done: true })
  }

  [Symbol.asyncIterator] (): this {
    return this
  }

  /** For `await using`: ends the stream. */
  async [Symbol.asyncDispose] (): Promise<void> {
    await this.return()
  }

  /** @internal Ends the stream when its broker closes. */
  close (): void {
    this.#end(undefined)
  }

  #deliver (command: Command): void {
    const waiting = this.#waiting
    if (waiting !== undefined) {
      this.#waiting = undefined
      waiting({ value: command, done: false })
      return
    }
    if (this.#buffer.length - this.#head < this.#size) {
      this.#buffer.push(command)
      return
    }
    if (this.#overflow === 'drop-oldest') {
      this.#head++
      this.dropped++
      this.#buffer.push(command)
      // Dropped slots are reclaimed once they are as many as the held ones: amortised O(1).
      if (this.#head >= this.#size) {
        this.#buffer = this.#buffer.slice(this.#head)
        this.#head = 0
      }
      return
    }
    this.#end(new BrokerError('ERR_OVERFLOW', `broker.commands: the consumer fell more than ${this.#size} commands behind; the stream ended`))
  }

  // Stops listening; a consumer waiting gets the end now. An overflow error waits for the
  // consumer's next call after what is held: nobody waits while anything is held, and an
  // overflow needs a full buffer.
  #end (error: BrokerError | undefined): void {
    if (this.#ended) return
    this.#ended = true
    this.#stop?.()
    this.#signal?.removeEventListener('abort', this.#onAbort)
    this.#onEnd(this)
    this.#error = error
    const waiting = this.#waiting
    this.#waiting = undefined
    waiting?.({ value: undefined, done: true })
  }
}

/** Checks `broker.commands()`'s options; throws TypeError/RangeError naming the option. */
export function checkStreamOptions (options: unknown): CommandStreamOptions {
  if (typeof options !== 'object' || options === null) throw new TypeError(`broker.commands: options must be an object, received ${describe(options)}`)
  const { signal, bufferSize, overflow } = options as CommandStreamOptions
  checkSignal('broker.commands', signal)
  if (bufferSize !== undefined && (!Number.isSafeInteger(bufferSize) || bufferSize < 1 || bufferSize > MAX_BUFFER_SIZE)) {
    throw new RangeError(`broker.commands: options.bufferSize must be an integer from 1 to ${MAX_BUFFER_SIZE}, received ${describe(bufferSize)}`)
  }
  if (overflow !== undefined && overflow !== 'error' && overflow !== 'drop-oldest') {
    throw new RangeError(`broker.commands: options.overflow must be 'error' or 'drop-oldest', received ${describe(overflow)}`)
  }
  return options as CommandStreamOptions
}
