import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import type { Trace } from "@rlm-runtime/trace"
import { Cause, Effect, Exit, FastCheck as fc, Layer } from "effect"
import { Budget, Policy, Rlm } from "../src/index.js"
import * as Random from "./utils/randomRuns.js"

const Js = JavascriptSandbox.layer()

/** Run a random script under a random policy; return how it ended and what the fake saw. */
const runOnce = (script: Random.Script, input: Random.PolicyInput) =>
  Effect.gen(function* () {
    const exit = yield* Effect.exit(Rlm.run("Answer the question.", "some context text ".repeat(20), { policy: input }))
    const stats = yield* (yield* FakeAdapter.FakeInstrumentation).stats
    return { exit, stats }
  }).pipe(Effect.provide(Layer.merge(FakeAdapter.layerInstrumented(Random.render(script)), Js)))

const EPSILON = 1e-12
/** Runs per property; raise with RLM_PROP_RUNS for a longer search. */
const RUNS = Number(process.env.RLM_PROP_RUNS ?? 120)

/** Every law of a run's budget, for a run that answered or failed. */
const checkLaws = (
  policy: Policy.Policy,
  exit: Exit.Exit<Rlm.RunResult<string>, unknown>,
  stats: FakeAdapter.Stats
) => {
  let trace: Trace.Trace
  if (Exit.isSuccess(exit)) trace = exit.value.trace
  else {
    const failure = Cause.failureOption(exit.cause)
    assert.isTrue(failure._tag === "Some", `the run ended without a typed error: ${Cause.pretty(exit.cause)}`)
    const e = (failure as { value: { _tag: string; trace?: Trace.Trace } }).value
    assert.oneOf(e._tag, ["BudgetExceeded", "RunFailed"])
    assert.isDefined(e.trace, "the error carries the partial trace")
    trace = e.trace as Trace.Trace
  }
  const events = trace.events
  const runs = events.filter((e) => e._tag === "RunStarted")
  const children = runs.filter((r) => r.parentRunId !== undefined)

  // Sub-calls: llm_query calls the model saw plus child RLMs started.
  assert.isAtMost(stats.calls.sub + children.length, policy.maxSubCalls, "maxSubCalls (model side)")

  // Every call the model answered is in the trace, with its usage. With a per-call timeout, a reply that
  // arrives in the instant the timeout fires is cancelled by the run (and counted nowhere), so the fake may
  // have counted more answers than the run received.
  const calls = Random.callsOf(trace)
  if (policy.callTimeoutMs === undefined) {
    assert.strictEqual(calls.length, stats.succeeded, "answered calls recorded in the trace")
  } else {
    assert.isAtMost(calls.length, stats.succeeded, "answered calls recorded in the trace")
  }

  // Tokens, from the trace; the one "answer now" call is granted outside the budget.
  const sum = Random.usageSum(trace)
  const granted = calls.filter((c) => c.outsideBudget)
  assert.isAtMost(granted.length, policy.onBudgetExceeded === "answer-now" ? 1 : 0)
  const budgeted = {
    input: sum.input - granted.reduce((n, c) => n + (c.usage.inputTokens ?? 0), 0),
    output: sum.output - granted.reduce((n, c) => n + (c.usage.outputTokens ?? 0), 0),
    total: sum.total - granted.reduce((n, c) => n + (c.usage.totalTokens ?? 0), 0)
  }
  if (policy.maxInputTokens !== undefined) assert.isAtMost(budgeted.input, policy.maxInputTokens, "maxInputTokens")
  if (policy.maxOutputTokens !== undefined) {
    assert.isAtMost(budgeted.output, policy.maxOutputTokens, "maxOutputTokens")
  }
  if (policy.maxTotalTokens !== undefined) assert.isAtMost(budgeted.total, policy.maxTotalTokens, "maxTotalTokens")

  // Cost, from the trace and the price table.
  if (policy.maxCostUsd !== undefined) {
    const cost = calls
      .filter((c) => !c.outsideBudget)
      .reduce(
        (acc, c) => acc + (Budget.costOf(policy, c.model, c.usage.inputTokens ?? 0, c.usage.outputTokens ?? 0) ?? 0),
        0
      )
    assert.isAtMost(cost, policy.maxCostUsd + EPSILON, "maxCostUsd")
  }

  // Steps and depth, per run.
  for (const run of runs) {
    const steps = events.filter((e) => e._tag === "StepCompleted" && e.runId === run.runId)
    // maxSteps iterations, then one "answer now" call (the out-of-steps one, or the one granted on a budget hit).
    assert.isAtMost(steps.length, policy.maxSteps + 1, `maxSteps of ${run.runId}`)
    assert.isAtMost(run.depth, policy.maxDepth, "maxDepth")
  }

  // Concurrency: `concurrency` calls per depth level.
  assert.isAtMost(stats.maxInFlight, policy.concurrency * (policy.maxDepth + 1), "in flight, all levels")
  if (policy.maxDepth === 0) assert.isAtMost(stats.maxInFlight, policy.concurrency, "in flight, one level")
  assert.strictEqual(stats.inFlight, 0, "no call left in flight")

  // Reported usage = the sum of the calls in the trace.
  const rootFinished = events.filter((e) => e._tag === "RunFinished" && e.runId === "run")
  assert.strictEqual(rootFinished.length, 1)
  const finished = rootFinished[0]
  if (finished?._tag === "RunFinished") {
    assert.strictEqual(finished.usage.inputTokens ?? 0, sum.input, "RunFinished input = trace sum")
    assert.strictEqual(finished.usage.outputTokens ?? 0, sum.output, "RunFinished output = trace sum")
    assert.strictEqual(finished.usage.totalTokens ?? 0, sum.total, "RunFinished total = trace sum")
  }
  if (Exit.isSuccess(exit)) {
    const totals = exit.value.totals
    assert.strictEqual(totals.inputTokens, sum.input, "totals input = trace sum")
    assert.strictEqual(totals.outputTokens, sum.output, "totals output = trace sum")
    assert.strictEqual(totals.totalTokens, sum.total, "totals total = trace sum")
    assert.isAtMost(totals.subCalls, policy.maxSubCalls)
    assert.strictEqual(totals.subCalls, stats.calls.sub + children.length)
    assert.strictEqual(totals.rootCalls, stats.calls.root)
    if (policy.maxCostUsd !== undefined && granted.length === 0) {
      assert.isAtMost(totals.costUsd, policy.maxCostUsd + EPSILON)
    }
  }
  seen.runs++
  seen.children += children.length
  seen.subCalls += stats.calls.sub
  seen.maxInFlight = Math.max(seen.maxInFlight, stats.maxInFlight)
  if (stats.maxInFlight > policy.concurrency) seen.pastOneLevel++
  if (Exit.isSuccess(exit)) return "answered"
  const e = (Cause.failureOption(exit.cause) as { value: { _tag: string; limit?: string; reason?: string } }).value
  return `${e._tag}:${e.limit ?? e.reason}`
}

