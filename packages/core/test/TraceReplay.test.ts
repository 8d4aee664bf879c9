import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter, LlmAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { Hash, Replay, Trace, TraceEvent } from "@rlm-runtime/trace"
import { Cause, Effect, Either, Exit, FastCheck as fc, Layer, Option } from "effect"
import { Rlm } from "../src/index.js"
import * as Random from "./utils/randomRuns.js"

const Js = JavascriptSandbox.layer()

/** Runs of the property; raise with RLM_PROP_RUNS for a longer search. */
const RUNS = Number(process.env.RLM_PROP_RUNS ?? 25)

const QUERY = "Answer the question."
const CONTEXT = "some context text ".repeat(20)

type RunExit = Exit.Exit<Rlm.RunResult<string>, unknown>

const outcomeOf = (exit: RunExit) => {
  if (Exit.isSuccess(exit)) {
    const { answer, source, steps, totals } = exit.value
    return { answer, source, steps, totals }
  }
  const failure = Cause.failureOption(exit.cause)
  if (failure._tag === "None") return { defect: Cause.pretty(exit.cause) }
  const { trace: _trace, ...rest } = failure.value as { trace?: unknown }
  return rest
}

const traceOf = (exit: RunExit): Trace.Trace => {
  if (Exit.isSuccess(exit)) return exit.value.trace
  const failure = Cause.failureOption(exit.cause)
  const trace = failure._tag === "Some" ? (failure.value as { trace?: Trace.Trace }).trace : undefined
  if (trace === undefined) throw new Error(`the run left no trace: ${Cause.pretty(exit.cause)}`)
  return trace
}

/** The trace without timings, its events grouped by run (the order within a run is the guarantee). */
const comparable = (trace: Trace.Trace) => {
  const json = Random.withoutTiming(JSON.parse(Trace.toJson(trace))) as { events: Array<{ runId: string }> }
  const byRun = new Map<string, Array<unknown>>()
  for (const event of json.events) byRun.set(event.runId, [...(byRun.get(event.runId) ?? []), event])
  return { ...json, events: Object.fromEntries([...byRun].sort(([a], [b]) => a.localeCompare(b))) }
}

/**
 * The calls a trace records: per run, its root steps in order, and per step
 * the sorted prompt hashes of its sub-calls (a batch's calls may complete in
 * any order).
 */
const callsOf = (trace: Trace.Trace) => {
  const out: Record<string, Array<string>> = {}
  for (const event of trace.events) {
    if (event._tag === "StepCompleted")
      out[event.runId] = [...(out[event.runId] ?? []), `root ${event.step} ${event.promptSha256}`]
  }
  const subs: Record<string, Array<string>> = {}
  for (const event of trace.events) {
    if (event._tag === "SubCall" && event.kind === "llm_query" && event.reply !== undefined) {
      const key = `${event.runId}#${event.parentStep}`
      subs[key] = [...(subs[key] ?? []), event.promptSha256]
    }
  }
  for (const list of Object.values(subs)) list.sort()
  return { roots: out, subs }
}

const record = (fake: FakeAdapter.Options, options: Rlm.RunOptions, query = QUERY) =>
  Effect.exit(Rlm.run(query, CONTEXT, options)).pipe(Effect.provide(Layer.merge(FakeAdapter.layer(fake), Js)))

/** Replay with the trace alone (no Fake adapter in context). */
const replay = (trace: Trace.Trace, options: Rlm.RunOptions, query = QUERY) =>
  Effect.gen(function* () {
    const replayer = yield* Replay.make(trace)
    const exit = yield* Effect.exit(Rlm.run(query, CONTEXT, options)).pipe(
      Effect.provideService(LlmAdapter.LlmAdapter, replayer.adapter),
      Effect.provide(Js)
    )
    return { exit, replayer }
  })

