import type * as Vitest from "@effect/vitest"
import { describe, layer } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox, PythonSandbox, type Sandbox } from "@rlm-runtime/sandbox"
import { Effect, FastCheck as fc } from "effect"
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

  it.effect.prop("replaying any recorded trace gives the same answer and the same calls", [input], ([input]) =>
    Effect.flatMap(recordInput(input), Laws.replayIsFaithful), options)

  it.effect.prop("under limits at least the trace's usage, replay succeeds", [input, headroom], ([input, room]) =>
    Effect.flatMap(recordInput(input), (recorded) => Laws.replaySucceedsWithinUsage(recorded, room)), options)

  it.effect.prop(
    "under a limit below the usage, replay fails with BudgetExceeded and a prefix of the trace",
    [input, lowerable, fc.nat(3)],
    ([input, limit, below]) =>
      Effect.flatMap(recordInput(input), (recorded) => Laws.replayFailsBelowUsage(recorded, limit, below)),
    options
  )

  it.effect.prop("the trace of any run round-trips through JSON and JSONL", [input], ([input]) =>
    Effect.flatMap(recordInput(input), (recorded) => Laws.traceRoundTrips(recorded.trace)), options)
}

describe("Laws over the Fake adapter", () => {
  layer(JavascriptSandbox.layer())("JavaScript sandbox", suite("js", JS_RUNS))
  layer(PythonSandbox.layerPool({ size: 1 }), { timeout: 120_000 })("Python sandbox", suite("python", PY_RUNS))
})
