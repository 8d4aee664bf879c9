import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { TraceRecorder } from "@rlm-runtime/trace"
import { Cause, Chunk, Effect, Exit, Layer, Option, Schema, Stream } from "effect"
import { Rlm, RlmError, RunEvent } from "../src/index.js"
import * as Random from "./utils/randomRuns.js"

const Js = JavascriptSandbox.layer()

const RUNS = Number(process.env.RLM_PROP_RUNS ?? 40)

const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

/** Collect a run's stream: every event it emitted, and how it ended. */
const collect = (query: string, context: string, options: Rlm.RunOptions = {}) =>
  Effect.gen(function* () {
    const events: Array<RunEvent.RunEvent> = []
    const exit = yield* Effect.exit(
      Stream.runForEach(Rlm.stream(query, context, options), (e) => Effect.sync(() => events.push(e)))
    )
    return { events, exit }
  })

const runIdOf = (e: RunEvent.RunEvent): string | undefined => ("runId" in e ? e.runId : undefined)

/** The step an event belongs to, in its run. */
const stepOf = (e: RunEvent.RunEvent): number | undefined => {
  switch (e._tag) {
    case "StepCompleted":
    case "ModelCallStarted":
    case "BlockStarted":
    case "BlockFinished":
    case "FinalAnswer":
      return e.step
    case "SubCall":
      return e.parentStep
    default:
      return undefined
  }
}

/**
 * The ordering guarantees of `RunEvent`, checked on one stream:
 * per run RunStarted first and RunFinished last, steps in order, a step's events between the previous
 * step's StepCompleted and its own, a child inside the step of its parent that started it and finished
 * before that step's SubCall, FinalAnswer after its step, Answered last.
 */
const checkOrder = (events: ReadonlyArray<RunEvent.RunEvent>, answered: boolean) => {
  const byRun = new Map<string, Array<number>>()
  events.forEach((e, i) => {
    const id = runIdOf(e)
    if (id !== undefined) byRun.set(id, [...(byRun.get(id) ?? []), i])
  })
  assert.isTrue(byRun.has("run"))
  const stepIndex = new Map<string, number>()
  for (const [id, indices] of byRun) {
    const own = indices.map((i) => events[i] as RunEvent.RunEvent)
    assert.strictEqual(own[0]?._tag, "RunStarted", `${id}: RunStarted first`)
    assert.strictEqual(own.at(-1)?._tag, "RunFinished", `${id}: RunFinished last`)
    assert.strictEqual(own.filter((e) => e._tag === "RunStarted").length, 1)
    assert.strictEqual(own.filter((e) => e._tag === "RunFinished").length, 1)
    const steps = own.filter((e) => e._tag === "StepCompleted")
    // Strictly increasing (a step whose root call the budget refused has no StepCompleted: the "answer now"
    // step granted after it takes the next number).
    steps.forEach((s, k) => {
      if (k > 0) assert.isAbove(s.step, steps[k - 1]?.step ?? 0, `${id}: steps in order`)
    })
    indices.forEach((i) => {
      const e = events[i] as RunEvent.RunEvent
      if (e._tag === "StepCompleted") stepIndex.set(`${id}#${e.step}`, i)
    })
    // Every event of step s lies after StepCompleted(s - 1) and up to StepCompleted(s).
    for (const i of indices) {
      const e = events[i] as RunEvent.RunEvent
      const s = stepOf(e)
      if (s === undefined || e._tag === "FinalAnswer") continue
      const before = stepIndex.get(`${id}#${s - 1}`)
      const own = stepIndex.get(`${id}#${s}`)
      if (before !== undefined) assert.isAbove(i, before, `${id}: ${e._tag} of step ${s} after step ${s - 1}`)
      if (own !== undefined) assert.isAtMost(i, own, `${id}: ${e._tag} of step ${s} before its StepCompleted`)
    }
    // FinalAnswer right after its step's StepCompleted (among the run's own events).
    own.forEach((e, k) => {
      if (e._tag === "FinalAnswer") {
        const prev = own[k - 1]
        assert.strictEqual(prev?._tag === "StepCompleted" && prev.step, e.step, `${id}: FinalAnswer after its step`)
      }
    })
    // Each completed step's blocks each started and finished; its root call started before it.
    for (const s of steps) {
      const finished = own.filter((e) => e._tag === "BlockFinished" && e.step === s.step)
      const started = own.filter((e) => e._tag === "BlockStarted" && e.step === s.step)
      assert.strictEqual(finished.length, s.blocks.length, `${id}: BlockFinished per block of step ${s.step}`)
      // Blocks start in order; a step stopped half-way (interrupted) may have started one more than it recorded.
      assert.deepStrictEqual(
        started.map((b) => (b._tag === "BlockStarted" ? b.index : -1)),
        [...started.keys()]
      )
      assert.oneOf(started.length - s.blocks.length, [0, 1])
      assert.isAtLeast(
        own.filter((e) => e._tag === "ModelCallStarted" && e.role === "root" && e.step === s.step).length,
        1,
        `${id}: the root call of step ${s.step} started`
      )
    }
  }
  // A child lies inside the step of its parent that started it, and ends before that step's SubCall.
  for (const [id, indices] of byRun) {
    const started = events[indices[0] as number]
    if (started?._tag !== "RunStarted" || started.parentRunId === undefined) continue
    const parent = started.parentRunId
    const s = started.parentStep as number
    const before = stepIndex.get(`${parent}#${s - 1}`)
    const after = stepIndex.get(`${parent}#${s}`)
    if (before !== undefined) assert.isAbove(indices[0] as number, before, `${id} after its parent's step ${s - 1}`)
    const last = indices.at(-1) as number
    if (after !== undefined) assert.isBelow(last, after, `${id} ends before its parent's step ${s}`)
    const call = events.findIndex((e) => e._tag === "SubCall" && e.childRunId === id)
    if (call !== -1) assert.isBelow(last, call, `${id} ends before its SubCall`)
  }
  const answeredAt = events.findIndex((e) => e._tag === "Answered")
  if (answered) assert.strictEqual(answeredAt, events.length - 1, "Answered last")
  else assert.strictEqual(answeredAt, -1)
}

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

