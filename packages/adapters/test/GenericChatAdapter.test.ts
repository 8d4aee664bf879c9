import { FetchHttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, FastCheck, Option, Redacted, Schema } from "effect"
import * as GenericChatAdapter from "../src/GenericChatAdapter.js"
import { ChatMessage, ChatRequest, LlmAdapter, ToolCall, ToolChoice, Usage } from "../src/LlmAdapter.js"
import { at, drop, json, loopback } from "./utils/loopback.js"

const request = new ChatRequest({
  role: "sub",
  messages: [
    new ChatMessage({ role: "system", content: "Be brief." }),
    new ChatMessage({ role: "user", content: "Summarize: abc" }),
    new ChatMessage({ role: "assistant", content: "abc" }),
    new ChatMessage({ role: "user", content: "Again" })
  ]
})

const fast = { retryBaseDelay: Duration.millis(5), maxRetries: 2 } as const

// As documented by Anthropic for POST /v1/messages.
const anthropicReply = (text: string) => ({
  id: "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  type: "message",
  role: "assistant",
  model: "claude-sonnet-4-20250514",
  content: [{ type: "text", text }],
  stop_reason: "end_turn",
  stop_sequence: null,
  usage: { input_tokens: 2095, output_tokens: 503, cache_creation_input_tokens: 10, cache_read_input_tokens: 5 }
})

const anthropicError = (type: string, message: string) => ({ type: "error", error: { type, message } })

// As documented by Ollama for POST /api/chat with "stream": false.
const ollamaReply = (content: string, counts = true) => ({
  model: "llama3.2",
  created_at: "2023-12-12T14:13:43.416799Z",
  message: { role: "assistant", content },
  done: true,
  total_duration: 5191566416,
  load_duration: 2154458,
  ...(counts ? { prompt_eval_count: 26, prompt_eval_duration: 383809000, eval_count: 298 } : { eval_count: 298 }),
  eval_duration: 4799921000
})

const make = (dialect: GenericChatAdapter.Dialect, options: GenericChatAdapter.Options) =>
  GenericChatAdapter.make(dialect, options).pipe(Effect.provide(FetchHttpClient.layer))

