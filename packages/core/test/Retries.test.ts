import { assert, describe, it } from "@effect/vitest"
import { AttemptObserver, FakeAdapter, LlmAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { Trace } from "@rlm-runtime/trace"
import { Chunk, Effect, Layer, Stream } from "effect"
import { Budget, ModelCall, Policy, Rlm, RunEvent } from "../src/index.js"

/**
 * An adapter that retries, as the HTTP adapters do: before answering a call
 * whose prompt matches, it tells the caller's `AttemptObserver` about one
 * failed attempt (whose response reported `usage`). No HTTP here: the HTTP
 * path is tested in the adapters package and in the CLI over loopback.
 */
const retrying = (options: FakeAdapter.Options, failedUsage: LlmAdapter.Usage | undefined, onRole: "root" | "sub") =>
  Layer.effect(
    LlmAdapter.LlmAdapter,
    Effect.map(FakeAdapter.make(options), (fake) => {
      let reported = false
      return LlmAdapter.make({
        model: fake.model,
        chat: (request) =>
          Effect.suspend(() => {
            if (request.role !== onRole || reported) return fake.chat(request)
            reported = true
            return Effect.zipRight(
              AttemptObserver.report(
                new AttemptObserver.AttemptFailed({
                  attempt: 1,
                  reason: "ServerError",
                  message: "503 Service Unavailable",
                  status: 503,
                  delayMs: 250,
                  ...(failedUsage !== undefined ? { usage: failedUsage } : {})
                })
              ),
              fake.chat(request)
            )
          })
      })
    })
  )

const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

describe("adapter retries are visible in the run", () => {
  const rootRun = (failedUsage: LlmAdapter.Usage | undefined) =>
    Effect.map(
      Stream.runCollect(Rlm.stream("q", "ctx")).pipe(
        Effect.provide(
          Layer.merge(
            retrying({ script: [repl("var a = 1"), "FINAL(ok)"] }, failedUsage, "root"),
            JavascriptSandbox.layer()
          )
        )
      ),
      Chunk.toReadonlyArray
    )

  const totalsOf = (events: ReadonlyArray<RunEvent.RunEvent>) => {
    const answered = events.at(-1)
    const finished = events.find((e) => e._tag === "RunFinished")
    return {
      budget: answered?._tag === "Answered" ? answered.totals : undefined,
      trace: Trace.totalUsage(Trace.make(events.filter(RunEvent.isTraceEvent))),
      run: finished?._tag === "RunFinished" ? finished.usage : undefined
    }
  }

  it.live(
    "a retried root attempt is a ModelCallRetried event of its step, its tokens in the budget and the trace",
    () =>
      Effect.gen(function* () {
        const failed = new LlmAdapter.Usage({ inputTokens: 100, outputTokens: 5, totalTokens: 105 })
        const events = yield* rootRun(failed)
        const tags = events.map((e) => e._tag)
        assert.deepStrictEqual(tags.slice(0, 4), ["RunStarted", "ModelCallStarted", "ModelCallRetried", "BlockStarted"])
        const retried = events.find((e) => e._tag === "ModelCallRetried")
        assert.deepStrictEqual(
          retried?._tag === "ModelCallRetried"
            ? [
                retried.runId,
                retried.step,
                retried.role,
                retried.model,
                retried.attempt,
                retried.reason,
                retried.status
              ]
            : undefined,
          ["run", 1, "root", "fake", 1, "ServerError", 503]
        )
        assert.deepStrictEqual(retried?._tag === "ModelCallRetried" ? retried.usage : undefined, {
          inputTokens: 100,
          outputTokens: 5,
          totalTokens: 105
        })
        // The same run without the failed attempt's tokens: every count differs by exactly those tokens.
        const with_ = totalsOf(events)
        const without = totalsOf(yield* rootRun(undefined))
        assert.strictEqual((with_.budget?.inputTokens ?? 0) - (without.budget?.inputTokens ?? 0), 100)
        assert.strictEqual((with_.budget?.outputTokens ?? 0) - (without.budget?.outputTokens ?? 0), 5)
        assert.strictEqual(with_.budget?.rootCalls, without.budget?.rootCalls, "a retried attempt is not another call")
        assert.strictEqual((with_.trace.inputTokens ?? 0) - (without.trace.inputTokens ?? 0), 100)
        assert.strictEqual((with_.run?.inputTokens ?? 0) - (without.run?.inputTokens ?? 0), 100)
        assert.strictEqual((with_.run?.totalTokens ?? 0) - (without.run?.totalTokens ?? 0), 105)
      })
  )

  it.live("a retried sub-call attempt is recorded with the step of the block that made it", () =>
    Effect.gen(function* () {
      const layer = Layer.merge(
        retrying(
          {
            script: [repl("var s = llm_query('Summarize: ' + peek(5))"), "FINAL_VAR(s)"],
            rules: [{ match: "Summarize", reply: "sum" }]
          },
          undefined,
          "sub"
        ),
        JavascriptSandbox.layer()
      )
      const result = yield* Rlm.run("q", "some context").pipe(Effect.provide(layer))
      assert.strictEqual(result.answer, "sum")
      const retried = result.trace.events.filter((e) => e._tag === "ModelCallRetried")
      assert.deepStrictEqual(
        retried.map((e) => [e.role, e.step, e.usage]),
        [["sub", 1, {}]]
      )
      const tags = result.trace.events.map((e) => e._tag)
      assert.isBelow(tags.indexOf("ModelCallRetried"), tags.indexOf("SubCall"))
    })
  )

  it.effect("a call that fails after a retried attempt still counts that attempt's tokens (nothing is released)", () =>
    Effect.gen(function* () {
      const policy = Policy.make({})
      const budget = yield* Budget.make(policy)
      const adapter = LlmAdapter.make({
        model: () => "m",
        chat: () =>
          Effect.zipRight(
            AttemptObserver.report(
              new AttemptObserver.AttemptFailed({
                attempt: 1,
                reason: "ServerError",
                message: "503",
                delayMs: 0,
                usage: new LlmAdapter.Usage({ inputTokens: 40, outputTokens: 2 })
              })
            ),
            Effect.fail(new LlmAdapter.LlmError({ reason: "ServerError", message: "503, giving up" }))
          )
      })
      const seen: Array<number> = []
      const exit = yield* Effect.exit(
        ModelCall.call(
          { adapter, budget, policy },
          {
            role: "root",
            depth: 0,
            messages: [new LlmAdapter.ChatMessage({ role: "user", content: "hi" })],
            onRetry: (attempt) => Effect.sync(() => seen.push(attempt.attempt))
          }
        )
      )
      assert.strictEqual(exit._tag, "Failure")
      assert.deepStrictEqual(seen, [1])
      const totals = yield* budget.totals
      assert.strictEqual(totals.inputTokens, 40)
      assert.strictEqual(totals.outputTokens, 2)
    })
  )
})
