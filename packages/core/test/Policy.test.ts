import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { Effect, Layer } from "effect"
import { Policy, Rlm } from "../src/index.js"

describe("Policy", () => {
  it("defaults to 16 concurrent model calls per level", () => {
    assert.strictEqual(Policy.defaults.concurrency, 16)
    assert.strictEqual(Policy.make().concurrency, 16)
  })

  it.live("at the default policy a batch keeps 16 sub-calls in flight, no more", () =>
    Effect.gen(function* () {
      const result = yield* Rlm.run("q", "ctx")
      assert.strictEqual(result.answer, "done")
      const stats = yield* Effect.flatten(Effect.map(FakeAdapter.FakeInstrumentation, (i) => i.stats))
      assert.strictEqual(stats.calls.sub, 64)
      assert.strictEqual(stats.maxInFlight, 16)
    }).pipe(
      Effect.provide(
        Layer.merge(
          FakeAdapter.layerInstrumented({
            script: [
              "```repl\nvar rs = llm_query_batched(Array.from({ length: 64 }, (_, i) => 'q' + i))\n```",
              "FINAL(done)"
            ],
            rules: [{ match: "q", reply: "a" }],
            latencyMs: 20
          }),
          JavascriptSandbox.layer()
        )
      )
    )
  )
})
