import { LanguageModel, Prompt, Tool, Toolkit } from "@effect/ai"
import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { TraceRecorder } from "@rlm-runtime/trace"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { Cause, Chunk, Effect, Exit, FastCheck, Layer, Option, Schema, Stream } from "effect"
import { Rlm, RlmError, RlmLanguageModel } from "../src/index.js"

const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

const Js = JavascriptSandbox.layer()

/** An RLM as the app's LanguageModel, over the fake model (instrumented) and the JavaScript sandbox. */
const rlmModel = (fake: FakeAdapter.Options, options: RlmLanguageModel.Options = {}) =>
  Rlm.languageModel(options).pipe(Layer.provideMerge(Layer.merge(FakeAdapter.layerInstrumented(fake), Js)))

/** What the root model was told in its first turn. */
const firstTurn = Effect.map(FakeAdapter.FakeInstrumentation, (i) => i.stats).pipe(
  Effect.flatten,
  Effect.map((stats) => stats.requests.find((r) => r.role === "root")?.messages.at(-1)?.content ?? "")
)

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  assert.isTrue(Exit.isFailure(exit))
  const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
  assert.isTrue(Option.isSome(failure))
  return Option.getOrThrow(failure)
}

describe("RlmLanguageModel", () => {
  describe("fromPrompt", () => {
    it.effect("the last user message is the query; the system message and earlier turns are P", () =>
      Effect.gen(function* () {
        const prompt = Prompt.make([
          { role: "system", content: "Be terse." },
          { role: "user", content: "Hello" },
          { role: "assistant", content: [{ type: "text", text: "Hi." }] },
          { role: "user", content: "How many words?" }
        ])
        const request = yield* RlmLanguageModel.fromPrompt(prompt)
        assert.strictEqual(request.query, "How many words?")
        assert.deepStrictEqual(request.context, ["system: Be terse.", "user: Hello", "assistant: Hi."])
      })
    )

    it.effect("a single user message becomes P itself, with the fixed query", () =>
      Effect.gen(function* () {
        const request = yield* RlmLanguageModel.fromPrompt(Prompt.make("short question"))
        assert.strictEqual(request.query, RlmLanguageModel.REQUEST_IN_CONTEXT_QUERY)
        assert.strictEqual(request.context, "short question")
      })
    )

    it.effect("a long last user message goes into P; the given context comes first", () =>
      Effect.gen(function* () {
        const long = "x".repeat(50)
        const request = yield* RlmLanguageModel.fromPrompt(Prompt.make(long), { context: "corpus", maxQueryChars: 49 })
        assert.strictEqual(request.query, RlmLanguageModel.REQUEST_IN_CONTEXT_QUERY)
        assert.deepStrictEqual(request.context, ["corpus", `user: ${long}`])
        const short = yield* RlmLanguageModel.fromPrompt(Prompt.make("q?"), { context: ["a", "b"] })
        assert.strictEqual(short.query, "q?")
        assert.deepStrictEqual(short.context, ["a", "b"])
      })
    )

    it.effect("a prompt without a user message is MalformedInput", () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(RlmLanguageModel.fromPrompt(Prompt.make([{ role: "system", content: "s" }])))
        assert.strictEqual(error._tag, "MalformedInput")
        assert.match(error.message, /no user message/)
      })
    )

    const Message = FastCheck.oneof(
      FastCheck.record({ role: FastCheck.constant("system" as const), content: FastCheck.string() }),
      FastCheck.record({
        role: FastCheck.constantFrom("user" as const, "assistant" as const),
        content: FastCheck.array(
          FastCheck.record({ type: FastCheck.constant("text" as const), text: FastCheck.string() }),
          {
            minLength: 1,
            maxLength: 3
          }
        )
      })
    )

    it.prop(
      "nothing is lost: every message's text is in the query or P, and P keeps the given context first",
      [
        FastCheck.array(Message, { maxLength: 6 }),
        FastCheck.string({ maxLength: 30 }),
        FastCheck.option(FastCheck.array(FastCheck.string(), { minLength: 1, maxLength: 3 }), { nil: undefined }),
        FastCheck.integer({ min: 0, max: 40 })
      ],
      ([messages, last, context, maxQueryChars]) => {
        const prompt = Prompt.make([...messages, { role: "user", content: last }])
        const request = Effect.runSync(RlmLanguageModel.fromPrompt(prompt, { context, maxQueryChars }))
        const documents = typeof request.context === "string" ? [request.context] : (request.context as Array<string>)
        const all = [request.query, ...documents].join("\n")
        for (const message of prompt.content) {
          const text =
            typeof message.content === "string"
              ? message.content
              : message.content.map((p) => (p.type === "text" ? p.text : "")).join("\n")
          assert.include(all, text)
        }
        if (context !== undefined) assert.deepStrictEqual(documents.slice(0, context.length), context)
        // The message is the query unless it is too long or it is all there is.
        const other = messages.length > 0 || context !== undefined
        assert.strictEqual(request.query === last, last.length <= maxQueryChars && other)
      }
    )
  })

  it.live("generateText answers with the run's answer, the run tree's usage and finishReason stop", () =>
    Effect.gen(function* () {
      const response = yield* LanguageModel.generateText({
        prompt: [
          { role: "system", content: `alpha ${"filler ".repeat(100)}omega` },
          { role: "user", content: "Summarize the context." }
        ]
      })
      assert.strictEqual(response.text, "sub says: summary")
      assert.strictEqual(response.finishReason, "stop")
      // FakeAdapter estimates ceil(chars / 4) per direction: two root calls and one sub-call, all counted.
      const rlm = response.content.find((p) => p.type === "finish")?.metadata.rlm as {
        readonly steps: number
        readonly totals: { rootCalls: number; subCalls: number; inputTokens: number; outputTokens: number }
      }
      assert.strictEqual(rlm.steps, 2)
      assert.strictEqual(rlm.totals.rootCalls, 2)
      assert.strictEqual(rlm.totals.subCalls, 1)
      assert.strictEqual(response.usage.inputTokens, rlm.totals.inputTokens)
      assert.strictEqual(response.usage.outputTokens, rlm.totals.outputTokens)
      assert.strictEqual(response.usage.totalTokens, rlm.totals.inputTokens + rlm.totals.outputTokens)
      assert.isAbove(response.usage.inputTokens ?? 0, 0)
      // The root model was given the query, not P.
      const told = yield* firstTurn
      assert.include(told, "Summarize the context.")
      assert.notInclude(told, "omega")
    }).pipe(
      Effect.provide(
        rlmModel({
          script: [repl("var s = 'sub says: ' + llm_query('Summarize: ' + P)"), "FINAL_VAR(s)"],
          rules: [{ match: "Summarize: system: alpha filler", reply: "summary" }]
        })
      )
    )
  )

  it.live("a prompt of one big text is P; the root model sees only its preview", () =>
    Effect.gen(function* () {
      const big = `needle-${"z".repeat(9_000)}`
      const response = yield* LanguageModel.generateText({ prompt: big })
      assert.strictEqual(response.text, String(big.length))
      const told = yield* firstTurn
      assert.include(told, RlmLanguageModel.REQUEST_IN_CONTEXT_QUERY)
      assert.isBelow(told.length, 2_000)
    }).pipe(Effect.provide(rlmModel({ script: [repl("var n = String(P.length)"), "FINAL_VAR(n)"] })))
  )

  it.live("usage is unknown when the provider reported none; an answer forced at maxSteps is finishReason length", () =>
    Effect.gen(function* () {
      const response = yield* LanguageModel.generateText({ prompt: "q" })
      assert.strictEqual(response.text, "forced")
      assert.strictEqual(response.finishReason, "length")
      assert.isUndefined(response.usage.inputTokens)
      assert.isUndefined(response.usage.totalTokens)
    }).pipe(
      Effect.provide(
        rlmModel({ script: [repl("var a = 1"), "FINAL(forced)"], usage: "unknown" }, { policy: { maxSteps: 1 } })
      )
    )
  )

  it.live("generateObject: the run decodes its answer with the object's Schema", () =>
    Effect.gen(function* () {
      const Count = Schema.Struct({ words: Schema.Number })
      const response = yield* LanguageModel.generateObject({ prompt: "count the words", schema: Count })
      assert.deepStrictEqual(response.value, { words: 3 })
      assert.deepStrictEqual(JSON.parse(response.text), { words: 3 })
    }).pipe(Effect.provide(rlmModel({ script: ['FINAL({"words": "three"})', 'FINAL({"words": 3})'] })))
  )

  it.live("a failing run is an AiError carrying the RlmError", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(LanguageModel.generateText({ prompt: "q" }))
      const error = failureOf(exit)
      assert.strictEqual(error._tag, "UnknownError")
      assert.match(
        error.message,
        /RlmLanguageModel\.generateText: The RLM run failed \(BudgetExceeded\): .*maxSubCalls/
      )
      assert.instanceOf((error as { cause?: unknown }).cause, RlmError.BudgetExceeded)
    }).pipe(
      Effect.provide(
        rlmModel(
          { script: [repl("var a = llm_query('x')"), "FINAL(never)"], rules: [{ match: "", reply: "r" }] },
          { policy: { maxSubCalls: 0 } }
        )
      )
    )
  )

  it.live("streamText streams each step as reasoning, then the answer as text, then the finish part", () =>
    Effect.gen(function* () {
      const parts = Chunk.toArray(
        yield* Stream.runCollect(LanguageModel.streamText({ prompt: "Count the characters." }))
      )
      const types = parts.map((p) => p.type)
      assert.strictEqual(types[0], "response-metadata")
      assert.deepStrictEqual(types.slice(1), [
        "reasoning-start",
        "reasoning-delta",
        "reasoning-end",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-end",
        "text-start",
        "text-delta",
        "text-end",
        "finish"
      ])
      const reasoning = parts.flatMap((p) => (p.type === "reasoning-delta" ? [p.delta] : []))
      assert.match(reasoning[0] ?? "", /^\[run step 1\]\n```repl\nconsole.log\(P.length\)\n```\n\[block 1 output\]\n21/)
      assert.match(reasoning[1] ?? "", /^\[run step 2\]\nFINAL\(21\)/)
      assert.deepStrictEqual(
        parts.flatMap((p) => (p.type === "text-delta" ? [p.delta] : [])),
        ["21"]
      )
      const finish = parts.at(-1)
      assert.strictEqual(finish?.type === "finish" ? finish.reason : undefined, "stop")
      assert.isAbove(finish?.type === "finish" ? (finish.usage.totalTokens ?? 0) : 0, 0)
    }).pipe(Effect.provide(rlmModel({ script: [repl("console.log(P.length)"), "FINAL(21)"] })))
  )

  it.live("streamText fails with an AiError when the run fails", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(Stream.runDrain(LanguageModel.streamText({ prompt: "q" })))
      const error = failureOf(exit)
      assert.strictEqual(error._tag, "UnknownError")
      assert.match(error.message, /RlmLanguageModel\.streamText: The RLM run failed \(RunFailed\)/)
    }).pipe(Effect.provide(rlmModel({ script: [] })))
  )

  it.live("a toolChoice that requires a tool call is MalformedInput", () =>
    Effect.gen(function* () {
      const Echo = Tool.make("echo", { parameters: { s: Schema.String }, success: Schema.String })
      const toolkit = Toolkit.make(Echo)
      const exit = yield* Effect.exit(
        LanguageModel.generateText({ prompt: "q", toolkit, toolChoice: "required" }).pipe(
          Effect.provide(toolkit.toLayer({ echo: ({ s }) => Effect.succeed(s) }))
        )
      )
      assert.strictEqual(failureOf(exit)._tag, "MalformedInput")
    }).pipe(Effect.provide(rlmModel({ script: ["FINAL(x)"] })))
  )

  it.live("a TraceRecorder in the caller's context records the run", () =>
    Effect.gen(function* () {
      const response = yield* LanguageModel.generateText({ prompt: "q" })
      assert.strictEqual(response.text, "x")
      const events = yield* Effect.flatMap(TraceRecorder.TraceRecorder, (r) => r.events)
      assert.deepStrictEqual(
        events.map((e) => e._tag),
        ["RunStarted", "StepCompleted", "FinalAnswer", "RunFinished"]
      )
    }).pipe(Effect.provide(Layer.merge(rlmModel({ script: ["FINAL(x)"] }), TraceRecorder.layerMemory)))
  )
})
