import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter, LlmAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox, PythonSandbox } from "@rlm-runtime/sandbox"
import { CachedAdapter, LlmCache, type TraceEvent } from "@rlm-runtime/trace"
import { Effect, Exit, FastCheck, Layer, Schema } from "effect"
import { Prompts, Rlm, Step, ToolProtocol } from "../src/index.js"

type Scripted = FakeAdapter.Options["script"]

const call = (id: string, name: string, args: string) => new LlmAdapter.ToolCall({ id, name, arguments: args })
const runCode = (code: string) => ({ name: "run_code", arguments: { code } })
const finalAnswer = (answer: string) => ({ name: "final_answer", arguments: { answer } })
const finalVar = (variable: string) => ({ name: "final_answer", arguments: { variable } })

const block = (code: string, stdout: string): Step.BlockOutcome => ({
  block: { code, stdout, stderr: "", truncated: false, durationMs: 0 }
})

/** Run with the Fake adapter (instrumented) over a sandbox; the result or failure, and the requests seen. */
const runWith = (
  sandbox: Layer.Layer<any, any>,
  script: Scripted,
  options: Rlm.RunOptions = { protocol: "tools" },
  context = "alpha beta gamma"
) =>
  Effect.gen(function* () {
    const instrumentation = yield* FakeAdapter.FakeInstrumentation
    const exit = yield* Effect.exit(Rlm.run("What is in the context?", context, options))
    const stats = yield* instrumentation.stats
    return { exit, requests: stats.requests.filter((r) => r.role === "root") }
  }).pipe(Effect.provide(Layer.merge(FakeAdapter.layerInstrumented({ script }), sandbox)))

const steps = (trace: { readonly events: ReadonlyArray<TraceEvent.TraceEvent> }) =>
  trace.events.filter((e): e is TraceEvent.StepCompleted => e._tag === "StepCompleted")

const toolResults = (request: LlmAdapter.ChatRequest) =>
  request.messages.filter((m) => m.role === "tool").map((m) => ({ id: m.toolCallId, content: m.content }))

const last = <A>(xs: ReadonlyArray<A>): A => xs[xs.length - 1] as A

