import type * as Vitest from "@effect/vitest"
import { assert, describe, layer } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { Policy } from "@rlm-runtime/core"
import { JavascriptSandbox, PythonSandbox, type Sandbox } from "@rlm-runtime/sandbox"
import { Trace, TraceEvent } from "@rlm-runtime/trace"
import { Effect, Either, FastCheck as fc } from "effect"
import { Arbitraries, Laws, RlmTest } from "../src/index.js"

/** Runs of each property; raise with RLM_PROP_RUNS for a longer search. */
const JS_RUNS = Number(process.env.RLM_PROP_RUNS ?? 15)
const PY_RUNS = Number(process.env.RLM_PROP_RUNS_PYTHON ?? 4)

const recordInput = (input: Arbitraries.RunInput) =>
  RlmTest.record(input.query, input.context, { policy: input.policy }).pipe(
    Effect.provide(FakeAdapter.layer(input.script))
  )

const headroom = fc.record({ steps: fc.nat(3), subCalls: fc.nat(5), tokens: fc.nat(2_000) })
const lowerable = fc.constantFrom<Array<Laws.LowerableLimit>>("maxSubCalls", "maxInputTokens", "maxTotalTokens")

const suite = (language: RlmTest.Language, numRuns: number) => (it: Vitest.Vitest.MethodsNonLive<Sandbox.Sandbox>) => {
  const input = Arbitraries.runInput({ language })
  const options = { timeout: 600_000, fastCheck: { numRuns } }

  it.effect.prop(
    "replaying any recorded trace gives the same answer and the same calls",
    [input],
    ([input]) => Effect.flatMap(recordInput(input), Laws.replayIsFaithful),
    options
  )

  // Child runs need maxDepth 1 and sub-calls to spare: make them common.
  const deep = input.map((i) => ({ ...i, policy: Policy.make({ ...i.policy, maxDepth: 1, maxSubCalls: 30 }) }))
  it.effect.prop(
    "replaying a run tree with child runs gives the same answer and the same calls",
    [deep],
    ([input]) => Effect.flatMap(recordInput(input), Laws.replayIsFaithful),
    options
  )

  it.effect.prop(
    "under limits at least the trace's usage, replay succeeds",
    [input, headroom],
    ([input, room]) => Effect.flatMap(recordInput(input), (recorded) => Laws.replaySucceedsWithinUsage(recorded, room)),
    options
  )

  it.effect.prop(
    "under a limit below the usage, replay fails with BudgetExceeded and a prefix of the trace",
    [input, lowerable, fc.nat(3)],
    ([input, limit, below]) =>
      Effect.flatMap(recordInput(input), (recorded) => Laws.replayFailsBelowUsage(recorded, limit, below)),
    options
  )

  it.effect.prop(
    "the trace of any run round-trips through JSON and JSONL",
    [input],
    ([input]) => Effect.flatMap(recordInput(input), (recorded) => Laws.traceRoundTrips(recorded.trace)),
    options
  )
}

describe("Laws over the Fake adapter", () => {
  layer(JavascriptSandbox.layer())("JavaScript sandbox", suite("js", JS_RUNS))
  layer(PythonSandbox.layerPool({ size: 1 }), { timeout: 120_000 })("Python sandbox", suite("python", PY_RUNS))
})

const fence = "`".repeat(3)
const sample: Arbitraries.RunInput = {
  query: "Answer the question.",
  context: "some context ".repeat(20),
  script: new FakeAdapter.FakeScript({
    script: [
      `${fence}repl\nvar a = llm_query('k0 first')\nvar b = llm_query_batched(['k1 one', 'k2 two'])\n${fence}`,
      `${fence}repl\nvar c = llm_query('k0 second')\n${fence}`,
      "FINAL(done)"
    ],
    rules: [new FakeAdapter.FakeRule({ match: "", reply: "a reply" })]
  }),
  policy: Policy.make({ maxDepth: 0, concurrency: 1 })
}

