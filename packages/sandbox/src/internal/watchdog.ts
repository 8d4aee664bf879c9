/**
 * The host's side of the time limit of one request to the Python child (a
 * block, or reading variables): a countdown that pauses while the interpreter
 * waits on the host. The child interrupts the request itself at the limit
 * (runtime/python-child.mjs); if it has not answered a grace period later,
 * the host kills it.
 */

/** Node's timers hold at most 2^31 - 1 ms, and fire at once beyond it. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** @internal */
export interface WatchdogOptions {
  /** The request's time limit. */
  readonly limitMs: number
  /** How long an interrupted request may take to stop before the kill. */
  readonly graceMs: number
  /** The request did not stop when interrupted: kill the interpreter. */
  readonly kill: () => void
}

/**
 * Started with `start`, ended with `stop` once the request has answered.
 *
 * A timer of a process that was not scheduled for a while (a loaded machine,
 * a stalled VM, a long synchronous callback) fires before the I/O that arrived
 * meanwhile is read, so the request's answer may already be waiting. The kill
 * therefore waits one turn of the event loop (`setImmediate`, which runs after
 * pending I/O), and a grace timer that fired late by more than half the grace
 * period gives the child one more grace period, measured while this process
 * was running too.
 *
 * @internal
 */
export class Watchdog {
  private remaining: number
  private startedAt: number | undefined
  private timer: ReturnType<typeof setTimeout> | undefined
  private immediate: ReturnType<typeof setImmediate> | undefined
  private paused = 0
  private extended = false
  private expired = false
  private done = false

  constructor(private readonly options: WatchdogOptions) {
    this.remaining = options.limitMs
  }

  /** Whether the limit has passed, by this process's clock (the child interrupts at its own). */
  get timedOut(): boolean {
    return this.expired
  }

  start(): void {
    if (this.done || this.expired) return
    this.startedAt = Date.now()
    // No limit (an infinite duration, or past what a timer can hold: ~24.8 days).
    if (!(this.remaining < MAX_TIMER_MS)) return
    this.timer = setTimeout(() => this.expire(), this.remaining)
  }

  /** The interpreter waits on the host: the time until `resume` does not count. Nests. */
  pause(): void {
    if (this.done || this.expired) return
    if (this.paused++ === 0 && this.startedAt !== undefined) {
      clearTimeout(this.timer)
      this.remaining -= Date.now() - this.startedAt
      this.startedAt = undefined
    }
  }

  resume(): void {
    if (this.done || this.expired) return
    if (--this.paused === 0) this.start()
  }

  /** The request answered: no interrupt, no kill from now on. Idempotent. */
  stop(): void {
    this.done = true
    clearTimeout(this.timer)
    if (this.immediate !== undefined) clearImmediate(this.immediate)
  }

  private expire(): void {
    if (this.done) return
    this.expired = true
    this.grace(this.options.graceMs)
  }

  private grace(ms: number): void {
    const due = Date.now() + ms
    this.timer = setTimeout(() => {
      if (this.done) return
      if (!this.extended && Date.now() - due > this.options.graceMs / 2) {
        this.extended = true
        return this.grace(this.options.graceMs)
      }
      this.immediate = setImmediate(() => {
        if (this.done) return
        this.stop()
        this.options.kill()
      })
    }, ms)
  }
}