describe("GenericChatAdapter.anthropicMessages over loopback HTTP", () => {
  it.scopedLive("sends x-api-key, anthropic-version and a separate system field; reads content[].text and usage", () =>
    Effect.gen(function* () {
      const server = yield* loopback([json(200, anthropicReply("Short."))])
      const llm = yield* make(GenericChatAdapter.anthropicMessages, {
        model: "claude-sonnet-4",
        baseUrl: server.baseUrl,
        apiKey: Redacted.make("sk-ant-test"),
        temperature: 0.5
      })
      const response = yield* llm.chat(request)
      assert.strictEqual(response.text, "Short.")
      assert.strictEqual(response.finishReason, "stop")
      assert.deepStrictEqual(
        { ...response.usage },
        { cachedInputTokens: 5, inputTokens: 2110, outputTokens: 503, totalTokens: 2613 }
      )
      const seen = at(server.requests, 0)
      assert.strictEqual(seen.path, "/v1/messages")
      assert.strictEqual(seen.headers["x-api-key"], "sk-ant-test")
      assert.strictEqual(seen.headers["anthropic-version"], "2023-06-01")
      assert.isFalse("authorization" in seen.headers)
      assert.deepStrictEqual(seen.json, {
        model: "claude-sonnet-4",
        max_tokens: 4096,
        system: "Be brief.",
        messages: [
          { role: "user", content: "Summarize: abc" },
          { role: "assistant", content: "abc" },
          { role: "user", content: "Again" }
        ],
        temperature: 0.5
      })
    })
  )

  it.scopedLive("no key → no x-api-key header", () =>
    Effect.gen(function* () {
      const server = yield* loopback([json(200, anthropicReply("ok"))])
      const llm = yield* make(GenericChatAdapter.anthropicMessages, {
        model: "c",
        baseUrl: server.baseUrl,
        maxTokens: 10
      })
      yield* llm.chat(request)
      assert.isFalse("x-api-key" in at(server.requests, 0).headers)
      assert.strictEqual((at(server.requests, 0).json as { max_tokens: number }).max_tokens, 10)
    })
  )

  it.scopedLive("529 overloaded is retried; 401 quotes Anthropic's error and names ANTHROPIC_API_KEY", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(529, anthropicError("overloaded_error", "Overloaded")),
        json(200, anthropicReply("after overload"))
      ])
      const llm = yield* make(GenericChatAdapter.anthropicMessages, { model: "c", baseUrl: server.baseUrl, ...fast })
      assert.strictEqual((yield* llm.chat(request)).text, "after overload")
      assert.strictEqual(server.requests.length, 2)

      const denied = yield* loopback([json(401, anthropicError("authentication_error", "invalid x-api-key"))])
      const llm2 = yield* make(GenericChatAdapter.anthropicMessages, {
        model: "c",
        baseUrl: denied.baseUrl,
        apiKey: Redacted.make("bad"),
        ...fast
      })
      const error = yield* Effect.flip(llm2.chat(request))
      assert.strictEqual(error.reason, "Unauthorized")
      assert.include(error.message, "invalid x-api-key [authentication_error]")
      assert.include(error.message, "LLM_API_KEY or ANTHROPIC_API_KEY")
      assert.strictEqual(denied.requests.length, 1)
    })
  )

  it.scopedLive("404 model, prompt too long, a max_tokens stop without a text block, and one with no reason", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(404, anthropicError("not_found_error", "model: claude-nope")),
        json(400, anthropicError("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum")),
        json(200, { ...anthropicReply("x"), content: [], stop_reason: "max_tokens" }),
        json(200, { ...anthropicReply("x"), content: [], stop_reason: null })
      ])
      const llm = yield* make(GenericChatAdapter.anthropicMessages, {
        model: "claude-nope",
        baseUrl: server.baseUrl,
        ...fast
      })
      const notFound = yield* Effect.flip(llm.chat(request))
      assert.strictEqual(notFound.reason, "ModelNotFound")
      assert.include(notFound.message, "model: claude-nope")
      const tooLong = yield* Effect.flip(llm.chat(request))
      assert.strictEqual(tooLong.reason, "ContextTooLong")
      // The cap was spent before any text: an empty reply whose tokens still count, not an error.
      const cut = yield* llm.chat(request)
      assert.strictEqual(cut.text, "")
      assert.strictEqual(cut.finishReason, "length")
      assert.strictEqual(cut.usage.outputTokens, 503)
      const empty = yield* Effect.flip(llm.chat(request))
      assert.strictEqual(empty.reason, "MalformedResponse")
      assert.include(empty.message, "no text block (stop_reason: none)")
    })
  )

  it.effect("config reads LLM_API_KEY, else ANTHROPIC_API_KEY", () =>
    Effect.gen(function* () {
      const config = yield* GenericChatAdapter.config(
        GenericChatAdapter.anthropicMessages.env,
        GenericChatAdapter.anthropicMessages.defaultBaseUrl
      ).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["ANTHROPIC_API_KEY", "from-anthropic"]]))))
      assert.strictEqual(Redacted.value(Option.getOrThrow(config.apiKey)), "from-anthropic")
      assert.strictEqual(config.baseUrl, "https://api.anthropic.com")
    })
  )
})

describe("GenericChatAdapter.ollamaChat over loopback HTTP", () => {
  it.scopedLive("posts /api/chat with stream false and options; reads message.content and eval counts", () =>
    Effect.gen(function* () {
      const server = yield* loopback([json(200, ollamaReply("Llama says hi."))])
      const llm = yield* make(GenericChatAdapter.ollamaChat, {
        model: "llama3.2",
        baseUrl: server.baseUrl,
        temperature: 0,
        maxTokens: 64,
        extraBody: { options: { num_ctx: 32768 }, keep_alive: "5m" }
      })
      const response = yield* llm.chat(request)
      assert.strictEqual(response.text, "Llama says hi.")
      assert.deepStrictEqual({ ...response.usage }, { inputTokens: 26, outputTokens: 298, totalTokens: 324 })
      const seen = at(server.requests, 0)
      assert.strictEqual(seen.path, "/api/chat")
      assert.isFalse("authorization" in seen.headers)
      assert.deepStrictEqual(seen.json, {
        model: "llama3.2",
        messages: request.messages.map(({ content, role }) => ({ role, content })),
        stream: false,
        options: { temperature: 0, num_predict: 64, num_ctx: 32768 },
        keep_alive: "5m"
      })
    })
  )

  it.scopedLive("a cached prompt (no prompt_eval_count) leaves input and total unknown", () =>
    Effect.gen(function* () {
      const server = yield* loopback([json(200, ollamaReply("cached", false))])
      const llm = yield* make(GenericChatAdapter.ollamaChat, { model: "llama3.2", baseUrl: server.baseUrl })
      const response = yield* llm.chat(request)
      assert.isUndefined(response.usage.inputTokens)
      assert.strictEqual(response.usage.outputTokens, 298)
      assert.isUndefined(response.usage.totalTokens)
      assert.isFalse("options" in (at(server.requests, 0).json as object))
    })
  )

  it.scopedLive("a model that is not pulled is ModelNotFound quoting Ollama; a dropped connection is retried", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(404, { error: 'model "llama9" not found, try pulling it first' }),
        drop,
        json(200, ollamaReply("back"))
      ])
      const llm = yield* make(GenericChatAdapter.ollamaChat, { model: "llama9", baseUrl: server.baseUrl, ...fast })
      const error = yield* Effect.flip(llm.chat(request))
      assert.strictEqual(error.reason, "ModelNotFound")
      assert.include(error.message, "try pulling it first")
      assert.strictEqual((yield* llm.chat(request)).text, "back")
      assert.strictEqual(server.requests.length, 3)
    })
  )

  it.scopedLive("layer provides the LlmAdapter tag, with separate sub options", () =>
    Effect.gen(function* () {
      const server = yield* loopback([json(200, ollamaReply("ok"))])
      const llm = yield* LlmAdapter.pipe(
        Effect.provide(
          GenericChatAdapter.layer(GenericChatAdapter.ollamaChat, {
            model: "llama3.1:70b",
            baseUrl: server.baseUrl,
            sub: { model: "llama3.2:3b" }
          })
        ),
        Effect.provide(FetchHttpClient.layer)
      )
      yield* llm.chat(new ChatRequest({ role: "root", messages: request.messages }))
      yield* llm.chat(request)
      assert.deepStrictEqual(
        server.requests.map((r) => (r.json as { model: string }).model),
        ["llama3.1:70b", "llama3.2:3b"]
      )
    })
  )
})