describe("the laws fail when they should", () => {
  layer(JavascriptSandbox.layer())((it) => {
    it.effect("a replay whose recorded answer is another fails replayIsFaithful", () =>
      Effect.gen(function* () {
        const recorded = yield* recordInput(sample)
        yield* Laws.replayIsFaithful(recorded)
        // The recorded final answer edited (FinalAnswer has no hash): Replay.checkAnswer refuses the replay.
        const trace = Trace.make(
          recorded.trace.events.map((e) =>
            e._tag === "FinalAnswer" ? new TraceEvent.FinalAnswer({ ...e, answer: "something else" }) : e
          )
        )
        const error = yield* Effect.flip(Laws.replayIsFaithful({ ...recorded, trace }))
        assert.strictEqual(error._tag, "ReplayDivergence")
        assert.strictEqual(error._tag === "ReplayDivergence" ? error.reason : "", "AnswerMismatch")
        // The recorded outcome edited: the law compares it with the replay's.
        const result = Either.map(recorded.result, (r) => ({ ...r, answer: "something else" }))
        const violation = yield* Effect.flip(Laws.replayIsFaithful({ ...recorded, result }))
        assert.strictEqual(violation._tag, "LawViolation")
      })
    )

    it.effect("limits below the usage fail replaySucceedsWithinUsage", () =>
      Effect.gen(function* () {
        const recorded = yield* recordInput(sample)
        assert.deepStrictEqual(Laws.usageOf(recorded.trace).subCalls, 4)
        assert.deepStrictEqual(Laws.usageOf(recorded.trace).steps, 3)
        yield* Laws.replaySucceedsWithinUsage(recorded)
        const error = yield* Effect.flip(
          Laws.replaySucceedsWithinUsage(recorded, { steps: 0, subCalls: -1, tokens: 0 })
        )
        // The refused sub-call is an error in model code, the run goes on and asks what the trace does not hold.
        assert.include(["LawViolation", "ReplayDivergence"], error._tag)
      })
    )

    it.effect("replayFailsBelowUsage holds for each limit, and fails for a limit at the usage", () =>
      Effect.gen(function* () {
        const recorded = yield* recordInput(sample)
        for (const limit of ["maxSubCalls", "maxInputTokens", "maxTotalTokens"] as const) {
          yield* Laws.replayFailsBelowUsage(recorded, limit)
          // below = -1: the limit is what the run needed, the replay answers.
          const error = yield* Effect.flip(Laws.replayFailsBelowUsage(recorded, limit, -1))
          assert.strictEqual(error._tag, "LawViolation")
          assert.include(error.message, "the replay answered")
        }
      })
    )

    it.effect("isPrefixOf: a trace is a prefix of itself and of its start, not of an edited trace", () =>
      Effect.gen(function* () {
        const { trace } = yield* recordInput(sample)
        assert.isTrue(Either.isRight(Laws.isPrefixOf(trace, trace)))
        assert.isTrue(Either.isRight(Laws.isPrefixOf(Trace.make(trace.events.slice(0, 5)), trace)))
        const edited = Trace.make(
          trace.events.map((e) => (e._tag === "SubCall" ? new TraceEvent.SubCall({ ...e, parentStep: 9 }) : e))
        )
        assert.isTrue(Either.isLeft(Laws.isPrefixOf(edited, trace)))
        const extra = Trace.make([...trace.events, ...trace.events.filter((e) => e._tag === "FinalAnswer")])
        assert.isTrue(Either.isLeft(Laws.isPrefixOf(extra, trace)))
      })
    )
  })
})

describe("the Arbitraries make runs the laws bite on", () => {
  const census = (language: RlmTest.Language, count: number) =>
    Effect.gen(function* () {
      const inputs = fc.sample(Arbitraries.runInput({ language }), { numRuns: count, seed: 42 })
      let answered = 0
      let withSubCalls = 0
      let failedBlocks = 0
      let withChildren = 0
      for (const input of inputs) {
        const recorded = yield* recordInput(input)
        if (Laws.answeredWithinLimits(recorded)) answered++
        if (Laws.usageOf(recorded.trace).depth > 0) withChildren++
        if (Laws.answeredWithinLimits(recorded) && Laws.usageOf(recorded.trace).subCalls > 0) withSubCalls++
        for (const e of recorded.trace.events) {
          if (e._tag !== "StepCompleted") continue
          // A sub-call refused by a budget limit is an error in model code; any other error is a bad rendering.
          failedBlocks += e.blocks.filter((b) => b.error !== undefined && !b.error.includes("Budget")).length
        }
      }
      return { answered, withSubCalls, withChildren, failedBlocks }
    })

  layer(JavascriptSandbox.layer())((it) => {
    it.effect("JavaScript: most runs answer within their limits, many with sub-calls, no block fails", () =>
      Effect.gen(function* () {
        const { answered, failedBlocks, withChildren, withSubCalls } = yield* census("js", 20)
        assert.isAtLeast(withChildren, 1)
        assert.isAtLeast(answered, 8)
        assert.isAtLeast(withSubCalls, 4)
        assert.strictEqual(failedBlocks, 0)
      })
    )
  })

  layer(PythonSandbox.layerPool({ size: 1 }), { timeout: 120_000 })((it) => {
    it.effect("Python: the rendered code runs (no block fails) and makes sub-calls", () =>
      Effect.gen(function* () {
        const { answered, failedBlocks, withSubCalls } = yield* census("python", 6)
        assert.isAtLeast(answered, 2)
        assert.isAtLeast(withSubCalls, 1)
        assert.strictEqual(failedBlocks, 0)
      })
    )
  })
})
