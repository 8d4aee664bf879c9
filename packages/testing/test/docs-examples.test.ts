/**
 * The examples of docs/testing.md, run as they are written there: every
 * ```ts block of the page must appear verbatim in this file (the last test
 * checks it), so the page cannot drift from code that runs.
 */
import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import { assert, describe, it, layer } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { Arbitraries, Laws, RlmTest } from "@rlm-runtime/testing"
import { Trace } from "@rlm-runtime/trace"
import { Effect, Either } from "effect"

describe("docs/testing.md", () => {
  // --- record once, replay in a test
  const fence = "`".repeat(3)

  const app = RlmTest.layer({
    script: [`${fence}repl\nvar s = llm_query('Summarize: ' + P.slice(0, 50))\n${fence}`, "FINAL_VAR(s)"],
    rules: [{ match: "Summarize", reply: "a short summary" }],
    sandbox: "js"
  })

  it.live("the summary replays from its trace, with no model", () =>
    Effect.gen(function* () {
      // Record once (here with the Fake adapter; with a real model, provide its adapter instead).
      const recorded = yield* RlmTest.record("Summarize the text.", "a long text ".repeat(100)).pipe(
        Effect.provide(app)
      )
      // Keep the trace as a file next to the test (Trace.encodeJsonl), read it back in the test.
      const trace = yield* Trace.decodeJsonl(yield* Trace.encodeJsonl(recorded.trace))
      // Replay: the same calls, answered from the trace; any divergence fails the test.
      const replayed = yield* RlmTest.replay({ ...recorded, trace }).pipe(Effect.provide(JavascriptSandbox.layer()))
      assert.strictEqual(Either.getOrThrow(replayed.result).answer, "a short summary")
    })
  )

  // --- the laws, with it.effect.prop
  layer(JavascriptSandbox.layer())("the laws over scripted runs", (it) => {
    const runs = Arbitraries.runInput({ language: "js" })
    const recordRun = (input: Arbitraries.RunInput) =>
      RlmTest.record(input.query, input.context, { policy: input.policy }).pipe(
        Effect.provide(FakeAdapter.layer(input.script))
      )

    it.effect.prop(
      "replay gives the same answer and the same calls",
      [runs],
      ([input]) => Effect.flatMap(recordRun(input), Laws.replayIsFaithful),
      { fastCheck: { numRuns: 5 } }
    )

    it.effect.prop(
      "a sub-call limit below the usage fails with BudgetExceeded",
      [runs],
      ([input]) => Effect.flatMap(recordRun(input), (run) => Laws.replayFailsBelowUsage(run, "maxSubCalls")),
      { fastCheck: { numRuns: 5 } }
    )
  })

  // --- the Arbitraries, in your own properties
  layer(JavascriptSandbox.layer())("any policy and context", (it) => {
    it.effect.prop(
      "the app answers 42, or stops on a limit, under any small policy and any context",
      [Arbitraries.policy, Arbitraries.context],
      ([policy, context]) =>
        Effect.gen(function* () {
          // A fresh Fake adapter per run: its script is consumed as the run goes.
          const recorded = yield* RlmTest.record("What is the answer?", context, { policy }).pipe(
            Effect.provide(FakeAdapter.layer({ script: ["FINAL(42)"] }))
          )
          Either.match(recorded.result, {
            onRight: (result) => assert.strictEqual(result.answer, "42"),
            onLeft: (error) => assert.strictEqual(error._tag, "BudgetExceeded")
          })
          yield* Laws.traceRoundTrips(recorded.trace)
        }),
      { fastCheck: { numRuns: 10 } }
    )
  })

  it("every ts block of docs/testing.md is in this file, verbatim but for its indentation", () => {
    const page = NodeFs.readFileSync(NodePath.join(__dirname, "../../../docs/testing.md"), "utf8")
    const self = NodeFs.readFileSync(__filename, "utf8")
      .split("\n")
      .map((line) => line.trim())
    const blocks = [...page.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => (m[1] as string).trimEnd().split("\n"))
    assert.isAtLeast(blocks.length, 4)
    for (const block of blocks) {
      const lines = block.map((line) => line.trim())
      const at = self.findIndex((_, i) => lines.every((line, j) => self[i + j] === line))
      assert.isAtLeast(at, 0, `this block of docs/testing.md is not in docs-examples.test.ts:\n${block.join("\n")}`)
    }
  })
})