describe("an adapter configured without a model", () => {
  const completion = (model: string | undefined) => ({
    ...(model !== undefined ? { model } : {}),
    choices: [{ message: { role: "assistant", content: "hi" }, finish_reason: "stop" }]
  })

  it.scopedLive("chat completions: no model field is sent, and the response names the server's model", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(200, completion("qwen2.5-0.5b-instruct-q4_k_m.gguf")),
        json(200, completion(undefined))
      ])
      const llm = yield* make(GenericChatAdapter.openaiChatCompletions(), { baseUrl: `${server.baseUrl}/v1` })
      assert.strictEqual(llm.model("root"), GenericChatAdapter.unnamedModel)
      const first = yield* llm.chat(request)
      assert.strictEqual(first.model, "qwen2.5-0.5b-instruct-q4_k_m.gguf")
      assert.strictEqual(first.finishReason, "stop")
      const second = yield* llm.chat(request)
      assert.strictEqual(second.model, GenericChatAdapter.unnamedModel, "a server that names none")
      for (const r of server.requests) {
        assert.strictEqual(r.path, "/v1/chat/completions")
        assert.isFalse("model" in (r.json as object), "no model field")
      }
    })
  )

  it.scopedLive(
    "a dialect that needs a model (Anthropic, Ollama) fails the call with what to set, sending nothing",
    () =>
      Effect.gen(function* () {
        const server = yield* loopback([json(200, anthropicReply("never"))])
        for (const dialect of [GenericChatAdapter.anthropicMessages, GenericChatAdapter.ollamaChat]) {
          const llm = yield* make(dialect, { baseUrl: server.baseUrl })
          const error = yield* Effect.flip(llm.chat(request))
          assert.strictEqual(error.reason, "BadRequest")
          assert.include(error.message, "needs a model name")
        }
        assert.strictEqual(server.requests.length, 0)
      })
  )
})