/** Replay through `Replay.layer(trace)` as a user would: the run, then `Replay.check`. */
const replayLayer = (trace: Trace.Trace, options: Rlm.RunOptions) =>
  Effect.gen(function* () {
    const exit = yield* Effect.exit(Rlm.run(QUERY, CONTEXT, options))
    const checked = yield* Effect.either(Replay.check)
    return { exit, checked }
  }).pipe(Effect.provide(Layer.merge(Replay.layer(trace), Js)))

/** The trace with the SubCall events of each step reordered (a deterministic shuffle from `seed`). */
const shuffleSubCalls = (trace: Trace.Trace, seed: number) => {
  const groups = new Map<string, Array<number>>()
  trace.events.forEach((e, i) => {
    if (e._tag !== "SubCall") return
    const key = `${e.runId}#${e.parentStep}`
    groups.set(key, [...(groups.get(key) ?? []), i])
  })
  const events = [...trace.events]
  let state = seed >>> 0
  const next = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    return state
  }
  for (const positions of groups.values()) {
    const picked = positions.map((i) => trace.events[i] as TraceEvent.TraceEvent)
    for (let i = picked.length - 1; i > 0; i--) {
      const j = next() % (i + 1)
      ;[picked[i], picked[j]] = [picked[j] as TraceEvent.TraceEvent, picked[i] as TraceEvent.TraceEvent]
    }
    positions.forEach((at, k) => {
      events[at] = picked[k] as TraceEvent.TraceEvent
    })
  }
  return Trace.make(events)
}

const assertSameRun = (original: RunExit, replayed: RunExit) => {
  assert.deepStrictEqual(outcomeOf(replayed), outcomeOf(original))
  assert.deepStrictEqual(comparable(traceOf(replayed)), comparable(traceOf(original)))
  assert.deepStrictEqual(callsOf(traceOf(replayed)), callsOf(traceOf(original)))
}

const tail = Array.from({ length: 120 }, (_, i) => `FINAL(tail ${i})`)
const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

const batchScript: FakeAdapter.Options = {
  script: [
    repl(
      "var rs = llm_query_batched(['k0 a', 'k1 b', 'k2 c', 'k0 d'])",
      "var kid = rlm_query('task: count the words')",
      "console.log(rs.join('|').length, kid)"
    ),
    "FINAL(three words)",
    repl("var more = llm_query('k1 again')"),
    "FINAL_VAR(more)"
  ],
  rules: [
    { match: "k0", reply: "zero" },
    { match: "k1", reply: "one ".repeat(30) },
    { match: "", reply: "other" }
  ]
}

