import { afterEach, assert, beforeEach, describe, it, vi } from "@effect/vitest"
import { Watchdog } from "../src/internal/watchdog.js"

const make = (limitMs: number, graceMs: number) => {
  const events: Array<string> = []
  const started = Date.now()
  const at = () => Date.now() - started
  const watchdog = new Watchdog({
    limitMs,
    graceMs,
    interrupt: () => events.push(`interrupt@${at()}`),
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

  it("interrupts at the limit, asks again every 250 ms, and kills once after the grace period", () => {
    const { watchdog, events } = make(400, 1000)
    watchdog.start()
    vi.advanceTimersByTime(399)
    assert.deepStrictEqual(events, [])
    assert.isFalse(watchdog.timedOut)
    vi.advanceTimersByTime(1)
    assert.deepStrictEqual(events, ["interrupt@400"])
    assert.isTrue(watchdog.timedOut)
    vi.advanceTimersByTime(5000)
    assert.deepStrictEqual(events, [
      "interrupt@400",
      "interrupt@650",
      "interrupt@900",
      "interrupt@1150",
      "interrupt@1400",
      // (the kill waits one turn of the event loop: a fake millisecond here)
      "kill@1401"
    ])
  })

  it("an answer before the kill stops everything", () => {
    const { watchdog, events } = make(400, 1000)
    watchdog.start()
    vi.advanceTimersByTime(700)
    watchdog.stop()
    vi.advanceTimersByTime(10_000)
    assert.deepStrictEqual(events, ["interrupt@400", "interrupt@650"])
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
    assert.deepStrictEqual(events, [])
    watchdog.resume()
    vi.advanceTimersByTime(99)
    assert.deepStrictEqual(events, [])
    vi.advanceTimersByTime(1)
    assert.deepStrictEqual(events, ["interrupt@10400"])
    watchdog.stop()
  })

  it("a grace timer that fires late (this process stalled) gives the child one more grace period", () => {
    const { watchdog, events } = make(400, 1000)
    watchdog.start()
    vi.advanceTimersByTime(400)
    // The process is not scheduled for 3 s: the clock moves, every timer comes due late.
    vi.setSystemTime(Date.now() + 3000)
    vi.advanceTimersByTime(1000)
    assert.notInclude(events.join(" "), "kill")
    // Not extended twice: the next grace period ends in the kill even if late again.
    vi.setSystemTime(Date.now() + 3000)
    vi.advanceTimersByTime(1001)
    assert.deepStrictEqual(
      events.filter((e) => e.startsWith("kill")),
      ["kill@8401"]
    )
  })

  it("the kill waits for pending I/O: an answer read in the same turn prevents it", () => {
    const { watchdog, events } = make(100, 200)
    watchdog.start()
    vi.advanceTimersByTime(100)
    // The grace timer is due at 300; an answer handled by a timer due at the same
    // time (standing in for I/O read after the timers) stops the watchdog first.
    setTimeout(() => watchdog.stop(), 200)
    vi.advanceTimersByTime(1000)
    assert.notInclude(events.join(" "), "kill")
  })
})
