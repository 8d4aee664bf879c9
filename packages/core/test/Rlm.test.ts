import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter, LlmAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { Trace } from "@rlm-runtime/trace"
import { Effect, Exit, Fiber, Layer, Logger, Option, Schema, TestClock } from "effect"
import { Rlm, RlmError } from "../src/index.js"

const Js = JavascriptSandbox.layer()

const fake = (options: FakeAdapter.Options) => Layer.merge(FakeAdapter.layer(options), Js)

const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

const userMessages = (stats: FakeAdapter.Stats, role: "root" | "sub" = "root") =>
  stats.requests.filter((r) => r.role === role)

describe("Rlm.run (JavaScript sandbox, Fake model)", () => {
  it.live("runs code, calls a sub-model and answers with FINAL_VAR", () =>
    Effect.gen(function* () {
      const result = yield* Rlm.run("Summarize the context.", "RLMs treat long prompts as environment state.").pipe(
        Effect.provide(
          fake({
            script: [
              repl("var snippet = peek(80)", "var answer = llm_query('Summarize: ' + snippet)"),
              "FINAL_VAR(answer)"
            ],
            rules: [{ match: "Summarize", reply: "fake summary" }]
          })
        )
      )
      assert.strictEqual(result.answer, "fake summary")
      assert.strictEqual(result.source, "FINAL_VAR")
      assert.strictEqual(result.steps, 2)
      const subCalls = result.trace.events.filter((e) => e._tag === "SubCall")
      assert.strictEqual(subCalls.length, 1)
      assert.strictEqual(subCalls[0]?.prompt, "Summarize: RLMs treat long prompts as environment state.")
      assert.strictEqual(subCalls[0]?.parentStep, 1)
      const tags = result.trace.events.map((e) => e._tag)
      assert.deepStrictEqual(tags, [
        "RunStarted",
        "SubCall",
        "StepCompleted",
        "StepCompleted",
        "FinalAnswer",
        "RunFinished"
      ])
    })
  )

  it.live("the root model sees only metadata, never the context itself", () =>
    Effect.gen(function* () {
      const secret = `${"filler ".repeat(100)}NEEDLE-42 ${"more ".repeat(100)}`
      const layer = Layer.merge(
        FakeAdapter.layerInstrumented({
          script: [repl("var i = find('NEEDLE')[0]", "var hit = slice(i, i + 9)"), "FINAL_VAR(hit)"]
        }),
        Js
      )
      const stats = yield* Effect.gen(function* () {
        const result = yield* Rlm.run("Find the needle.", secret)
        assert.strictEqual(result.answer, "NEEDLE-42")
        return yield* (yield* FakeAdapter.FakeInstrumentation).stats
      }).pipe(Effect.provide(layer))
      for (const request of userMessages(stats)) {
        for (const m of request.messages) assert.notInclude(m.content, "NEEDLE-42")
      }
      assert.include(userMessages(stats)[0]?.messages[1]?.content ?? "", `Total characters: ${secret.length}`)
    })
  )

  it.live("an exception in model code is shown to the model and the run goes on", () =>
    Effect.gen(function* () {
      const layer = Layer.merge(
        FakeAdapter.layerInstrumented({ script: [repl("throw new Error('boom')"), repl("var ok = 1"), "FINAL(done)"] }),
        Js
      )
      const stats = yield* Effect.gen(function* () {
        const result = yield* Rlm.run("q", "ctx")
        assert.strictEqual(result.answer, "done")
        const step1 = result.trace.events.find((e) => e._tag === "StepCompleted")
        assert.include(step1?._tag === "StepCompleted" ? (step1.blocks[0]?.error ?? "") : "", "boom")
        return yield* (yield* FakeAdapter.FakeInstrumentation).stats
      }).pipe(Effect.provide(layer))
      const second = userMessages(stats)[1]
      assert.include(second?.messages.at(-1)?.content ?? "", "boom")
    })
  )

  it.live("FINAL_VAR naming a missing variable is told to the model, not returned", () =>
    Effect.gen(function* () {
      const layer = Layer.merge(
        FakeAdapter.layerInstrumented({ script: [repl("var x = 1"), "FINAL_VAR(nope)", "FINAL_VAR(x)"] }),
        Js
      )
      const stats = yield* Effect.gen(function* () {
        const result = yield* Rlm.run("q", "ctx")
        assert.strictEqual(result.answer, "1")
        assert.strictEqual(result.steps, 3)
        return yield* (yield* FakeAdapter.FakeInstrumentation).stats
      }).pipe(Effect.provide(layer))
      assert.include(
        userMessages(stats)[2]?.messages.at(-1)?.content ?? "",
        "FINAL_VAR(nope) names a variable that does not exist"
      )
    })
  )

  it.live("an empty reply gets feedback instead of ending the run", () =>
    Effect.gen(function* () {
      const result = yield* Rlm.run("q", "ctx").pipe(Effect.provide(fake({ script: ["", "FINAL(x)"] })))
      assert.strictEqual(result.answer, "x")
      const step1 = result.trace.events.find((e) => e._tag === "StepCompleted")
      assert.include(step1?._tag === "StepCompleted" ? (step1.feedback ?? "") : "", "no code and no final answer")
    })
  )

  it.live("at the step limit, asks once for a final answer and returns it", () =>
    Effect.gen(function* () {
      const layer = Layer.merge(
        FakeAdapter.layerInstrumented({ script: [repl("var a = 1"), repl("var b = 2"), "FINAL(forced answer)"] }),
        Js
      )
      const stats = yield* Effect.gen(function* () {
        const result = yield* Rlm.run("q", "ctx", { policy: { maxSteps: 2 } })
        assert.strictEqual(result.answer, "forced answer")
        assert.strictEqual(result.source, "forced")
        return yield* (yield* FakeAdapter.FakeInstrumentation).stats
      }).pipe(Effect.provide(layer))
      assert.strictEqual(stats.calls.root, 3)
      assert.include(userMessages(stats)[2]?.messages.at(-1)?.content ?? "", "no steps left")
    })
  )

  it.live("a model that never follows the protocol does not succeed: code as the last answer fails the run", () =>
    Effect.gen(function* () {
      for (const last of [repl("var c = 3"), "", "FINAL_VAR(nothing_here)"]) {
        const exit = yield* Rlm.run("q", "ctx", { policy: { maxSteps: 2 } }).pipe(
          Effect.provide(fake({ script: [repl("var a = 1"), repl("var b = 2"), last] })),
          Effect.exit
        )
        assert.isTrue(Exit.isFailure(exit), JSON.stringify(last))
        if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
          const error = exit.cause.error
          assert.strictEqual(error._tag, "BudgetExceeded")
          if (error._tag === "BudgetExceeded") {
            assert.strictEqual(error.limit, "maxSteps")
            assert.isTrue(Option.isNone(error.partialAnswer))
            const finished = error.trace?.events.at(-1)
            assert.strictEqual(finished?._tag === "RunFinished" && finished.status, "budget_exceeded")
          }
        } else assert.fail("expected a failure")
      }
    })
  )

  it.live("prose with no fence is not run: the model is told to write a ```repl block", () =>
    Effect.gen(function* () {
      const result = yield* Rlm.run("q", "ctx").pipe(
        Effect.provide(fake({ script: ["Let me look at the context first.", "**FINAL(42)** (checked)"] }))
      )
      assert.strictEqual(result.answer, "42")
      const step1 = result.trace.events.find((e) => e._tag === "StepCompleted")
      assert.deepStrictEqual(step1?._tag === "StepCompleted" ? step1.blocks : undefined, [])
      assert.include(step1?._tag === "StepCompleted" ? (step1.feedback ?? "") : "", "```repl block")
    })
  )

  it.live("requireReplBeforeFinal rejects an answer given before any REPL output", () =>
    Effect.gen(function* () {
      const layer = fake({ script: ["FINAL(guess)", repl("var seen = peek(3)"), "FINAL_VAR(seen)"] })
      const result = yield* Rlm.run("q", "abcdef", { requireReplBeforeFinal: true }).pipe(Effect.provide(layer))
      assert.strictEqual(result.answer, "abc")
      const without = yield* Rlm.run("q", "abcdef").pipe(Effect.provide(fake({ script: ["FINAL(guess)"] })))
      assert.strictEqual(without.answer, "guess")
    })
  )

  it.live("decodes a typed answer and asks the model to fix one that does not decode", () =>
    Effect.gen(function* () {
      const Answer = Schema.Struct({ count: Schema.Number })
      const result = yield* Rlm.run("count", "a a a", { output: Answer }).pipe(
        Effect.provide(
          fake({
            script: [
              repl("var bad = JSON.stringify({ count: 'three' })"),
              "FINAL_VAR(bad)",
              repl("var good = JSON.stringify({ count: find('a').length })"),
              "FINAL_VAR(good)"
            ]
          })
        )
      )
      assert.deepStrictEqual(result.value, { count: 3 })
      const rejected = result.trace.events.filter(
        (e) => e._tag === "StepCompleted" && (e.feedback ?? "").includes("required shape")
      )
      assert.strictEqual(rejected.length, 1)
    })
  )

  it.live("llm_query_batched returns replies in prompt order under the concurrency bound", () =>
    Effect.gen(function* () {
      const layer = Layer.merge(
        FakeAdapter.layerInstrumented({
          script: [
            repl(
              "var rs = llm_query_batched(Array.from({ length: 12 }, (_, i) => 'item ' + i))",
              "var out = rs.join(',')"
            ),
            "FINAL_VAR(out)"
          ],
          rules: Array.from({ length: 12 }, (_, i) => ({ match: `item ${i}`, reply: `r${i}` })).reverse(),
          latencyMs: 20
        }),
        Js
      )
      const stats = yield* Effect.gen(function* () {
        const result = yield* Rlm.run("q", "ctx", { policy: { concurrency: 3 } })
        assert.strictEqual(result.answer, Array.from({ length: 12 }, (_, i) => `r${i}`).join(","))
        return yield* (yield* FakeAdapter.FakeInstrumentation).stats
      }).pipe(Effect.provide(layer))
      assert.strictEqual(stats.calls.sub, 12)
      assert.isAtMost(stats.maxInFlight, 3)
      assert.isAtLeast(stats.maxInFlight, 2)
    })
  )

  it.live("a sub-call past maxSubCalls is not sent and the run fails with BudgetExceeded and its trace", () =>
    Effect.gen(function* () {
      const layer = Layer.merge(
        FakeAdapter.layerInstrumented({
          script: [
            repl("var a = llm_query('one')", "var b = llm_query('two')", "var c = llm_query('three')"),
            "FINAL(never)"
          ],
          rules: [{ match: "", reply: "ok" }]
        }),
        Js
      )
      const [exit, stats] = yield* Effect.gen(function* () {
        const exit = yield* Effect.exit(Rlm.run("q", "ctx", { policy: { maxSubCalls: 2 } }))
        return [exit, yield* (yield* FakeAdapter.FakeInstrumentation).stats] as const
      }).pipe(Effect.provide(layer))
      assert.strictEqual(stats.calls.sub, 2)
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
        const e = exit.cause.error
        assert.instanceOf(e, RlmError.BudgetExceeded)
        if (e._tag === "BudgetExceeded") {
          assert.strictEqual(e.limit, "maxSubCalls")
          assert.strictEqual(e.value, 2)
          assert.strictEqual(e.used, 3)
          const events = e.trace?.events ?? []
          assert.strictEqual(events.filter((ev) => ev._tag === "SubCall" && ev.reply === "ok").length, 2)
          assert.strictEqual(events.at(-1)?._tag, "RunFinished")
        }
      } else assert.fail("expected a failure")
    })
  )

  it.live("onBudgetExceeded: answer-now grants one last answer", () =>
    Effect.gen(function* () {
      const result = yield* Rlm.run("q", "ctx", { policy: { maxSubCalls: 0, onBudgetExceeded: "answer-now" } }).pipe(
        Effect.provide(
          fake({ script: [repl("var a = llm_query('x')"), "FINAL(best effort)"], rules: [{ match: "", reply: "ok" }] })
        )
      )
      assert.strictEqual(result.answer, "best effort")
      assert.strictEqual(result.source, "forced")
    })
  )

  it.live("with answer-now, an answer already asked for after maxSteps is not asked for twice", () =>
    Effect.gen(function* () {
      const layer = Layer.merge(
        FakeAdapter.layerInstrumented({ script: [repl("var a = 1"), repl("var b = 2"), "FINAL(too late)"] }),
        Js
      )
      const [exit, stats] = yield* Effect.gen(function* () {
        const exit = yield* Effect.exit(
          Rlm.run("q", "ctx", { policy: { maxSteps: 1, onBudgetExceeded: "answer-now" } })
        )
        return [exit, yield* (yield* FakeAdapter.FakeInstrumentation).stats] as const
      }).pipe(Effect.provide(layer))
      assert.strictEqual(stats.calls.root, 2, "step 1, then the one answer-now request")
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
        assert.strictEqual(exit.cause.error._tag === "BudgetExceeded" && exit.cause.error.limit, "maxSteps")
      } else assert.fail("expected BudgetExceeded")
    })
  )

  it.live("a failed prompt in a batch yields an error string in its slot", () =>
    Effect.gen(function* () {
      const result = yield* Rlm.run("q", "ctx").pipe(
        Effect.provide(
          fake({
            script: [
              repl("var rs = llm_query_batched(['alpha', 'beta'])", "var out = JSON.stringify(rs)"),
              "FINAL_VAR(out)"
            ],
            rules: [{ match: "alpha", reply: "yes" }]
          })
        )
      )
      const slots = JSON.parse(result.answer) as Array<string>
      assert.strictEqual(slots.length, 2)
      assert.strictEqual(slots[0], "yes")
      assert.match(slots[1] as string, /^Error: .*NoRuleMatched/)
    })
  )

  it.live("usage totals equal the sum of the calls in the trace", () =>
    Effect.gen(function* () {
      const result = yield* Rlm.run("q", "some context text").pipe(
        Effect.provide(
          fake({
            script: [
              repl("var rs = llm_query_batched(['a', 'b', 'c'])"),
              repl("var s = llm_query('d')"),
              "FINAL(done)"
            ],
            rules: [{ match: "", reply: "reply text" }]
          })
        )
      )
      const sum = Trace.totalUsage(result.trace)
      assert.strictEqual(result.totals.inputTokens, sum.inputTokens)
      assert.strictEqual(result.totals.outputTokens, sum.outputTokens)
      assert.strictEqual(result.totals.subCalls, 4)
      assert.strictEqual(result.totals.rootCalls, 3)
      const finished = result.trace.events.at(-1)
      assert.strictEqual(finished?._tag === "RunFinished" ? finished.usage.inputTokens : -1, sum.inputTokens)
    })
  )

  it.live("RunFinished.costUsd is the run's cost (children included) when its models are priced", () =>
    Effect.gen(function* () {
      const script = {
        script: [repl("var child = rlm_query('child task')", "var s = llm_query('d')"), "FINAL(c)", "FINAL_VAR(s)"],
        rules: [{ match: "", reply: "reply text" }]
      }
      const price = { inputPerMillion: 2_000_000, outputPerMillion: 4_000_000 }
      const priced = yield* Rlm.run("q", "ctx", { policy: { maxDepth: 1, prices: { fake: price } } }).pipe(
        Effect.provide(fake(script))
      )
      const finished = priced.trace.events.filter((e) => e._tag === "RunFinished")
      assert.strictEqual(finished.length, 2)
      const [child, root] = finished
      assert.isTrue(priced.totals.costUsd > 0)
      assert.strictEqual(root?.runId, "run")
      assert.closeTo(root?.costUsd ?? -1, priced.totals.costUsd, 1e-9)
      const childUsage = child?.usage ?? {}
      assert.closeTo(child?.costUsd ?? -1, (childUsage.inputTokens ?? 0) * 2 + (childUsage.outputTokens ?? 0) * 4, 1e-9)
      // No price: no cost is claimed.
      const unpriced = yield* Rlm.run("q", "ctx", { policy: { maxDepth: 1 } }).pipe(Effect.provide(fake(script)))
      for (const e of unpriced.trace.events) if (e._tag === "RunFinished") assert.isUndefined(e.costUsd)
      // A priced root with an unpriced sub model: a partial sum would understate the cost, so none is given.
      const mixed = Layer.effect(
        LlmAdapter.LlmAdapter,
        Effect.map(
          Effect.all({
            root: FakeAdapter.make({ ...script, model: "big" }),
            sub: FakeAdapter.make({ ...script, model: "small" })
          }),
          LlmAdapter.byRole
        )
      )
      const partial = yield* Rlm.run("q", "ctx", { policy: { prices: { big: price } } }).pipe(
        Effect.provide(Layer.merge(mixed, Js))
      )
      assert.strictEqual(partial.totals.unpricedCalls, 1)
      const last = partial.trace.events.at(-1)
      assert.isTrue(last?._tag === "RunFinished" && last.costUsd === undefined)
    })
  )

  it.live("rlm_query starts a child RLM whose trace nests under the parent step", () =>
    Effect.gen(function* () {
      const result = yield* Rlm.run("q", "ctx", { policy: { maxDepth: 1 } }).pipe(
        Effect.provide(
          fake({
            // The root's first reply, then the child's reply, then the root's final answer.
            script: [repl("var child = rlm_query('child task data')"), "FINAL(child answer)", "FINAL_VAR(child)"]
          })
        )
      )
      assert.strictEqual(result.answer, "child answer")
      const started = result.trace.events.filter((e) => e._tag === "RunStarted")
      assert.strictEqual(started.length, 2)
      const child = started[1]
      assert.strictEqual(child?._tag === "RunStarted" ? child.parentRunId : undefined, "run")
      assert.strictEqual(child?._tag === "RunStarted" ? child.parentStep : undefined, 1)
      assert.strictEqual(child?._tag === "RunStarted" ? child.depth : undefined, 1)
      const sub = result.trace.events.find((e) => e._tag === "SubCall")
      assert.strictEqual(sub?._tag === "SubCall" ? sub.kind : undefined, "rlm_query")
      assert.strictEqual(
        sub?._tag === "SubCall" ? sub.childRunId : undefined,
        child?._tag === "RunStarted" ? child.runId : ""
      )
    })
  )

  it.live("at the depth limit rlm_query falls back to llm_query", () =>
    Effect.gen(function* () {
      const result = yield* Rlm.run("q", "ctx", { policy: { maxDepth: 0 } }).pipe(
        Effect.provide(
          fake({
            script: [repl("var r = rlm_query('plain please')"), "FINAL_VAR(r)"],
            rules: [{ match: "plain", reply: "plain reply" }]
          })
        )
      )
      assert.strictEqual(result.answer, "plain reply")
      assert.strictEqual(result.trace.events.filter((e) => e._tag === "RunStarted").length, 1)
    })
  )

  it.live("a root model failure ends the run with RunFailed and the partial trace", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(Rlm.run("q", "ctx").pipe(Effect.provide(fake({ script: [repl("var a = 1")] }))))
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
        const e = exit.cause.error
        assert.strictEqual(e._tag, "RunFailed")
        assert.include(e.message, "ScriptExhausted")
        assert.isTrue((e.trace?.events ?? []).some((ev) => ev._tag === "StepCompleted"))
        assert.isTrue(Option.isNone(e.partialAnswer))
      } else assert.fail("expected a failure")
    })
  )

  it.live("a cost limit on a model with no price is said to be unbounded, and not enforced", () =>
    Effect.gen(function* () {
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => {
        logs.push(String(Array.isArray(message) ? message.join(" ") : message))
      })
      const result = yield* Rlm.run("q", "ctx", { policy: { maxCostUsd: 0 } }).pipe(
        Effect.provide(Layer.merge(fake({ script: ["FINAL(free)"] }), Logger.replace(Logger.defaultLogger, logger)))
      )
      assert.strictEqual(result.answer, "free")
      assert.strictEqual(result.totals.unpricedCalls, 1)
      assert.isTrue(logs.some((l) => l.includes("does not bound calls to fake")))
    })
  )

  it.effect("the wall-clock limit is a timeout over the whole run (TestClock)", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(
        Rlm.run("q", "ctx", { policy: { timeoutMs: 5_000 } }).pipe(
          Effect.provide(fake({ script: ["FINAL(late)"], latencyMs: 60_000 }))
        )
      )
      yield* Effect.yieldNow()
      yield* TestClock.adjust("5001 millis")
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
        assert.strictEqual(exit.cause.error._tag, "BudgetExceeded")
        if (exit.cause.error._tag === "BudgetExceeded") assert.strictEqual(exit.cause.error.limit, "timeoutMs")
      } else assert.fail("expected a timeout failure")
    })
  )
})