describe("dialect request Schemas", () => {
  const input = Schema.Struct({
    model: Schema.String,
    messages: Schema.Array(
      Schema.Struct({ role: Schema.Literal("system", "user", "assistant"), content: Schema.String })
    ),
    temperature: Schema.optionalWith(Schema.Number.pipe(Schema.finite()), { exact: true }),
    maxTokens: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { exact: true })
  })
  const toInput = (i: typeof input.Type) =>
    new GenericChatAdapter.ChatInput({ ...i, messages: i.messages.map((m) => new ChatMessage(m)) })
  const equivalent = Schema.equivalence(GenericChatAdapter.ChatInput)

  for (const dialect of [
    GenericChatAdapter.openaiChatCompletions(),
    GenericChatAdapter.ollamaChat
  ] as ReadonlyArray<GenericChatAdapter.Dialect>) {
    it.prop(`${dialect.name}: decode(encode(input)) = input`, [input], ([i]) => {
      const value = toInput(i)
      const body = Schema.encodeSync(dialect.request)(value)
      const back = Schema.decodeUnknownSync(dialect.request)(JSON.parse(JSON.stringify(body)))
      assert.isTrue(equivalent(back, value))
    })
  }

  it.prop(
    "Anthropic: decode(encode(input)) = input when the only system message comes first",
    [input, FastCheck.option(FastCheck.string(), { nil: undefined })],
    ([i, system]) => {
      const value = toInput({
        ...i,
        maxTokens: i.maxTokens ?? 4096,
        messages: [
          ...(system !== undefined ? [{ role: "system" as const, content: system }] : []),
          ...i.messages.filter((m) => m.role !== "system")
        ]
      })
      const body = Schema.encodeSync(GenericChatAdapter.anthropicMessages.request)(value)
      assert.isFalse(body.messages.some((m) => (m.role as string) === "system"))
      const back = Schema.decodeUnknownSync(GenericChatAdapter.anthropicMessages.request)(
        JSON.parse(JSON.stringify(body))
      )
      assert.isTrue(equivalent(back, value))
    }
  )

  for (const dialect of [
    GenericChatAdapter.openaiChatCompletions(),
    GenericChatAdapter.ollamaChat,
    GenericChatAdapter.anthropicMessages
  ] as ReadonlyArray<GenericChatAdapter.Dialect>) {
    it.prop(
      `${dialect.name}: a reply encoded by the response Schema decodes to the same text`,
      [Schema.String],
      ([text]) => {
        const output = new GenericChatAdapter.ChatOutput({ text, usage: Usage.unknown })
        const wire = Schema.encodeSync(dialect.response)(output)
        const back = Schema.decodeUnknownSync(dialect.response)(JSON.parse(JSON.stringify(wire)))
        assert.strictEqual(back.text, text)
        assert.isUndefined(back.usage.inputTokens)
      }
    )
  }
})

describe("dialect Schemas with tools", () => {
  const toolCall = Schema.Struct({
    id: Schema.String,
    name: Schema.String,
    arguments: Schema.String
  })
  const jsonObject = FastCheck.dictionary(FastCheck.string(), FastCheck.oneof(FastCheck.string(), FastCheck.integer()))
  const input = Schema.Struct({
    model: Schema.String,
    messages: Schema.Array(
      Schema.Union(
        Schema.Struct({ role: Schema.Literal("system", "user", "assistant"), content: Schema.String }),
        Schema.Struct({
          role: Schema.Literal("assistant"),
          content: Schema.String,
          toolCalls: Schema.NonEmptyArray(toolCall)
        }),
        Schema.Struct({ role: Schema.Literal("tool"), content: Schema.String, toolCallId: Schema.String })
      )
    ),
    tools: Schema.Array(
      Schema.Struct({
        name: Schema.String,
        description: Schema.String,
        parameters: Schema.Record({ key: Schema.String, value: Schema.String })
      })
    ),
    toolChoice: ToolChoice
  })
  const equivalent = Schema.equivalence(GenericChatAdapter.ChatInput)

  it.prop("chat completions: decode(encode(input)) = input, tool calls and results included", [input], ([i]) => {
    const value = Schema.decodeUnknownSync(GenericChatAdapter.ChatInput)(i)
    const dialect = GenericChatAdapter.openaiChatCompletions()
    const body = Schema.encodeSync(dialect.request)(value)
    const back = Schema.decodeUnknownSync(dialect.request)(JSON.parse(JSON.stringify(body)))
    assert.isTrue(equivalent(back, value))
  })

  for (const [dialect, keepsIds] of [
    [GenericChatAdapter.openaiChatCompletions(), true],
    [GenericChatAdapter.anthropicMessages, true],
    [GenericChatAdapter.ollamaChat, false]
  ] as ReadonlyArray<readonly [GenericChatAdapter.Dialect, boolean]>) {
    it.prop(
      `${dialect.name}: a reply's tool calls survive encode and decode`,
      [FastCheck.array(FastCheck.record({ id: FastCheck.string(), name: FastCheck.string(), args: jsonObject }))],
      ([calls]) => {
        const toolCalls = calls.map((c) => new ToolCall({ id: c.id, name: c.name, arguments: JSON.stringify(c.args) }))
        const output = new GenericChatAdapter.ChatOutput({
          text: "",
          usage: Usage.unknown,
          ...(toolCalls.length > 0 ? { toolCalls, finishReason: "tool-calls" as const } : {})
        })
        const wire = Schema.encodeSync(dialect.response)(output)
        const back = Schema.decodeUnknownSync(dialect.response)(JSON.parse(JSON.stringify(wire)))
        const read = back.toolCalls ?? []
        assert.deepStrictEqual(
          read.map((c) => [c.name, JSON.parse(c.arguments)]),
          calls.map((c) => [c.name, c.args])
        )
        if (keepsIds) {
          assert.deepStrictEqual(
            read.map((c) => c.id),
            calls.map((c) => c.id)
          )
        }
      }
    )
  }
})