describe("ToolProtocol.parse", () => {
  it("run_code calls are the blocks in order, the first final_answer the marker", () => {
    const turn = ToolProtocol.parse({
      text: "",
      toolCalls: [
        call("a", "run_code", '{"code":"x = 1"}'),
        call("b", "run_code", '{"code":"print(x)"}'),
        call("c", "final_answer", '{"variable":"x"}'),
        call("d", "final_answer", '{"answer":"late"}')
      ]
    })
    assert.deepStrictEqual(turn.parsed.code, ["x = 1", "print(x)"])
    assert.deepStrictEqual(turn.parsed.final, { _tag: "FinalVar", name: "x" })
    assert.strictEqual(turn.parsed.protocol, "tools")
    assert.deepStrictEqual(
      turn.plans.map((p) => p._tag),
      ["Code", "Code", "Final", "Rejected"]
    )
    assert.include(turn.parsed.warnings[0] ?? "", "Only the first final_answer")
  })

  it("a structured answer is taken as its JSON text", () => {
    const turn = ToolProtocol.parse({ text: "", toolCalls: [call("a", "final_answer", '{"answer":{"n":3}}')] })
    assert.deepStrictEqual(turn.parsed.final, { _tag: "FinalText", text: '{"n":3}' })
  })

  it("malformed calls are warnings, never thrown", () => {
    const turn = ToolProtocol.parse({
      text: "I will run it.",
      toolCalls: [
        call("a", "run_code", "{code: print(1)"),
        call("b", "run_code", '{"source":"print(1)"}'),
        call("c", "run_code", '{"code":"   "}'),
        call("d", "run_code", "[1]"),
        call("e", "bash", '{"cmd":"ls"}'),
        call("f", "final_answer", '{"answer":"x","variable":"y"}'),
        call("g", "final_answer", '{"variable":"not a name"}'),
        call("h", "final_answer", "{}")
      ]
    })
    assert.deepStrictEqual(turn.parsed.code, [])
    assert.isUndefined(turn.parsed.final)
    assert.strictEqual(turn.parsed.warnings.length, 8)
    const [notJson, noCode, empty, notObject, unknown, both, badName, neither] = turn.parsed.warnings
    assert.include(notJson, "not JSON")
    assert.include(noCode, '"code" string')
    assert.include(empty, "empty")
    assert.include(notObject, "not a JSON object")
    assert.include(unknown, 'no tool named "bash"')
    assert.include(both, "not both")
    assert.include(badName, "name of a REPL variable")
    assert.include(neither, '"answer" or a "variable"')
  })

  it("a reply without tool calls is empty: its text is not run", () => {
    const turn = ToolProtocol.parse({ text: "```repl\nprint(1)\n```\nFINAL(1)" })
    assert.strictEqual(turn.parsed.protocol, "empty")
    assert.deepStrictEqual(turn.parsed.code, [])
    assert.isUndefined(turn.parsed.final)
  })

  it("respond: calls after a lost interpreter say they did not run; feedback goes with final_answer, else in a user turn", () => {
    const turn = ToolProtocol.parse({
      text: "",
      toolCalls: [call("a", "run_code", '{"code":"boom()"}'), call("b", "run_code", '{"code":"print(1)"}')]
    })
    const lost = "[interpreter lost] The Python interpreter crashed."
    const messages = ToolProtocol.respond(turn, [block("boom()", "")])({ text: "", feedback: [lost] })
    assert.deepStrictEqual(
      messages.map((m) => [m.role, m.toolCallId]),
      [
        ["assistant", undefined],
        ["tool", "a"],
        ["tool", "b"],
        ["user", undefined]
      ]
    )
    assert.include(messages[2]?.content ?? "", "Not run")
    assert.strictEqual(messages[3]?.content, lost)

    const answered = ToolProtocol.parse({
      text: "",
      toolCalls: [call("f", "final_answer", '{"answer":"x"}'), call("g", "nope", "{}")]
    })
    const rejection = "Your final answer does not have the required shape."
    const told = ToolProtocol.respond(
      answered,
      []
    )({
      text: "",
      feedback: [...answered.parsed.warnings, rejection]
    })
    assert.deepStrictEqual(
      told.map((m) => m.role),
      ["assistant", "tool", "tool"]
    )
    assert.include(told[1]?.content ?? "", rejection)
    assert.notInclude(told[1]?.content ?? "", "no tool named")
    assert.include(told[2]?.content ?? "", 'no tool named "nope"')
  })

  it.prop(
    "every call gets one tool result bound to its id, in order; run_code results are their block's output",
    [
      FastCheck.array(FastCheck.oneof(FastCheck.string({ minLength: 1 }), FastCheck.constant("{bad")), { maxLength: 6 })
    ],
    ([codes]) => {
      const calls = codes.map((code, i) =>
        code === "{bad"
          ? call(`id${i}`, "run_code", code)
          : call(`id${i}`, "run_code", JSON.stringify({ code: `#${code}` }))
      )
      const turn = ToolProtocol.parse({ text: "", toolCalls: calls })
      const good = codes.filter((code) => code !== "{bad").map((code) => `#${code}`)
      assert.deepStrictEqual(turn.parsed.code, good)
      const outcomes = good.map((code, i) => block(code, `out ${i}`))
      const messages = ToolProtocol.respond(turn, outcomes)({ text: "", feedback: turn.parsed.warnings })
      if (calls.length === 0) {
        assert.deepStrictEqual(
          messages.map((m) => m.role),
          ["assistant", "user"]
        )
        return
      }
      assert.strictEqual(messages[0]?.role, "assistant")
      assert.deepStrictEqual(messages[0]?.toolCalls, calls)
      const results = messages.slice(1)
      assert.deepStrictEqual(
        results.map((m) => [m.role, m.toolCallId]),
        calls.map((c) => ["tool", c.id])
      )
      let next = 0
      for (const [i, code] of codes.entries()) {
        const content = results[i]?.content ?? ""
        if (code === "{bad") assert.include(content, "not JSON")
        else assert.strictEqual(content, `REPL output:\nout ${next++}`)
      }
    }
  )
})

