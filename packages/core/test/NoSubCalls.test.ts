/**
 * `RunOptions.subCalls: false`, the paper's ablation: the REPL has no
 * sub-call functions, so calling one is an ordinary error the model sees and
 * recovers from, and the system prompt does not mention them.
 */
import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox, PythonSandbox, type Sandbox } from "@rlm-runtime/sandbox"
import { Effect, Layer } from "effect"
import { Prompts, Rlm } from "../src/index.js"

const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

const SUBCALL = /llm_query|rlm_query|sub-call|sub-model/

describe("RunOptions.subCalls: false", () => {
  for (const language of ["python", "javascript"] as const) {
    for (const protocol of ["fenced", "tools"] as const) {
      it(`the ${language} ${protocol} system prompt loses exactly its sub-call parts`, () => {
        const full = Prompts.systemPromptFor(language, protocol)
        const without = Prompts.systemPromptFor(language, protocol, [], { subCalls: false })
        assert.match(full, SUBCALL)
        assert.notMatch(without, SUBCALL)
        // Everything else is kept: the helpers, budget(), how to reply.
        for (const kept of ["peek(", "find(", "chunk(", "budget()", "SHOW_VARS()", "How to reply:"]) {
          assert.include(without, kept)
        }
        // The default is the prompt recorded traces were made with.
        assert.strictEqual(Prompts.systemPromptFor(language, protocol, [], { subCalls: true }), full)
      })
    }
  }

  const cases: ReadonlyArray<readonly [string, Layer.Layer<Sandbox.Sandbox, Sandbox.SandboxError>, string, RegExp]> = [
    ["python", PythonSandbox.layer(), "r = llm_query('hi')", /NameError: name 'llm_query' is not defined/],
    ["javascript", JavascriptSandbox.layer(), "var r = llm_query('hi')", /ReferenceError: .*llm_query/]
  ]
  for (const [name, sandbox, call, error] of cases) {
    it.live(
      `${name}: calling llm_query is an error the model sees; no model is asked for it and the run goes on`,
      () =>
        Effect.gen(function* () {
          const stats = yield* FakeAdapter.FakeInstrumentation
          const result = yield* Rlm.run("q", "the context", { subCalls: false })
          assert.strictEqual(result.answer, "recovered")
          const step = result.trace.events.find((e) => e._tag === "StepCompleted")
          assert.match(step?._tag === "StepCompleted" ? (step.blocks[0]?.error ?? "") : "", error)
          const started = result.trace.events.find((e) => e._tag === "SubCall")
          assert.isUndefined(started)
          assert.strictEqual((yield* stats.stats).calls.sub, 0)
          // What the model was told has no sub-calls in it.
          const system = (yield* stats.stats).requests[0]?.messages[0]?.content ?? ""
          assert.notMatch(system, SUBCALL)
        }).pipe(
          Effect.provide(
            Layer.merge(
              FakeAdapter.layerInstrumented({
                script: [repl(call), "FINAL(recovered)"],
                rules: [{ match: "", reply: "a sub-model answer" }]
              }),
              sandbox
            )
          )
        ),
      60_000
    )
  }
})
