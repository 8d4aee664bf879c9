import { FileSystem } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Either, Exit, FastCheck, Fiber, Option, Schema, TestClock } from "effect"
import * as FakeAdapter from "../src/FakeAdapter.js"
import { ChatMessage, ChatRequest, LlmAdapter, Usage } from "../src/LlmAdapter.js"

const root = (content: string) =>
  new ChatRequest({ role: "root", messages: [new ChatMessage({ role: "user", content })] })
const sub = (...contents: Array<string>) =>
  new ChatRequest({ role: "sub", messages: contents.map((content) => new ChatMessage({ role: "user", content })) })

describe("FakeAdapter", () => {
  it.effect("root calls consume the script in order, then fail with ScriptExhausted", () =>
    Effect.gen(function* () {
      const adapter = yield* FakeAdapter.make({ script: ["one", "two"] })
      assert.strictEqual((yield* adapter.chat(root("q"))).text, "one")
      assert.strictEqual((yield* adapter.chat(root("q"))).text, "two")
      const error = yield* Effect.flip(adapter.chat(root("q")))
      assert.strictEqual(error._tag, "LlmError")
      assert.strictEqual(error.reason, "ScriptExhausted")
      assert.include(error.message, "root call #3")
      assert.include(error.message, "only 2 replies")
      assert.include(error.message, 'Add more entries to "script"')
    })
  )

  it.effect("sub calls answer with the first matching rule and never touch the script", () =>
    Effect.gen(function* () {
      const adapter = yield* FakeAdapter.make({
        script: ["root reply"],
        rules: [
          { match: "Summarize", reply: "fake summary" },
          { match: "Sum", reply: "second rule" },
          { match: "", reply: "catch-all" }
        ]
      })
      assert.strictEqual((yield* adapter.chat(sub("Summarize: abc"))).text, "fake summary")
      assert.strictEqual((yield* adapter.chat(sub("Sum it"))).text, "second rule")
      assert.strictEqual((yield* adapter.chat(sub("anything"))).text, "catch-all")
      // the prompt is the concatenation of every message
      assert.strictEqual((yield* adapter.chat(sub("system text", "please Summarize"))).text, "fake summary")
      assert.strictEqual((yield* adapter.chat(root("q"))).text, "root reply")
    })
  )

  it.effect("a sub call with no matching rule fails with NoRuleMatched saying what to add", () =>
    Effect.gen(function* () {
      const adapter = yield* FakeAdapter.make({ rules: [{ match: "needle", reply: "x" }] })
      const error = yield* Effect.flip(adapter.chat(sub("haystack only")))
      assert.strictEqual(error.reason, "NoRuleMatched")
      assert.include(error.message, '"haystack only"')
      assert.include(error.message, '"needle"')
      assert.include(error.message, '{"match": "<a substring of the prompt>"')
    })
  )

  it.effect("usage is estimated as ceil(chars / 4), or unknown when turned off", () =>
    Effect.gen(function* () {
      const estimated = yield* FakeAdapter.make({ script: ["12345"] })
      const r1 = yield* estimated.chat(root("123456789"))
      assert.deepStrictEqual(r1.usage, new Usage({ inputTokens: 3, outputTokens: 2, totalTokens: 5 }))
      assert.strictEqual(r1.model, "fake")
      const unknown = yield* FakeAdapter.make({ script: ["12345"], usage: "unknown", model: "m" })
      const r2 = yield* unknown.chat(root("123456789"))
      assert.strictEqual(r2.usage.inputTokens, undefined)
      assert.strictEqual(r2.usage.outputTokens, undefined)
      assert.strictEqual(r2.usage.totalTokens, undefined)
      assert.strictEqual(r2.model, "m")
      assert.strictEqual(unknown.model("sub"), "m")
    })
  )

  it.effect("latency is simulated with Effect.sleep and driven by TestClock", () =>
    Effect.gen(function* () {
      const adapter = yield* FakeAdapter.make({ script: ["late"], latencyMs: 1000 })
      const fiber = yield* Effect.fork(adapter.chat(root("q")))
      yield* TestClock.adjust(Duration.millis(999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.millis(1))
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isSuccess(exit) && exit.value.text === "late")
    })
  )

  it.effect("instrumentation counts calls by role, in-flight calls and their maximum", () =>
    Effect.gen(function* () {
      const fake = yield* FakeAdapter.makeInstrumented({
        script: ["r"],
        rules: [{ match: "", reply: "s" }],
        latencyMs: 10
      })
      const fiber = yield* Effect.fork(
        Effect.all(
          Array.from({ length: 12 }, (_, i) => fake.adapter.chat(sub(`p${i}`))),
          { concurrency: 5 }
        )
      )
      yield* TestClock.adjust(Duration.millis(5))
      const during = yield* fake.stats
      assert.strictEqual(during.inFlight, 5)
      assert.strictEqual(during.calls.sub, 5)
      yield* TestClock.adjust(Duration.millis(100))
      const replies = yield* Fiber.join(fiber)
      assert.deepStrictEqual(
        replies.map((r) => r.text),
        Array.from({ length: 12 }, () => "s")
      )
      const rootCall = yield* Effect.fork(fake.adapter.chat(root("q")))
      yield* TestClock.adjust(Duration.millis(10))
      assert.strictEqual((yield* Fiber.join(rootCall)).text, "r")
      const after = yield* fake.stats
      assert.strictEqual(after.inFlight, 0)
      assert.strictEqual(after.maxInFlight, 5)
      assert.deepStrictEqual(after.calls, { root: 1, sub: 12 })
      assert.strictEqual(after.succeeded, 13)
      assert.strictEqual(after.failed, 0)
      assert.deepStrictEqual(
        after.requests
          .slice(0, 12)
          .map((r) => r.messages[0]?.content)
          .sort(),
        Array.from({ length: 12 }, (_, i) => `p${i}`).sort()
      )
      yield* fake.reset
      assert.strictEqual((yield* fake.stats).maxInFlight, 0)
    })
  )

  it.effect(
    "stats list the requests in the order the calls started; a snapshot taken earlier does not change; reset empties it",
    () =>
      Effect.gen(function* () {
        const fake = yield* FakeAdapter.makeInstrumented({ script: ["a", "b", "c"] })
        yield* fake.adapter.chat(root("one"))
        const early = yield* fake.stats
        yield* fake.adapter.chat(root("two"))
        yield* fake.adapter.chat(root("three"))
        assert.deepStrictEqual(
          (yield* fake.stats).requests.map((r) => r.messages[0]?.content),
          ["one", "two", "three"]
        )
        assert.deepStrictEqual(
          early.requests.map((r) => r.messages[0]?.content),
          ["one"]
        )
        yield* fake.reset
        const after = yield* fake.stats
        assert.strictEqual(after.requests.length, 0)
        assert.deepStrictEqual(after.calls, { root: 0, sub: 0 })
      })
  )

  it.effect("failures and interruptions release the in-flight count", () =>
    Effect.gen(function* () {
      const fake = yield* FakeAdapter.makeInstrumented({ latencyMs: 50 })
      const failing = yield* Effect.fork(Effect.either(fake.adapter.chat(sub("x"))))
      const interrupted = yield* Effect.fork(fake.adapter.chat(root("y")))
      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual((yield* fake.stats).inFlight, 2)
      yield* Fiber.interrupt(interrupted)
      assert.strictEqual((yield* fake.stats).inFlight, 1)
      yield* TestClock.adjust(Duration.millis(100))
      const result = yield* Fiber.join(failing)
      assert.isTrue(Either.isLeft(result))
      const stats = yield* fake.stats
      assert.strictEqual(stats.inFlight, 0)
      assert.strictEqual(stats.failed, 1)
      assert.strictEqual(stats.succeeded, 0)
    })
  )

  it.effect.prop(
    "in-flight calls never exceed the concurrency bound",
    [
      FastCheck.integer({ min: 1, max: 40 }),
      FastCheck.integer({ min: 1, max: 8 }),
      FastCheck.integer({ min: 0, max: 20 })
    ],
    ([n, concurrency, latencyMs]) =>
      Effect.gen(function* () {
        const fake = yield* FakeAdapter.makeInstrumented({ rules: [{ match: "", reply: "ok" }], latencyMs })
        const fiber = yield* Effect.fork(
          Effect.all(
            Array.from({ length: n }, (_, i) => fake.adapter.chat(sub(`${i}`))),
            { concurrency }
          )
        )
        yield* TestClock.adjust(Duration.millis((latencyMs + 1) * n))
        yield* Fiber.join(fiber)
        const stats = yield* fake.stats
        assert.strictEqual(stats.calls.sub, n)
        assert.strictEqual(stats.inFlight, 0)
        assert.strictEqual(stats.maxInFlight, latencyMs === 0 ? stats.maxInFlight : Math.min(n, concurrency))
        assert.isAtMost(stats.maxInFlight, concurrency)
      }),
    { fastCheck: { numRuns: 25 } }
  )

  it.effect("layerInstrumented provides the adapter and its instrumentation", () =>
    Effect.gen(function* () {
      const adapter = yield* LlmAdapter
      const instrumentation = yield* FakeAdapter.FakeInstrumentation
      yield* adapter.chat(root("hi"))
      assert.deepStrictEqual((yield* instrumentation.stats).calls, { root: 1, sub: 0 })
    }).pipe(Effect.provide(FakeAdapter.layerInstrumented({ script: ["a"] })))
  )

  it.effect("scripts tool calls: a list of calls, or a text with calls, raw arguments kept as written", () =>
    Effect.gen(function* () {
      const llm = yield* FakeAdapter.make({
        script: [
          [{ name: "run_code", arguments: { code: "print(1)" } }, { name: "final_answer" }],
          { text: "thinking", toolCalls: [{ id: "mine", name: "run_code", arguments: "{code: oops" }] },
          "FINAL(plain)"
        ]
      })
      const root = new ChatRequest({ role: "root", messages: [new ChatMessage({ role: "user", content: "q" })] })
      const first = yield* llm.chat(root)
      assert.strictEqual(first.text, "")
      assert.strictEqual(first.finishReason, "tool-calls")
      assert.deepStrictEqual(
        (first.toolCalls ?? []).map((call) => ({ ...call })),
        [
          { id: "call_1_0", name: "run_code", arguments: '{"code":"print(1)"}' },
          { id: "call_1_1", name: "final_answer", arguments: "{}" }
        ]
      )
      assert.strictEqual(first.usage.outputTokens, Math.ceil(19 / 4) + Math.ceil(2 / 4))
      const second = yield* llm.chat(root)
      assert.strictEqual(second.text, "thinking")
      assert.deepStrictEqual(
        (second.toolCalls ?? []).map((call) => ({ ...call })),
        [{ id: "mine", name: "run_code", arguments: "{code: oops" }]
      )
      const third = yield* llm.chat(root)
      assert.strictEqual(third.text, "FINAL(plain)")
      assert.isUndefined(third.toolCalls)
      assert.strictEqual(third.finishReason, "stop")
    })
  )

  describe("FakeScript", () => {
    it.effect("decodes the --fake file format and defaults missing fields", () =>
      Effect.gen(function* () {
        const script = yield* FakeAdapter.decodeScript(
          JSON.stringify({ script: ["a", "b"], rules: [{ match: "m", reply: "r" }], latencyMs: 50 })
        )
        assert.deepStrictEqual(script.script, ["a", "b"])
        assert.deepStrictEqual(script.rules, [new FakeAdapter.FakeRule({ match: "m", reply: "r" })])
        assert.strictEqual(script.latencyMs, 50)
        const minimal = yield* FakeAdapter.decodeScript(`{"script": ["x"]}`)
        assert.deepStrictEqual(minimal.rules, [])
        assert.strictEqual(minimal.latencyMs, undefined)
      })
    )

    it.effect("a script file holds tool-call replies", () =>
      Effect.gen(function* () {
        const script = yield* FakeAdapter.decodeScript(
          `{"script": [[{"name": "run_code", "arguments": {"code": "x = 1"}}], {"text": "t", "toolCalls": []}, "FINAL(x)"]}`
        )
        assert.strictEqual(script.script.length, 3)
        const bad = yield* Effect.flip(FakeAdapter.decodeScript(`{"script": [[{"arguments": {}}]]}`))
        assert.strictEqual(bad.reason, "InvalidShape")
        assert.include(bad.message, "name")
      })
    )

    it.effect("bad JSON and bad shapes fail with a clear FakeScriptError", () =>
      Effect.gen(function* () {
        const notJson = yield* Effect.flip(FakeAdapter.decodeScript(`{"script": [`))
        assert.strictEqual(notJson.reason, "InvalidJson")
        assert.include(notJson.message, "not valid JSON")
        assert.include(notJson.message, '"rules"')
        const wrong = yield* Effect.flip(FakeAdapter.decodeScript(`{"script": "one", "rules": []}`))
        assert.strictEqual(wrong.reason, "InvalidShape")
        assert.include(wrong.message, '["script"]')
        const typo = yield* Effect.flip(FakeAdapter.decodeScript(`{"script": [], "rule": []}`))
        assert.strictEqual(typo.reason, "InvalidShape")
        assert.include(typo.message, "rule")
        const negative = yield* Effect.flip(FakeAdapter.decodeScript(`{"latencyMs": -1}`))
        assert.strictEqual(negative.reason, "InvalidShape")
      })
    )

    const equivalent = Schema.equivalence(FakeAdapter.FakeScript)
    it.effect.prop(
      "decode(encode(script)) round-trips",
      [FakeAdapter.FakeScript],
      ([script]) =>
        Effect.gen(function* () {
          const decoded = yield* FakeAdapter.decodeScript(FakeAdapter.encodeScript(script))
          assert.isTrue(equivalent(decoded, script))
        }),
      { fastCheck: { numRuns: 200 } }
    )

    it.effect("layerFromFile reads the script through FileSystem", () =>
      Effect.gen(function* () {
        const adapter = yield* LlmAdapter
        assert.strictEqual((yield* adapter.chat(root("q"))).text, "from file")
        assert.strictEqual((yield* adapter.chat(sub("Summarize: x"))).text, "fake summary")
      }).pipe(
        Effect.provide(FakeAdapter.layerFromFile("/scripts/fake.json")),
        Effect.provide(
          FileSystem.layerNoop({
            readFileString: (path) =>
              path === "/scripts/fake.json"
                ? Effect.succeed(
                    JSON.stringify({ script: ["from file"], rules: [{ match: "Summarize", reply: "fake summary" }] })
                  )
                : Effect.die("unexpected path")
          })
        )
      )
    )

    it.effect("layerFromFile reports a missing file as FileError", () =>
      Effect.gen(function* () {
        const exit = yield* Effect.exit(Effect.provide(LlmAdapter, FakeAdapter.layerFromFile("/nope.json")))
        assert.isTrue(Exit.isFailure(exit))
        const error = yield* Effect.flip(Effect.provide(LlmAdapter, FakeAdapter.layerFromFile("/nope.json")))
        assert.strictEqual(error.reason, "FileError")
        assert.include(error.message, "/nope.json")
      }).pipe(Effect.provide(FileSystem.layerNoop({})))
    )
  })
})
