import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { PythonSandbox } from "@rlm-runtime/sandbox"
import { Trace } from "@rlm-runtime/trace"
import { Effect, Layer, Option } from "effect"
import { Rlm } from "../src/index.js"

// The seed's example, through Rlm.run on the real Python sandbox (as examples/minimal.ts runs it).
describe("the seed example (Python sandbox)", () => {
  it.live(
    "answers 'fake summary' from a sub-call over peek(80), and its trace round-trips through JSON",
    () =>
      Effect.gen(function* () {
        const context = "RLMs treat long prompts as environment state."
        const layer = Layer.merge(
          FakeAdapter.layerInstrumented({
            script: [
              ["snippet = peek(80)", "summary = llm_query(f'Summarize: {snippet}')", "answer = summary"].join("\n"),
              "FINAL_VAR: answer"
            ],
            rules: [{ match: "Summarize", reply: "fake summary" }]
          }),
          PythonSandbox.layer()
        )
        const [result, stats] = yield* Effect.gen(function* () {
          const result = yield* Rlm.run("Summarize the context.", context)
          return [result, yield* (yield* FakeAdapter.FakeInstrumentation).stats] as const
        }).pipe(Effect.provide(layer))
        assert.strictEqual(result.answer, "fake summary")
        assert.strictEqual(result.source, "FINAL_VAR")
        // The sub-model was asked about the real context, read inside the REPL.
        const sub = stats.requests.filter((r) => r.role === "sub")
        assert.strictEqual(sub.length, 1)
        assert.strictEqual(sub[0]?.messages[0]?.content, `Summarize: ${context}`)
        const decoded = yield* Trace.decodeJson(Trace.toJson(result.trace))
        assert.deepStrictEqual(
          decoded.events.map((e) => e._tag),
          result.trace.events.map((e) => e._tag)
        )
        const final = Trace.finalAnswer(decoded, "run")
        assert.strictEqual(Option.getOrUndefined(final)?.answer, "fake summary")
      }),
    120_000
  )
})
