import { assert, describe, it } from "@effect/vitest"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { Effect, Either } from "effect"
import { RlmTest } from "../src/index.js"

const fence = "`".repeat(3)

describe("RlmTest", () => {
  for (const [language, code] of [
    ["js", "var s = llm_query('Summarize: ' + P.slice(0, 20))"],
    ["python", "s = llm_query('Summarize: ' + P[:20])"]
  ] as const) {
    it.live(`layer({ sandbox: "${language}" }): the Fake adapter and the ${language} sandbox record a run`, () =>
      Effect.gen(function* () {
        const recorded = yield* RlmTest.record("Summarize.", "a text ".repeat(10)).pipe(
          Effect.provide(
            RlmTest.layer({
              script: [`${fence}repl\n${code}\n${fence}`, "FINAL_VAR(s)"],
              rules: [{ match: "Summarize", reply: "short" }],
              sandbox: language
            })
          )
        )
        assert.strictEqual(Either.getOrThrow(recorded.result).answer, "short")
        assert.strictEqual(recorded.trace.events.filter((e) => e._tag === "SubCall").length, 1)
        const replayed = yield* RlmTest.replay(recorded).pipe(Effect.provide(RlmTest.sandboxLayer(language)))
        assert.strictEqual(Either.getOrThrow(replayed.result).answer, "short")
        assert.deepStrictEqual(
          replayed.calls.map((c) => c.role),
          ["root", "sub", "root"]
        )
      })
    )
  }

  it.live("record keeps a failed run with its partial trace; replay reproduces the failure", () =>
    Effect.gen(function* () {
      const recorded = yield* RlmTest.record("Q", "ctx", { policy: { maxSubCalls: 0 } }).pipe(
        Effect.provide(RlmTest.layer({ script: [`${fence}repl\nvar a = llm_query('x')\n${fence}`], rules: [] }))
      )
      assert.isTrue(Either.isLeft(recorded.result))
      assert.isAbove(recorded.trace.events.length, 0)
      const replayed = yield* RlmTest.replay(recorded).pipe(Effect.provide(JavascriptSandbox.layer()))
      assert.isTrue(Either.isLeft(replayed.result))
    })
  )

  it.live("replay fails with ReplayDivergence when the run asks what the trace does not hold", () =>
    Effect.gen(function* () {
      const recorded = yield* RlmTest.record("Summarize.", "ctx").pipe(
        Effect.provide(RlmTest.layer({ script: [`${fence}repl\nvar s = llm_query('a')\n${fence}`, "FINAL_VAR(s)"] }))
      )
      const other = { ...recorded, query: "Another question." }
      const strict = yield* Effect.flip(RlmTest.replay(other).pipe(Effect.provide(JavascriptSandbox.layer())))
      assert.strictEqual(strict._tag, "ReplayDivergence")
      assert.strictEqual(strict._tag === "ReplayDivergence" ? strict.reason : "", "PromptMismatch")
      // complete: false still refuses a call the trace does not hold.
      const loose = yield* Effect.flip(
        RlmTest.replay(other, { complete: false }).pipe(Effect.provide(JavascriptSandbox.layer()))
      )
      assert.strictEqual(loose._tag, "ReplayDivergence")
      // complete: false accepts a replay that stops early (here: no sub-call allowed).
      const early = yield* RlmTest.replay(recorded, { complete: false, policy: { maxSubCalls: 0 } }).pipe(
        Effect.provide(JavascriptSandbox.layer())
      )
      assert.isTrue(Either.isLeft(early.result))
      const missing = yield* Effect.flip(
        RlmTest.replay(recorded, { policy: { maxSubCalls: 0 } }).pipe(Effect.provide(JavascriptSandbox.layer()))
      )
      assert.strictEqual(missing._tag, "ReplayDivergence")
    })
  )
})