const scenarios = (name: string, sandbox: Layer.Layer<any, any>, lang: "python" | "javascript") => {
  const assign = lang === "python" ? "answer = P.split()[1]" : "var answer = P.split(' ')[1]"
  const show = lang === "python" ? "print(P.split()[0])" : "console.log(P.split(' ')[0])"

  describe(`the tools protocol (${name} sandbox, Fake model)`, () => {
    it.live("run_code, then final_answer with text: the tools are sent, results are bound to call ids", () =>
      Effect.gen(function* () {
        const { exit, requests } = yield* runWith(sandbox, [[runCode(show)], [{ id: "fin", ...finalAnswer("alpha") }]])
        assert.isTrue(Exit.isSuccess(exit))
        if (!Exit.isSuccess(exit)) return
        assert.strictEqual(exit.value.answer, "alpha")
        assert.strictEqual(exit.value.source, "FINAL")
        assert.strictEqual(exit.value.steps, 2)
        for (const request of requests) {
          assert.deepStrictEqual(
            request.tools?.map((t) => t.name),
            ["run_code", "final_answer"]
          )
        }
        assert.strictEqual(requests[0]?.messages[0]?.content, Prompts.systemPromptFor(lang, "tools"))
        const second = requests[1] as LlmAdapter.ChatRequest
        const assistant = second.messages[2] as LlmAdapter.ChatMessage
        assert.strictEqual(assistant.role, "assistant")
        assert.deepStrictEqual(
          assistant.toolCalls?.map((c) => c.name),
          ["run_code"]
        )
        assert.deepStrictEqual(toolResults(second), [{ id: "call_1_0", content: "REPL output:\nalpha" }])
        assert.strictEqual(second.messages.length, 4)
        const recorded = steps(exit.value.trace)
        assert.deepStrictEqual(
          recorded.map((s) => s.toolCalls?.map((c) => c.name)),
          [["run_code"], ["final_answer"]]
        )
        assert.strictEqual(recorded[0]?.toolCalls?.[0]?.arguments, JSON.stringify({ code: show }))
        assert.strictEqual(recorded[0]?.blocks[0]?.code, show)
      })
    )

    it.live("final_answer with a variable reads it from the REPL, in the same reply as the code", () =>
      Effect.gen(function* () {
        const { exit } = yield* runWith(sandbox, [[runCode(show)], [runCode(assign), finalVar("answer")]])
        assert.isTrue(Exit.isSuccess(exit))
        if (!Exit.isSuccess(exit)) return
        assert.strictEqual(exit.value.answer, "beta")
        assert.strictEqual(exit.value.source, "FINAL_VAR")
      })
    )

    it.live("a malformed call and a reply without tool calls get feedback, and the run goes on", () =>
      Effect.gen(function* () {
        const { exit, requests } = yield* runWith(sandbox, [
          [
            { id: "bad", name: "run_code", arguments: "{code: oops" },
            { id: "odd", name: "shell", arguments: {} }
          ],
          "I think the answer is alpha.",
          [runCode(show)],
          [{ id: "v", ...finalVar("missing_variable") }],
          [finalAnswer("alpha")]
        ])
        assert.isTrue(Exit.isSuccess(exit))
        if (!Exit.isSuccess(exit)) return
        assert.strictEqual(exit.value.answer, "alpha")
        assert.strictEqual(exit.value.steps, 5)
        // Step 1's calls are answered, each under its id.
        const second = requests[1] as LlmAdapter.ChatRequest
        const [notJson, unknown] = toolResults(second)
        assert.strictEqual(notJson?.id, "bad")
        assert.include(notJson?.content, "not JSON")
        assert.strictEqual(unknown?.id, "odd")
        assert.include(unknown?.content, 'no tool named "shell"')
        // Step 2 called no tool: a user turn says to call one.
        const third = requests[2] as LlmAdapter.ChatRequest
        assert.strictEqual(last(third.messages).role, "user")
        assert.strictEqual(last(third.messages).content, Prompts.nothingToDo("tools"))
        // Step 4's final_answer names no variable: its result says why it was not accepted.
        const fifth = requests[4] as LlmAdapter.ChatRequest
        const rejected = last(toolResults(fifth))
        assert.strictEqual(rejected.id, "v")
        assert.include(rejected.content, "not accepted")
        assert.include(rejected.content, "FINAL_VAR(missing_variable) names a variable that does not exist")
        const recorded = steps(exit.value.trace)
        assert.include(recorded[0]?.feedback ?? "", "not JSON")
        assert.strictEqual(recorded[0]?.toolCalls?.[0]?.arguments, "{code: oops")
        assert.isUndefined(recorded[1]?.toolCalls)
      })
    )
  })
}