const outcomes = new Map<string, number>()
/** What the random runs exercised, printed for the report. */
const seen = { runs: 0, children: 0, subCalls: 0, maxInFlight: 0, pastOneLevel: 0 }

describe("Budget laws over random Fake scripts and random policies", () => {
  it.live.prop(
    "no limit is exceeded, in-flight calls stay under the bound, usage adds up (success and failure)",
    [Random.script(), Random.policy],
    ([script, input]) =>
      Effect.gen(function* () {
        const policy = Policy.make(input)
        const { exit, stats } = yield* runOnce(script, input)
        const outcome = checkLaws(policy, exit, stats)
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
      }),
    { timeout: 120_000, fastCheck: { numRuns: RUNS } }
  )

  it.live.prop(
    "the same laws with generous limits and latency, so batches and children really overlap",
    [
      Random.script({ rlmWeight: 4 }),
      Random.policy.map((p) => ({ ...p, maxSubCalls: 40, maxSteps: 6 })),
      // Sometimes a per-call timeout near the fake's 3 ms latency, so some calls are cancelled mid-flight.
      fc.option(fc.integer({ min: 2, max: 8 }), { freq: 3 }),
      Random.script({ rlmWeight: 4, endsWithFinal: true })
    ],
    ([script, base, callTimeoutMs, extra]) =>
      Effect.gen(function* () {
        // Two scripts back to back: the second gives children replies to consume.
        const input = callTimeoutMs === null ? base : { ...base, callTimeoutMs }
        const joined: Random.Script = {
          ...script,
          replies: [...script.replies, ...extra.replies]
        }
        const policy = Policy.make(input)
        const { exit, stats } = yield* Effect.gen(function* () {
          const exit = yield* Effect.exit(Rlm.run("q", "ctx", { policy: input }))
          const stats = yield* (yield* FakeAdapter.FakeInstrumentation).stats
          return { exit, stats }
        }).pipe(
          Effect.provide(Layer.merge(FakeAdapter.layerInstrumented({ ...Random.render(joined), latencyMs: 3 }), Js))
        )
        const outcome = checkLaws(policy, exit, stats)
        outcomes.set(`latency:${outcome}`, (outcomes.get(`latency:${outcome}`) ?? 0) + 1)
      }),
    { timeout: 120_000, fastCheck: { numRuns: Math.ceil(RUNS / 2) } }
  )

  it("outcomes were varied (answered and budget failures both seen)", () => {
    // Printed for the report; the property tests above did the checking.
    console.log("outcomes", Object.fromEntries(outcomes), "seen", seen)
    assert.isAtLeast(outcomes.size, 2)
    assert.isAbove(seen.children, 0)
  })
})
