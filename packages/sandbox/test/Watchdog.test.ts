import { afterEach, assert, beforeEach, describe, it, vi } from "@effect/vitest"
import { Watchdog } from "../src/internal/watchdog.js"

const make = (limitMs: number, graceMs: number) => {
  const events: Array<string> = []
  const started = Date.now()
  const at = () => Date.now() - started
  const watchdog = new Watchdog({
    limitMs,
    graceMs,
    kill: () => events.push(`kill@${at()}`)
  })
  return { watchdog, events }
}

describe("Watchdog (the time limit of a Python request)", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 })
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it("the limit passes, then the grace period, then one kill", () => {
    const { watchdog, events } = make(400, 1000)
    watchdog.start()
    vi.advanceTimersByTime(399)
    assert.isFalse(watchdog.timedOut)
    vi.advanceTimersByTime(1)
    assert.isTrue(watchdog.timedOut)
    vi.advanceTimersByTime(999)
    assert.deepStrictEqual(events, [])
    vi.advanceTimersByTime(5000)
    // (the kill waits one turn of the event loop: a fake millisecond here)
    assert.deepStrictEqual(events, ["kill@1401"])
  })

  it("an answer before the kill stops everything", () => {
    const { watchdog, events } = make(400, 1000)
    watchdog.start()
    vi.advanceTimersByTime(1300)
    watchdog.stop()
    vi.advanceTimersByTime(10_000)
    assert.deepStrictEqual(events, [])
  })

  it("time while paused (waiting on the host) does not count; pauses nest", () => {
    const { watchdog, events } = make(400, 1000)
    watchdog.start()
    vi.advanceTimersByTime(300)
    watchdog.pause()
    watchdog.pause()
    vi.advanceTimersByTime(5000)
    watchdog.resume()
    vi.advanceTimersByTime(5000)
    assert.isFalse(watchdog.timedOut)
    watchdog.resume()
    vi.advanceTimersByTime(99)
    assert.isFalse(watchdog.timedOut)
    vi.advanceTimersByTime(1)
    assert.isTrue(watchdog.timedOut)
    vi.advanceTimersByTime(1001)
    assert.deepStrictEqual(events, ["kill@11401"])
  })

  it("a grace timer that fires late (this process stalled) gives the child one more grace period", () => {
    const { watchdog, events } = make(400, 1000)
    watchdog.start()
    vi.advanceTimersByTime(400)
    // The process is not scheduled for 3 s: the clock moves, every timer comes due late.
    vi.setSystemTime(Date.now() + 3000)
    vi.advanceTimersByTime(1000)
    assert.deepStrictEqual(events, [])
    // Not extended twice: the next grace period ends in the kill even if late again.
    vi.setSystemTime(Date.now() + 3000)
    vi.advanceTimersByTime(1001)
    assert.deepStrictEqual(events, ["kill@8401"])
  })

  it("the kill waits for pending I/O: an answer read in the same turn prevents it", () => {
    const { watchdog, events } = make(100, 200)
    watchdog.start()
    vi.advanceTimersByTime(100)
    // The grace timer is due at 300; an answer handled by a timer due at the same
    // time (standing in for I/O read after the timers) stops the watchdog first.
    setTimeout(() => watchdog.stop(), 200)
    vi.advanceTimersByTime(1000)
    assert.deepStrictEqual(events, [])
  })

  it("an infinite limit (or one past what a timer can hold) never fires", () => {
    for (const limit of [Number.POSITIVE_INFINITY, 2 ** 31, 30 * 24 * 3600 * 1000]) {
      const { watchdog, events } = make(limit, 1000)
      watchdog.start()
      vi.advanceTimersByTime(10_000)
      watchdog.pause()
      watchdog.resume()
      vi.advanceTimersByTime(10_000)
      assert.isFalse(watchdog.timedOut)
      assert.deepStrictEqual(events, [])
      watchdog.stop()
    }
  })
})