describe("Replay.layer: a run replayed from its trace alone", () => {
  it.live.prop(
    "for random scripts and policies, the replay gives the same answer, calls and trace",
    // Concurrency 1, as in Replay.test.ts: which concurrent child meets a
    // shared budget limit first depends on the machine's scheduling.
    [
      Random.script({ rlmWeight: 2 }).map((s) => ({ ...s, catchAll: true })),
      Random.policy.map((p) => ({ ...p, concurrency: 1 }))
    ],
    ([script, policy]) =>
      Effect.gen(function* () {
        const rendered = Random.render(script)
        const original = yield* record({ ...rendered, script: [...rendered.script, ...tail] }, { policy })
        const { checked, exit } = yield* replayLayer(traceOf(original), { policy })
        assertSameRun(original, exit)
        // Every call was answered from the trace, and every recorded call was asked.
        assert.deepStrictEqual(checked, Either.right(undefined))
      }),
    { timeout: 300_000, fastCheck: { numRuns: RUNS } }
  )

  it.live.prop(
    "concurrent batches: sub-calls are matched by prompt hash whatever order the trace recorded them in",
    // No child runs and no budget limit: nothing races on a shared budget, so
    // the law holds at any concurrency.
    [
      Random.script({ rlmWeight: 0 }).map((s) => ({ ...s, catchAll: true })),
      fc.integer({ min: 2, max: 4 }),
      fc.integer({ min: 1, max: 5 }),
      fc.nat()
    ],
    ([script, concurrency, maxSteps, seed]) =>
      Effect.gen(function* () {
        const policy = { concurrency, maxSteps, maxDepth: 0 }
        const rendered = Random.render(script)
        const original = yield* record({ ...rendered, script: [...rendered.script, ...tail] }, { policy })
        const trace = shuffleSubCalls(traceOf(original), seed)
        const { exit, replayer } = yield* replay(trace, { policy })
        assert.deepStrictEqual(outcomeOf(exit), outcomeOf(original))
        assert.deepStrictEqual(callsOf(traceOf(exit)), callsOf(traceOf(original)))
        assert.isTrue(Option.isNone(yield* replayer.divergence))
        yield* replayer.check
      }),
    { timeout: 300_000, fastCheck: { numRuns: RUNS } }
  )

  it.live("concurrent batches and child runs replay with Replay.layer and check clean", () =>
    Effect.gen(function* () {
      const policy = { concurrency: 3, maxDepth: 1 }
      const original = yield* record(batchScript, { policy })
      assert.isTrue(Exit.isSuccess(original))
      const trace = traceOf(original)
      const replayed = yield* Effect.exit(
        Rlm.run(QUERY, CONTEXT, { policy }).pipe(Effect.tap(() => Replay.check))
      ).pipe(Effect.provide(Layer.merge(Replay.layer(trace), Js)))
      assertSameRun(original, replayed)
      if (Exit.isSuccess(replayed)) yield* Replay.checkAnswer(trace, replayed.value.answer)
    })
  )

  it.live("sub-calls of a batch are matched by prompt hash, not by the order they completed in", () =>
    Effect.gen(function* () {
      const policy = { concurrency: 4, maxDepth: 0 }
      const original = yield* record(batchScript, { policy })
      const trace = traceOf(original)
      // The batch's SubCall events recorded in reverse, as if the calls had completed last to first.
      const subs = trace.events.filter((e) => e._tag === "SubCall" && e.parentStep === 1 && e.runId === "run")
      const reversed = [...subs].reverse()
      let i = 0
      const shuffled = Trace.make(trace.events.map((e) => (subs.includes(e) ? (reversed[i++] as typeof e) : e)))
      assert.notDeepEqual(
        shuffled.events.map((e) => (e._tag === "SubCall" ? e.prompt : "")),
        trace.events.map((e) => (e._tag === "SubCall" ? e.prompt : ""))
      )
      const { exit, replayer } = yield* replay(shuffled, { policy })
      assert.deepStrictEqual(outcomeOf(exit), outcomeOf(original))
      assert.deepStrictEqual(callsOf(traceOf(exit)), callsOf(trace))
      yield* replayer.check
    })
  )

  it.live("the tools protocol replays: tool calls, finish reason and usage", () =>
    Effect.gen(function* () {
      const options: Rlm.RunOptions = { protocol: "tools" }
      const fake: FakeAdapter.Options = {
        script: [
          [{ name: "run_code", arguments: { code: "var r = llm_query('k0 hi'); console.log(r)" } }],
          [{ name: "final_answer", arguments: { answer: "done" } }]
        ],
        rules: [{ match: "", reply: "hello" }]
      }
      const original = yield* record(fake, options)
      assert.isTrue(Exit.isSuccess(original))
      const steps = traceOf(original).events.filter((e) => e._tag === "StepCompleted")
      assert.isTrue(steps.every((s) => s._tag === "StepCompleted" && (s.toolCalls?.length ?? 0) > 0))
      const { exit, replayer } = yield* replay(traceOf(original), options)
      assertSameRun(original, exit)
      yield* replayer.check
    })
  )

  it.live("a run that failed on a root call (the model failed) replays to the same failure, with no divergence", () =>
    Effect.gen(function* () {
      // One reply, then the script runs out: the second root call fails with ScriptExhausted.
      const fake: FakeAdapter.Options = {
        script: [repl("var a = llm_query('k0')")],
        rules: [{ match: "", reply: "x" }]
      }
      const original = yield* record(fake, {})
      assert.isTrue(Exit.isFailure(original))
      const { exit, replayer } = yield* replay(traceOf(original), {})
      assert.isTrue(Exit.isFailure(exit))
      const reasonOf = (e: RunExit) => {
        const o = outcomeOf(e) as { _tag?: string; reason?: string }
        return [o._tag, o.reason]
      }
      assert.deepStrictEqual(reasonOf(exit), reasonOf(original))
      assert.deepStrictEqual(reasonOf(exit), ["RunFailed", "Model"])
      assert.deepStrictEqual(callsOf(traceOf(exit)), callsOf(traceOf(original)))
      yield* replayer.check
    })
  )

  it.live("a reply changed but not its hash fails with TraceTampered before anything runs", () =>
    Effect.gen(function* () {
      const trace = traceOf(yield* record(batchScript, { policy: { maxDepth: 1 } }))
      const editSub = Trace.make(
        trace.events.map((e) =>
          e._tag === "SubCall" && e.reply === "zero" ? new TraceEvent.SubCall({ ...e, reply: "ZERO" }) : e
        )
      )
      const sub = yield* Effect.flip(Replay.make(editSub))
      assert.strictEqual(sub._tag, "TraceTampered")
      assert.strictEqual(sub.field, "SubCall.reply")
      assert.strictEqual(sub.runId, "run")
      const editRoot = Trace.make(
        trace.events.map((e) =>
          e._tag === "StepCompleted" && e.runId === "run" && e.step === 2
            ? new TraceEvent.StepCompleted({ ...e, reply: "FINAL(forged)" })
            : e
        )
      )
      const root = yield* Effect.flip(Layer.build(Replay.layer(editRoot)).pipe(Effect.scoped))
      assert.strictEqual(root._tag, "TraceTampered")
      assert.strictEqual(root.field, "StepCompleted.reply")
      assert.strictEqual(root.step, 2)
      assert.include(root.message, "changed after it was recorded")
    })
  )

  it.live("a changed query fails with ReplayDivergence naming the run, the step and where the text differs", () =>
    Effect.gen(function* () {
      const trace = traceOf(yield* record(batchScript, { policy: { maxDepth: 1 } }))
      const { exit, replayer } = yield* replay(trace, { policy: { maxDepth: 1 } }, "Answer another question.")
      assert.isTrue(Exit.isFailure(exit))
      const divergence = yield* Effect.flip(replayer.check)
      assert.strictEqual(divergence._tag, "ReplayDivergence")
      assert.strictEqual(divergence.reason, "PromptMismatch")
      assert.strictEqual(divergence.runId, "run")
      assert.strictEqual(divergence.step, 1)
      assert.strictEqual(divergence.role, "root")
      const step1 = trace.events.find((e) => e._tag === "StepCompleted" && e.runId === "run" && e.step === 1)
      assert.strictEqual(divergence.expectedSha256, step1?._tag === "StepCompleted" ? step1.promptSha256 : "")
      assert.notStrictEqual(divergence.actualSha256, divergence.expectedSha256)
      assert.include(divergence.excerpt ?? "", "the question differs")
      assert.include(divergence.excerpt ?? "", 'expected "Answer the question."')
      assert.include(divergence.excerpt ?? "", 'got "Answer another question.')
      assert.include(divergence.message, 'run "run", step 1')
    })
  )

  it.live(
    "a query that is a substring of the new first message (a single space) still reads as a changed question",
    () =>
      Effect.gen(function* () {
        const trace = traceOf(yield* record(batchScript, { policy: { maxDepth: 1 } }, " "))
        const { exit, replayer } = yield* replay(trace, { policy: { maxDepth: 1 } }, "Answer another question.")
        assert.isTrue(Exit.isFailure(exit))
        const divergence = yield* Effect.flip(replayer.check)
        assert.strictEqual(
          divergence._tag === "ReplayDivergence" ? divergence.reason : divergence._tag,
          "PromptMismatch"
        )
        assert.include(divergence.excerpt ?? "", "the question differs")
        assert.include(divergence.excerpt ?? "", 'got "Answer another question.')
      })
  )

  it.live(
    "a sub-call that failed replays with its recorded reason: the REPL shows the same error and the run matches",
    () =>
      Effect.gen(function* () {
        const replies = ["```repl\ntry { llm_query('boom') } catch (e) { print(String(e)) }\n```", "FINAL(done)"]
        let turn = 0
        const failing = LlmAdapter.make({
          model: () => "m",
          chat: (request) =>
            request.role === "root"
              ? Effect.succeed(
                  new LlmAdapter.ChatResponse({
                    text: replies[Math.min(turn++, replies.length - 1)] as string,
                    model: "m",
                    usage: new LlmAdapter.Usage({ inputTokens: 1, outputTokens: 1 })
                  })
                )
              : Effect.fail(new LlmAdapter.LlmError({ reason: "RateLimited", message: "slow down", status: 429 }))
        })
        const exit = yield* Effect.exit(Rlm.run(QUERY, CONTEXT, {})).pipe(
          Effect.provideService(LlmAdapter.LlmAdapter, failing),
          Effect.provide(Js)
        )
        const trace = traceOf(exit)
        const sub = trace.events.find((e) => e._tag === "SubCall")
        assert.strictEqual(sub?._tag === "SubCall" ? sub.errorReason : undefined, "RateLimited")
        // When it started, on the run's clock.
        const runStarted = trace.events.find((e) => e._tag === "RunStarted")
        assert.isAtLeast(
          sub?._tag === "SubCall" ? (sub.timestamp ?? -1) : -1,
          runStarted?._tag === "RunStarted" ? runStarted.timestamp : Number.POSITIVE_INFINITY
        )
        const output = trace.events.find((e) => e._tag === "StepCompleted")
        assert.include(output?._tag === "StepCompleted" ? (output.blocks[0]?.stdout ?? "") : "", "RateLimited")
        const replayed = yield* replay(trace, {})
        assert.isTrue(Exit.isSuccess(replayed.exit))
        assert.isTrue(Either.isRight(yield* Effect.either(replayed.replayer.check)))
      })
  )

  it.live("a changed sub-call prompt fails with ReplayDivergence and an excerpt of the prompts", () =>
    Effect.gen(function* () {
      const trace = traceOf(yield* record(batchScript, { policy: { maxDepth: 1 } }))
      // The same run, but the model code now asks 'k1 AGAIN': the trace holds 'k1 again'.
      const script = (batchScript.script ?? []).map((s) =>
        typeof s === "string" ? s.replace("k1 again", "k1 AGAIN") : s
      )
      const forged = Trace.make(
        trace.events.map((e) =>
          e._tag === "StepCompleted" && e.runId === "run" && e.step === 2
            ? new TraceEvent.StepCompleted({
                ...e,
                reply: script[2] as string,
                replySha256: Hash.sha256(script[2] as string)
              })
            : e
        )
      )
      const { replayer } = yield* replay(forged, { policy: { maxDepth: 1 } })
      const divergence = yield* Effect.flip(replayer.check)
      assert.strictEqual(divergence.reason, "PromptMismatch")
      assert.strictEqual(divergence.role, "sub")
      assert.strictEqual(divergence.runId, "run")
      assert.strictEqual(divergence.step, 2)
      assert.include(divergence.excerpt ?? "", "at character 3")
      assert.include(divergence.excerpt ?? "", '"k1 again"')
      assert.include(divergence.excerpt ?? "", '"k1 AGAIN"')
    })
  )
})