describe("dialect response Schemas keep the finish reason and usage", () => {
  const counts = FastCheck.record(
    {
      input: FastCheck.integer({ min: 100, max: 10_000 }),
      output: FastCheck.integer({ min: 0, max: 10_000 }),
      cached: FastCheck.integer({ min: 0, max: 100 })
    },
    { requiredKeys: ["input", "output"] }
  )
  for (const [dialect, cachedKept] of [
    [GenericChatAdapter.openaiChatCompletions(), true],
    [GenericChatAdapter.anthropicMessages, true],
    [GenericChatAdapter.ollamaChat, false]
  ] as ReadonlyArray<readonly [GenericChatAdapter.Dialect, boolean]>) {
    it.prop(
      `${dialect.name}: decode(encode(output)) keeps stop/length and the token counts`,
      [FastCheck.constantFrom("stop" as const, "length" as const), counts],
      ([finishReason, c]) => {
        const usage = new Usage({
          inputTokens: c.input,
          outputTokens: c.output,
          totalTokens: c.input + c.output,
          ...(cachedKept && c.cached !== undefined ? { cachedInputTokens: c.cached } : {})
        })
        const output = new GenericChatAdapter.ChatOutput({ text: "t", usage, finishReason })
        const wire = Schema.encodeSync(dialect.response)(output)
        const back = Schema.decodeUnknownSync(dialect.response)(JSON.parse(JSON.stringify(wire)))
        assert.strictEqual(back.finishReason, finishReason)
        assert.deepStrictEqual({ ...back.usage }, { ...usage })
      }
    )
  }
})

describe("a custom dialect (the one in docs/adapters.md)", () => {
  const Body = Schema.Struct({
    model: Schema.String,
    prompt: Schema.Array(Schema.Struct({ role: Schema.String, content: Schema.String }))
  })
  const Reply = Schema.Struct({
    output: Schema.String,
    tokens: Schema.Struct({ in: Schema.Number, out: Schema.Number })
  })
  const myDialect: GenericChatAdapter.Dialect = {
    name: "My server",
    path: "/generate",
    defaultBaseUrl: "http://localhost:9000",
    auth: { header: "authorization", prefix: "Bearer " },
    env: { apiKey: ["LLM_API_KEY"], baseUrl: ["LLM_BASE_URL"] },
    request: Schema.transform(Body, GenericChatAdapter.ChatInput, {
      strict: false,
      decode: (b) => ({ model: b.model, messages: b.prompt }),
      encode: (i) => ({ model: i.model, prompt: i.messages })
    }),
    response: Schema.transform(Reply, GenericChatAdapter.ChatOutput, {
      strict: false,
      decode: (r) => ({ text: r.output, usage: { inputTokens: r.tokens.in, outputTokens: r.tokens.out } }),
      encode: (o) => ({ output: o.text, tokens: { in: o.usage.inputTokens ?? 0, out: o.usage.outputTokens ?? 0 } })
    })
  }

  it.scopedLive("is configured, not coded: body, key header and reply all follow the Schemas", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(200, { output: "custom!", tokens: { in: 7, out: 2 } }),
        json(200, { wrong: 1 })
      ])
      const llm = yield* LlmAdapter.pipe(
        Effect.provide(GenericChatAdapter.layerConfig(myDialect, { model: "mine" })),
        Effect.provide(FetchHttpClient.layer),
        Effect.withConfigProvider(
          ConfigProvider.fromMap(
            new Map([
              ["LLM_API_KEY", "k-1"],
              ["LLM_BASE_URL", server.baseUrl]
            ])
          )
        )
      )
      const response = yield* llm.chat(request)
      assert.strictEqual(response.text, "custom!")
      assert.strictEqual(response.usage.inputTokens, 7)
      const seen = at(server.requests, 0)
      assert.strictEqual(seen.path, "/generate")
      assert.strictEqual(seen.headers.authorization, "Bearer k-1")
      assert.deepStrictEqual(seen.json, {
        model: "mine",
        prompt: request.messages.map(({ content, role }) => ({ role, content }))
      })
      const error = yield* Effect.flip(llm.chat(request))
      assert.strictEqual(error.reason, "MalformedResponse")
      assert.include(error.message, '["output"]')
      assert.include(error.message, "is missing")
    })
  )
})