scenarios("JavaScript", JavascriptSandbox.layer(), "javascript")
scenarios("Python", PythonSandbox.layer(), "python")

const Js = JavascriptSandbox.layer()

describe("the tools protocol (run options)", () => {
  it.live("the fenced protocol is the default: no tools are sent, the fenced prompt is used", () =>
    Effect.gen(function* () {
      const { exit, requests } = yield* runWith(Js, ["```repl\nconsole.log(1)\n```", "FINAL(one)"], {})
      assert.isTrue(Exit.isSuccess(exit))
      for (const request of requests) {
        assert.isUndefined(request.tools)
        assert.isTrue(request.messages.every((m) => m.role !== "tool" && m.toolCalls === undefined))
      }
      assert.strictEqual(requests[0]?.messages[0]?.content, Prompts.systemPromptFor("javascript"))
      if (Exit.isSuccess(exit)) assert.isTrue(steps(exit.value.trace).every((s) => s.toolCalls === undefined))
    })
  )

  it.live("under the tools protocol, fences in the text are not run", () =>
    Effect.gen(function* () {
      const { exit } = yield* runWith(Js, ["```repl\nconsole.log(1)\n```\nFINAL(fenced)", [finalAnswer("tool")]])
      assert.isTrue(Exit.isSuccess(exit))
      if (Exit.isSuccess(exit)) {
        assert.strictEqual(exit.value.answer, "tool")
        assert.deepStrictEqual(steps(exit.value.trace)[0]?.blocks, [])
      }
    })
  )

  it.live("child runs (rlm_query) use the root's protocol", () =>
    Effect.gen(function* () {
      const { exit, requests } = yield* runWith(
        Js,
        [[runCode("var sub = rlm_query('the sub task')")], [finalAnswer("from child")], [finalVar("sub")]],
        { protocol: "tools", policy: { maxDepth: 1 } }
      )
      assert.isTrue(Exit.isSuccess(exit))
      if (!Exit.isSuccess(exit)) return
      assert.strictEqual(exit.value.answer, "from child")
      assert.strictEqual(requests.length, 3)
      for (const request of requests) assert.strictEqual(request.tools?.length, 2)
      const child = exit.value.trace.events.filter(
        (e): e is TraceEvent.StepCompleted => e._tag === "StepCompleted" && e.runId !== "run"
      )
      assert.deepStrictEqual(
        child.map((s) => s.toolCalls?.map((c) => c.name)),
        [["final_answer"]]
      )
    })
  )

  it.live("out of steps, the answer is asked for through final_answer", () =>
    Effect.gen(function* () {
      const { exit, requests } = yield* runWith(Js, [[runCode("var x = 6 * 7")], [finalVar("x")]], {
        protocol: "tools",
        policy: { maxSteps: 1 }
      })
      assert.isTrue(Exit.isSuccess(exit))
      if (!Exit.isSuccess(exit)) return
      assert.strictEqual(exit.value.answer, "42")
      assert.strictEqual(exit.value.source, "forced")
      const forced = requests[1] as LlmAdapter.ChatRequest
      assert.strictEqual(last(forced.messages).content, Prompts.answerNow("What is in the context?", "tools"))
      assert.strictEqual(forced.tools?.length, 2)
    })
  )

  it.live("a tools run recorded through CachedAdapter replays from the cache alone, tool calls and all", () =>
    Effect.gen(function* () {
      const cache = Layer.succeed(LlmCache.LlmCache, yield* LlmCache.makeMemory())
      const options = { protocol: "tools" as const }
      const record = CachedAdapter.layer({ mode: "record" }).pipe(
        Layer.provide(
          FakeAdapter.layer({
            script: [[{ name: "run_code", arguments: "{bad" }], [runCode("var w = P.split(' ')[2]")], [finalVar("w")]]
          })
        ),
        Layer.provide(cache)
      )
      const original = yield* Rlm.run("Which word is third?", "alpha beta gamma", options).pipe(
        Effect.provide(Layer.merge(record, Js))
      )
      const replayed = yield* Rlm.run("Which word is third?", "alpha beta gamma", options).pipe(
        Effect.provide(Layer.merge(CachedAdapter.layerReplay({ model: "fake" }).pipe(Layer.provide(cache)), Js))
      )
      assert.strictEqual(original.answer, "gamma")
      assert.strictEqual(replayed.answer, "gamma")
      const calls = (r: Rlm.RunResult) => steps(r.trace).map((s) => s.toolCalls)
      assert.deepStrictEqual(calls(replayed), calls(original))
      assert.strictEqual(calls(original)[0]?.[0]?.arguments, "{bad")
    })
  )

  it.live("a typed answer: final_answer with a JSON object decodes with the output Schema", () =>
    Effect.gen(function* () {
      const output = Schema.Struct({ words: Schema.Number })
      const exit = yield* Effect.exit(
        Rlm.run("How many words?", "alpha beta gamma", { protocol: "tools", output }).pipe(
          Effect.provide(
            Layer.merge(
              FakeAdapter.layer({
                script: [
                  [runCode("console.log(P.split(' ').length)")],
                  [{ name: "final_answer", arguments: { answer: { words: 3 } } }]
                ]
              }),
              Js
            )
          )
        )
      )
      assert.isTrue(Exit.isSuccess(exit))
      if (Exit.isSuccess(exit)) assert.deepStrictEqual(exit.value.value, { words: 3 })
    })
  )

  it.live("onBudgetExceeded answer-now: the granted last call carries the tools and is answered by final_answer", () =>
    Effect.gen(function* () {
      const { exit, requests } = yield* runWith(
        Js,
        [[runCode("var s = llm_query('more')")], [finalAnswer("granted")]],
        { protocol: "tools", policy: { maxSubCalls: 0, onBudgetExceeded: "answer-now" } }
      )
      assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? String(exit.cause) : "")
      if (!Exit.isSuccess(exit)) return
      assert.strictEqual(exit.value.answer, "granted")
      assert.strictEqual(exit.value.source, "forced")
      const granted = last(requests)
      assert.strictEqual(granted.tools?.length, 2)
      assert.strictEqual(last(granted.messages).content, Prompts.answerNow("What is in the context?", "tools"))
    })
  )

  it.effect("an unknown protocol is a typed InvalidOptions error", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        Rlm.run("q", "c", { protocol: "tool" as never }).pipe(
          Effect.provide(Layer.merge(FakeAdapter.layer({ script: [] }), Js))
        )
      )
      assert.strictEqual(error._tag, "RunFailed")
      if (error._tag === "RunFailed") {
        assert.strictEqual(error.reason, "InvalidOptions")
        assert.include(error.message, '"fenced" or "tools"')
      }
    })
  )
})
