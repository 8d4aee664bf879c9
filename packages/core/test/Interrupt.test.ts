import { readdirSync, readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter, LlmAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox, PythonSandbox, Sandbox } from "@rlm-runtime/sandbox"
import { Cause, Chunk, Clock, Duration, Effect, Exit, Fiber, Layer, Option, Ref, Supervisor, TestClock } from "effect"
import { Rlm } from "../src/index.js"
import { counted, type Sessions } from "./utils/countedSandbox.js"

const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

// ---------------------------------------------------------------------------
// instruments
// ---------------------------------------------------------------------------

/** Live REPL sessions, counted by a `Sandbox` wrapper: +1 when a session opens, -1 once it is closed. */

/**
 * Sub-calls whose prompt contains `match` first wait `delay` (the Clock's, so
 * `TestClock` drives it). `slowInFlight` counts those waiting or running,
 * `slowEnded` those that ended (answered, failed or interrupted).
 */
const slowWhen = (
  match: string,
  delay: Duration.DurationInput,
  slowInFlight: Ref.Ref<number>,
  slowEnded?: Ref.Ref<number>
) =>
  Layer.effect(
    LlmAdapter.LlmAdapter,
    Effect.map(LlmAdapter.LlmAdapter, (inner) =>
      LlmAdapter.make({
        model: inner.model,
        chat: (request) =>
          request.role === "sub" && request.messages.some((m) => m.content.includes(match))
            ? Effect.acquireUseRelease(
                Ref.update(slowInFlight, (n) => n + 1),
                () => Effect.zipRight(Effect.sleep(delay), inner.chat(request)),
                () =>
                  Ref.update(slowInFlight, (n) => n - 1).pipe(
                    Effect.zipRight(slowEnded ? Ref.update(slowEnded, (n) => n + 1) : Effect.void)
                  )
              )
            : inner.chat(request)
      })
    )
  )