describe("Rlm.stream", () => {
  it.live.prop(
    "the ordering guarantees hold over random scripts and policies (answered or failed); the error carries the stream's trace",
    [Random.script({ rlmWeight: 4 }), Random.policy, Random.script({ rlmWeight: 2, endsWithFinal: true })],
    ([script, policy, extra]) =>
      Effect.gen(function* () {
        const joined: Random.Script = { ...script, replies: [...script.replies, ...extra.replies] }
        const { events, exit } = yield* collect("q", "ctx", { policy }).pipe(
          Effect.provide(Layer.merge(FakeAdapter.layer({ ...Random.render(joined), latencyMs: 1 }), Js)),
          // A run that does not end is a failure of its own, with its counterexample.
          Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("the run did not end in 20 s") }),
          Effect.orDie
        )
        checkOrder(events, Exit.isSuccess(exit))
        const traced = events.filter(RunEvent.isTraceEvent)
        if (Exit.isFailure(exit)) {
          const e = failureOf(exit)
          assert.isDefined(e, `a typed error: ${Cause.pretty(exit.cause)}`)
          assert.deepStrictEqual(e?.trace?.events, traced, "the error's trace is the stream's trace events")
        }
      }),
    { timeout: 120_000, fastCheck: { numRuns: RUNS } }
  )

  it.live("Rlm.run is the stream folded: the same trace, and a TraceRecorder receives every trace event in order", () =>
    Effect.gen(function* () {
      const script = [
        repl("var a = llm_query('k0 one')", "var kids = rlm_query_batched(['x', 'y'])"),
        "FINAL(c1)",
        "FINAL(c2)",
        "FINAL(done)"
      ]
      const layer = Layer.merge(FakeAdapter.layer({ script, rules: [{ match: "", reply: "sub" }] }), Js)
      const { events, exit } = yield* collect("q", "ctx").pipe(Effect.provide(layer))
      assert.isTrue(Exit.isSuccess(exit))
      const last = events.at(-1)
      assert.strictEqual(last?._tag, "Answered")
      const [result, recorded] = yield* Effect.gen(function* () {
        const result = yield* Rlm.run("q", "ctx")
        return [result, yield* TraceRecorder.events] as const
      }).pipe(Effect.provide(Layer.merge(layer, TraceRecorder.layerMemory)))
      assert.deepStrictEqual(recorded, result.trace.events)
      assert.strictEqual(result.answer, last?._tag === "Answered" ? last.answer : "")
      assert.strictEqual(result.steps, last?._tag === "Answered" ? last.steps : -1)
      // Two runs: their concurrent children interleave as their interpreters
      // answer, so the same trace is the same events of each run, in order.
      const byRun = (list: ReadonlyArray<{ readonly _tag: string; readonly runId: string }>) => {
        const out: Record<string, Array<string>> = {}
        for (const e of list) out[e.runId] = [...(out[e.runId] ?? []), e._tag]
        return out
      }
      assert.deepStrictEqual(byRun(result.trace.events), byRun(events.filter(RunEvent.isTraceEvent)))
      assert.deepStrictEqual(result.totals, last?._tag === "Answered" ? last.totals : undefined)
    })
  )

  it.live("concurrent child runs interleave: every child starts before the first one finishes", () =>
    Effect.gen(function* () {
      const child = repl("var r = llm_query('work')")
      const script = [
        repl("var kids = rlm_query_batched(['a', 'b', 'c'])"),
        child,
        child,
        child,
        "FINAL(1)",
        "FINAL(2)",
        "FINAL(3)",
        "FINAL(done)"
      ]
      const { events, exit } = yield* collect("q", "ctx", { policy: { concurrency: 4 } }).pipe(
        Effect.provide(
          Layer.merge(FakeAdapter.layer({ script, rules: [{ match: "", reply: "w" }], latencyMs: 20 }), Js)
        )
      )
      assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
      checkOrder(events, true)
      const childStarts = events.flatMap((e, i) => (e._tag === "RunStarted" && e.parentRunId === "run" ? [i] : []))
      const childEnds = events.flatMap((e, i) => (e._tag === "RunFinished" && e.runId !== "run" ? [i] : []))
      assert.strictEqual(childStarts.length, 3)
      assert.isBelow(Math.max(...childStarts), Math.min(...childEnds))
    })
  )

  it.live("a failed run ends the stream with its typed error after RunFinished, and no Answered", () =>
    Effect.gen(function* () {
      const { events, exit } = yield* collect("q", "ctx", { policy: { maxSubCalls: 0 } }).pipe(
        Effect.provide(Layer.merge(FakeAdapter.layer({ script: [repl("var a = llm_query('k0')"), "FINAL(x)"] }), Js))
      )
      const e = failureOf(exit)
      assert.strictEqual(e?._tag, "BudgetExceeded")
      assert.strictEqual(events.at(-1)?._tag, "RunFinished")
      checkOrder(events, false)
      // The error serializes with its partial trace (a Schema.TaggedError) and reads back equal.
      if (e?._tag !== "BudgetExceeded") return
      const json = JSON.stringify(Schema.encodeSync(RlmError.BudgetExceeded)(e))
      const back = Schema.decodeUnknownSync(RlmError.BudgetExceeded)(JSON.parse(json))
      assert.instanceOf(back, RlmError.BudgetExceeded)
      assert.deepStrictEqual(back.trace?.events, e.trace?.events)
      assert.deepStrictEqual([back.limit, back.value, back.used, back.message], [e.limit, e.value, e.used, e.message])
      assert.deepStrictEqual(back.partialAnswer, e.partialAnswer)
    })
  )

  it.live(
    "a child interrupted because its batch hit a budget limit finishes before its parent (RunFinished interrupted)",
    () =>
      Effect.gen(function* () {
        // maxSubCalls 1: the first child starts, the second is refused, and the batch interrupts the first.
        const script = [repl("var kids = rlm_query_batched(['a', 'b', 'c'])"), repl("var x = 1"), "FINAL(never)"]
        for (let i = 0; i < 10; i++) {
          const { events, exit } = yield* collect("q", "ctx", { policy: { maxSubCalls: 1, concurrency: 2 } }).pipe(
            Effect.provide(Layer.merge(FakeAdapter.layer({ script, latencyMs: 1 }), Js))
          )
          assert.strictEqual(failureOf(exit)?._tag, "BudgetExceeded")
          checkOrder(events, false)
          const child = events.find((e) => e._tag === "RunFinished" && e.runId !== "run")
          assert.strictEqual(child?._tag === "RunFinished" && child.status, "interrupted")
        }
      })
  )

  it.live("stopping the stream early stops the run", () =>
    Effect.gen(function* () {
      const forever = Array.from({ length: 50 }, () => repl("var a = 1"))
      const taken = yield* Rlm.stream("q", "ctx", { policy: { maxSteps: 50, maxConsecutiveErrors: 50 } }).pipe(
        Stream.takeUntil((e) => e._tag === "StepCompleted"),
        Stream.runCollect,
        Effect.provide(Layer.merge(FakeAdapter.layer({ script: forever }), Js))
      )
      const events = Chunk.toReadonlyArray(taken)
      assert.strictEqual(events[0]?._tag, "RunStarted")
      assert.strictEqual(events.at(-1)?._tag, "StepCompleted")
    })
  )
})