/** Poll (in real time) until `check` holds; fail after `ms`. */
const waitUntil = <E, R>(check: Effect.Effect<boolean, E, R>, what: string, ms = 20_000) =>
  Effect.gen(function* () {
    const deadline = Date.now() + ms
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out waiting until ${what}`)
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 5)))
    }
  })

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

/** Child processes of this process, by pid (zombies excluded). */
const childProcesses = (): Array<number> => {
  const out: Array<number> = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      if (Number(ppid) === process.pid && state !== "Z") out.push(Number(entry))
    } catch {
      // the process went away
    }
  }
  return out
}

// ---------------------------------------------------------------------------
// interruption
// ---------------------------------------------------------------------------

/**
 * Fork a run under a fiber-tracking supervisor, wait until `ready`, check the
 * instruments see the work, interrupt, and check nothing is left.
 */
const interruptWhen = (options: {
  readonly policy: Rlm.RunOptions["policy"]
  readonly ready: (slowInFlight: number, sessions: Sessions) => boolean
  readonly sessions: Sessions
  readonly slowInFlight: Ref.Ref<number>
}) =>
  Effect.gen(function* () {
    const instrumentation = yield* FakeAdapter.FakeInstrumentation
    const supervisor = yield* Supervisor.track
    const fiber = yield* Effect.fork(
      Rlm.run("q", "ctx", { policy: options.policy }).pipe(Effect.supervised(supervisor))
    )
    yield* waitUntil(
      Effect.map(Ref.get(options.slowInFlight), (n) => options.ready(n, options.sessions)),
      "the calls are in flight"
    )
    const before = {
      slowInFlight: yield* Ref.get(options.slowInFlight),
      fibers: (yield* supervisor.value).length,
      sessions: options.sessions.open
    }
    yield* Fiber.interrupt(fiber)
    const after = {
      slowInFlight: yield* Ref.get(options.slowInFlight),
      stats: yield* instrumentation.stats,
      fibers: (yield* supervisor.value).filter((f) => f.unsafePoll() === null),
      sessions: options.sessions.open
    }
    return { before, after }
  })

/** A fake whose root calls answer at once and whose sub-calls containing "slow" take 10 minutes. */
const slowFake = (script: ReadonlyArray<string>, slowInFlight: Ref.Ref<number>, slowEnded?: Ref.Ref<number>) =>
  slowWhen("slow", Duration.minutes(10), slowInFlight, slowEnded).pipe(
    Layer.provideMerge(FakeAdapter.layerInstrumented({ script, rules: [{ match: "", reply: "late" }] }))
  )

describe("interruption leaves nothing running", () => {
  it.live("100 sub-calls in flight (llm_query_batched of 100): all are interrupted, the session is closed", () =>
    Effect.gen(function* () {
      const sessions: Sessions = { open: 0, opened: 0 }
      const slowInFlight = yield* Ref.make(0)
      const layer = Layer.merge(
        slowFake(
          [repl("var rs = llm_query_batched(Array.from({ length: 100 }, (_, i) => 'slow ' + i))")],
          slowInFlight
        ),
        counted(sessions, JavascriptSandbox.layer())
      )
      const { after, before } = yield* interruptWhen({
        policy: { concurrency: 100 },
        ready: (n) => n === 100,
        sessions,
        slowInFlight
      }).pipe(Effect.provide(layer))
      assert.strictEqual(before.slowInFlight, 100)
      assert.strictEqual(before.sessions, 1)
      // The supervisor sees the batch's fibers, so it would see any left behind.
      assert.isAtLeast(before.fibers, 100)
      assert.strictEqual(after.slowInFlight, 0)
      assert.strictEqual(after.stats.inFlight, 0)
      assert.strictEqual(after.stats.succeeded, 1, "only the root call answered")
      assert.strictEqual(after.sessions, 0)
      assert.deepStrictEqual(after.fibers, [])
    })
  )

  it.live("3 child RLMs (rlm_query_batched), each blocked in llm_query_batched: 100 calls in flight, 4 sessions", () =>
    Effect.gen(function* () {
      const sessions: Sessions = { open: 0, opened: 0 }
      const slowInFlight = yield* Ref.make(0)
      const childReply = repl("var rs = llm_query_batched(Array.from({ length: 40 }, (_, i) => 'slow ' + i))")
      const layer = Layer.merge(
        slowFake(
          // The root's reply, then each child's first reply.
          [repl("var kids = rlm_query_batched(['task a', 'task b', 'task c'])"), childReply, childReply, childReply],
          slowInFlight
        ),
        counted(sessions, JavascriptSandbox.layer())
      )
      const { after, before } = yield* interruptWhen({
        // 3 children hold level-0 permits; their 120 calls share the 100 permits of level 1.
        policy: { concurrency: 100, maxDepth: 1 },
        ready: (n, sessions) => n === 100 && sessions.open === 4,
        sessions,
        slowInFlight
      }).pipe(Effect.provide(layer))
      assert.strictEqual(before.slowInFlight, 100)
      assert.strictEqual(before.sessions, 4, "the root's session and 3 child sessions")
      assert.isAtLeast(before.fibers, 100)
      assert.strictEqual(after.slowInFlight, 0)
      assert.strictEqual(after.stats.inFlight, 0)
      assert.strictEqual(after.sessions, 0)
      assert.strictEqual(sessions.opened, 4)
      assert.deepStrictEqual(after.fibers, [])
    })
  )
})

// ---------------------------------------------------------------------------
// time limits (TestClock)
// ---------------------------------------------------------------------------

describe("time limits (TestClock)", () => {
  it.effect("a sub-call past callTimeoutMs becomes an error shown to the model, and the run goes on", () =>
    Effect.gen(function* () {
      const slowInFlight = yield* Ref.make(0)
      const slowEnded = yield* Ref.make(0)
      const layer = Layer.merge(
        slowFake(
          [
            repl(
              "var caught = 'none'",
              "try { llm_query('slow alone') } catch (e) { caught = String(e) }",
              "var rs = llm_query_batched(['slow in a batch', 'quick in a batch'])",
              "var out = JSON.stringify({ caught: caught, rs: rs })",
              "console.log(caught)"
            ),
            "FINAL_VAR(out)"
          ],
          slowInFlight,
          slowEnded
        ),
        JavascriptSandbox.layer()
      )
      const [exit, stats] = yield* Effect.gen(function* () {
        const fiber = yield* Effect.fork(Rlm.run("q", "ctx", { policy: { callTimeoutMs: 1_000 } }))
        // The lone llm_query, then the batch's slow prompt: each waits until the clock passes 1 s.
        for (let i = 0; i < 2; i++) {
          yield* waitUntil(
            Effect.map(Ref.get(slowInFlight), (n) => n === 1),
            `slow call ${i + 1} started`
          )
          // The call's timeout timer is registered by a fiber racing the call: give it a moment, then find
          // its deadline (the clock stood still since the call started, so it is at most 1 s from now).
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
          const now = yield* Clock.currentTimeMillis
          const deadline = Chunk.reduce(yield* TestClock.sleeps(), Number.POSITIVE_INFINITY, (min, t) =>
            t > now && t <= now + 1_000 ? Math.min(min, t) : min
          )
          assert.isTrue(Number.isFinite(deadline), "the call timeout is scheduled")
          yield* TestClock.adjust(deadline - 1 - now)
          assert.strictEqual(yield* Ref.get(slowEnded), i, "not yet timed out")
          yield* TestClock.adjust(2)
          yield* waitUntil(
            Effect.map(Ref.get(slowEnded), (n) => n === i + 1),
            `slow call ${i + 1} cancelled`
          )
        }
        const exit = yield* Fiber.await(fiber)
        return [exit, yield* (yield* FakeAdapter.FakeInstrumentation).stats] as const
      }).pipe(Effect.provide(layer))
      assert.isTrue(Exit.isSuccess(exit), `the run answered: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`)
      if (Exit.isSuccess(exit)) {
        const out = JSON.parse(exit.value.answer) as { caught: string; rs: Array<string> }
        assert.include(out.caught, "callTimeoutMs=1000")
        assert.match(out.rs[0] as string, /^Error: llm_query failed \(Timeout\)/)
        assert.strictEqual(out.rs[1], "late")
        const failed = exit.value.trace.events.filter((e) => e._tag === "SubCall" && e.error !== undefined)
        assert.strictEqual(failed.length, 2)
        assert.strictEqual(exit.value.steps, 2)
      }
      // The model was shown the error in its next turn.
      const second = stats.requests.filter((r) => r.role === "root")[1]
      assert.include(second?.messages.at(-1)?.content ?? "", "callTimeoutMs=1000")
    })
  )

  it.effect(
    "the wall-clock limit hits while 3 children run: BudgetExceeded timeoutMs, partial trace, nothing left open",
    () =>
      Effect.gen(function* () {
        const sessions: Sessions = { open: 0, opened: 0 }
        const slowInFlight = yield* Ref.make(0)
        const child = repl("var r = llm_query('slow child work')")
        const layer = Layer.merge(
          slowFake(
            [repl("var kids = rlm_query_batched(['task a', 'task b', 'task c'])"), child, child, child],
            slowInFlight
          ),
          counted(sessions, JavascriptSandbox.layer())
        )
        const exit = yield* Effect.gen(function* () {
          const fiber = yield* Effect.fork(
            Rlm.run("q", "ctx", { policy: { timeoutMs: 5_000, maxDepth: 1, concurrency: 4 } })
          )
          yield* waitUntil(
            Effect.map(Ref.get(slowInFlight), (n) => n === 3 && sessions.open === 4),
            "3 children are blocked in llm_query"
          )
          yield* TestClock.adjust("4999 millis")
          assert.isNull(fiber.unsafePoll(), "still running just before the limit")
          yield* TestClock.adjust("2 millis")
          return yield* Fiber.await(fiber)
        }).pipe(Effect.provide(layer))
        assert.strictEqual(sessions.open, 0, "every session closed")
        assert.strictEqual(sessions.opened, 4)
        assert.strictEqual(yield* Ref.get(slowInFlight), 0, "every sub-call interrupted")
        const e = failureOf(exit)
        assert.strictEqual(e?._tag, "BudgetExceeded")
        if (e?._tag !== "BudgetExceeded") return
        assert.strictEqual(e.limit, "timeoutMs")
        assert.strictEqual(e.value, 5_000)
        const events = e.trace?.events ?? []
        const runs = events.filter((ev) => ev._tag === "RunStarted")
        assert.strictEqual(runs.length, 4)
        for (const run of runs.filter((r) => r.parentRunId !== undefined)) {
          const finished = events.filter((ev) => ev._tag === "RunFinished" && ev.runId === run.runId)
          assert.strictEqual(finished.length, 1)
          assert.strictEqual(finished[0]?._tag === "RunFinished" ? finished[0].status : "", "interrupted")
          // The child's step whose reply was counted is in the trace, stopped half-way.
          const steps = events.filter((ev) => ev._tag === "StepCompleted" && ev.runId === run.runId)
          assert.strictEqual(steps.length, 1)
        }
        const rootFinished = events.filter((ev) => ev._tag === "RunFinished" && ev.runId === "run")
        assert.strictEqual(rootFinished.length, 1)
        assert.strictEqual(events.at(-1), rootFinished[0])
        assert.strictEqual(rootFinished[0]?._tag === "RunFinished" ? rootFinished[0].status : "", "budget_exceeded")
        // The usage the run reports is the sum of the calls in the partial trace.
        const sum = events.reduce(
          (n, ev) => n + (ev._tag === "StepCompleted" || ev._tag === "SubCall" ? (ev.usage.inputTokens ?? 0) : 0),
          0
        )
        assert.strictEqual(rootFinished[0]?._tag === "RunFinished" ? rootFinished[0].usage.inputTokens : -1, sum)
      })
  )
})

describe("interruption leaves nothing running (Python sandbox)", () => {
  it.live(
    "3 Python child RLMs blocked in llm_query_batched, 100 calls in flight: every interpreter process is killed with the run",
    () =>
      Effect.gen(function* () {
        const sessions: Sessions = { open: 0, opened: 0 }
        const slowInFlight = yield* Ref.make(0)
        const childReply = repl("rs = llm_query_batched(['slow %d' % i for i in range(40)])")
        const layer = Layer.merge(
          slowFake(
            [repl("kids = rlm_query_batched(['task a', 'task b', 'task c'])"), childReply, childReply, childReply],
            slowInFlight
          ),
          counted(sessions, PythonSandbox.layer({ memoryMb: 256 }))
        )
        const existing = new Set(childProcesses())
        const { after, before } = yield* Effect.gen(function* () {
          const supervisor = yield* Supervisor.track
          const fiber = yield* Effect.fork(
            Rlm.run("q", "ctx", { policy: { concurrency: 100, maxDepth: 1 } }).pipe(Effect.supervised(supervisor))
          )
          yield* waitUntil(
            Effect.map(Ref.get(slowInFlight), (n) => n === 100 && sessions.open === 4),
            "100 calls are in flight from 3 Python children",
            110_000
          )
          const before = {
            processes: childProcesses().filter((pid) => !existing.has(pid)),
            fibers: (yield* supervisor.value).length
          }
          yield* Fiber.interrupt(fiber)
          const interruptedAt = Date.now()
          const atReturn = childProcesses().filter((pid) => before.processes.includes(pid))
          // The session finalizer sends SIGKILL without waiting for the exit, so a process may take a few
          // milliseconds more to die: wait for that (bounded), and report how long it took.
          yield* waitUntil(
            Effect.sync(() => childProcesses().every((pid) => !before.processes.includes(pid))),
            "the interpreter processes are gone",
            2_000
          )
          const lagMs = Date.now() - interruptedAt
          console.log(
            `python interrupt: ${atReturn.length} process(es) still alive when the run returned; all gone after ${lagMs} ms`
          )
          const after = {
            processes: childProcesses().filter((pid) => !existing.has(pid)),
            fibers: (yield* supervisor.value).filter((f) => f.unsafePoll() === null),
            slowInFlight: yield* Ref.get(slowInFlight)
          }
          return { after, before }
        }).pipe(Effect.provide(layer))
        assert.isAtLeast(before.processes.length, 4, "one interpreter process per session")
        assert.isAtLeast(before.fibers, 100)
        assert.deepStrictEqual(after.processes, [], "no interpreter process outlives the run")
        assert.strictEqual(after.slowInFlight, 0)
        assert.strictEqual(sessions.open, 0)
        assert.deepStrictEqual(after.fibers, [])
      }),
    { timeout: 180_000 }
  )
})
