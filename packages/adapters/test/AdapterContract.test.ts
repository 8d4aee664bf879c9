/**
 * The adapter contract: one table of cases run against every HTTP adapter
 * (the OpenAI-compatible one, and each `GenericChatAdapter` dialect) and every
 * server shape that adapter can meet — llama.cpp's `llama-server`, vLLM,
 * Ollama (its `/v1` and its native `/api/chat`), OpenAI and Anthropic — each
 * a loopback server answering as that server does.
 *
 * For each adapter × server shape: the output cap is sent in the right field
 * (the lower of `maxTokens` and the request's `maxOutputTokens`), usage is
 * mapped, a length stop is surfaced as `finishReason: "length"`, 429 (with
 * `Retry-After`), 5xx, a timeout and a non-JSON body become the right typed
 * `LlmError`, and the API key is in no error. With tools: the tools and the
 * tool choice are sent in the provider's field, the assistant's tool calls
 * and the tool results of the history in the provider's shape, the reply's
 * tool calls are read back, and a broken tool call (arguments that are not
 * JSON, a tool nobody defined) is surfaced as data, not thrown.
 */

import { FetchHttpClient } from "@effect/platform"
import type * as HttpClient from "@effect/platform/HttpClient"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Duration, Effect, Either, Redacted, Schema } from "effect"
import * as GenericChatAdapter from "../src/GenericChatAdapter.js"
import {
  ChatMessage,
  ChatRequest,
  decodeArguments,
  type LlmAdapter,
  LlmError,
  ToolCall,
  ToolDefinition
} from "../src/LlmAdapter.js"
import * as OpenAICompatAdapter from "../src/OpenAICompatAdapter.js"
import { at, type Handler, hang, json, loopback, text } from "./utils/loopback.js"

// -----------------------------------------------------------------------------
// Server shapes
// -----------------------------------------------------------------------------

type Finish = "stop" | "length"

interface ServerShape {
  readonly name: string
  /** A successful reply; `content: null` stands for "no text at all". */
  readonly reply: (content: string | null, finish: Finish) => unknown
  /** The usage the adapter must read out of `reply`. */
  readonly usage: Readonly<Record<string, number>>
  /** What the server puts in the body of an error status. */
  readonly error: (status: number, message: string) => unknown
  /** How this server writes a reply that holds no text (for an empty length stop). */
  readonly empty: string | null
  /** A reply made of tool calls only (`args`: the arguments as JSON text). */
  readonly toolReply: (calls: ReadonlyArray<WireCall>) => unknown
  /** The finish reason a tool-call reply maps to (Ollama says "stop"). */
  readonly toolFinish: string
  /** A broken tool call as this server can send one, and how it must be surfaced. */
  readonly garbage: { readonly reply: unknown; readonly call: { readonly name: string; readonly arguments: string } }
}

interface WireCall {
  readonly id: string
  readonly name: string
  readonly args: string
}

// --- tool calls, per wire format ----------------------------------------------

const chatCompletionsTools = (model: string, nullContent: boolean) => ({
  toolReply: (calls: ReadonlyArray<WireCall>) => ({
    id: "chatcmpl-tools",
    object: "chat.completion",
    model,
    choices: [
      {
        index: 0,
        message: {
          role: "assistant",
          content: nullContent ? null : "",
          tool_calls: calls.map((call) => ({
            id: call.id,
            type: "function",
            function: { name: call.name, arguments: call.args }
          }))
        },
        finish_reason: "tool_calls"
      }
    ],
    usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 }
  }),
  toolFinish: "tool-calls",
  // A small model's broken JSON, sent as the arguments string.
  garbage: {
    reply: {
      choices: [
        {
          index: 0,
          message: {
            role: "assistant",
            content: null,
            tool_calls: [
              { id: "call_x", type: "function", function: { name: "run_code", arguments: "{code: print(1)" } }
            ]
          },
          finish_reason: "tool_calls"
        }
      ]
    },
    call: { name: "run_code", arguments: "{code: print(1)" }
  }
})

// --- chat completions servers -------------------------------------------------

/**
 * llama.cpp's `llama-server` (`/v1/chat/completions`, llama.cpp 80fb11a as in
 * ../shared/real-llama-server): `usage` (with `prompt_tokens_details` in
 * recent builds), `timings` (`prompt_n` evaluated + `cache_n` reused =
 * `prompt_tokens`), errors as `{ error: { code, message, type } }`.
 */
const llamaServer = (variant: "current" | "no-details" | "timings-only"): ServerShape => ({
  name:
    variant === "current"
      ? "llama-server"
      : variant === "no-details"
        ? "llama-server (usage without prompt_tokens_details)"
        : "llama-server (no usage: timings only)",
  reply: (content, finish) => ({
    choices: [{ finish_reason: finish, index: 0, message: { role: "assistant", content: content ?? "" } }],
    created: 1760000000,
    model: "qwen2.5-0.5b-instruct-q4_k_m.gguf",
    system_fingerprint: "b1-80fb11a",
    object: "chat.completion",
    ...(variant === "timings-only"
      ? {}
      : {
          usage: {
            completion_tokens: 64,
            prompt_tokens: 120,
            total_tokens: 184,
            ...(variant === "current" ? { prompt_tokens_details: { cached_tokens: 100 } } : {})
          }
        }),
    id: "chatcmpl-2b1X2pQ8mM0xXfJ6bbSgk4lO0t7kQ0qT",
    timings: {
      cache_n: 100,
      prompt_n: 20,
      prompt_ms: 35.1,
      prompt_per_token_ms: 1.75,
      prompt_per_second: 569.8,
      predicted_n: 64,
      predicted_ms: 152.4,
      predicted_per_token_ms: 2.38,
      predicted_per_second: 419.9
    }
  }),
  usage: { inputTokens: 120, outputTokens: 64, totalTokens: 184, cachedInputTokens: 100 },
  error: (status, message) => ({
    error: { code: status, message, type: status === 429 ? "unavailable_error" : "server_error" }
  }),
  empty: "",
  // llama-server writes content null beside tool calls.
  ...chatCompletionsTools("qwen2.5-0.5b-instruct-q4_k_m.gguf", true)
})

/** vLLM's OpenAI-compatible server: `stop_reason`, `reasoning_content`, `prompt_tokens_details: null`. */
const vllm: ServerShape = {
  name: "vLLM",
  reply: (content, finish) => ({
    id: "chatcmpl-8d2a0f6c5e3b4a1f9e7d6c5b4a3f2e1d",
    object: "chat.completion",
    created: 1760000000,
    model: "meta-llama/Llama-3.1-8B-Instruct",
    choices: [
      {
        index: 0,
        message: { role: "assistant", reasoning_content: null, content: content ?? "", tool_calls: [] },
        logprobs: null,
        finish_reason: finish,
        stop_reason: null
      }
    ],
    usage: { prompt_tokens: 37, total_tokens: 101, completion_tokens: 64, prompt_tokens_details: null },
    prompt_logprobs: null,
    kv_transfer_params: null
  }),
  usage: { inputTokens: 37, outputTokens: 64, totalTokens: 101 },
  error: (status, message) => ({ object: "error", message, type: "BadRequestError", param: null, code: status }),
  empty: "",
  ...chatCompletionsTools("meta-llama/Llama-3.1-8B-Instruct", false)
}

/** Ollama's OpenAI-compatible `/v1/chat/completions`. */
const ollamaV1: ServerShape = {
  name: "Ollama /v1",
  reply: (content, finish) => ({
    id: "chatcmpl-412",
    object: "chat.completion",
    created: 1760000000,
    model: "llama3.1",
    system_fingerprint: "fp_ollama",
    choices: [{ index: 0, message: { role: "assistant", content: content ?? "" }, finish_reason: finish }],
    usage: { prompt_tokens: 26, completion_tokens: 64, total_tokens: 90 }
  }),
  usage: { inputTokens: 26, outputTokens: 64, totalTokens: 90 },
  error: (_, message) => ({ error: { message, type: "api_error", param: null, code: null } }),
  empty: "",
  ...chatCompletionsTools("llama3.1", false)
}

/** OpenAI's own API, with or without the usage details, or with no usage at all. */
const openAi = (variant: "details" | "no-details" | "no-usage"): ServerShape => ({
  name:
    variant === "details"
      ? "OpenAI (cached and reasoning token details)"
      : variant === "no-details"
        ? "OpenAI (usage without details)"
        : "OpenAI-compatible proxy (no usage)",
  reply: (content, finish) => ({
    id: "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    object: "chat.completion",
    created: 1741569952,
    model: "o4-mini-2025-04-16",
    choices: [
      {
        index: 0,
        message: { role: "assistant", content, refusal: null, annotations: [] },
        logprobs: null,
        finish_reason: finish
      }
    ],
    ...(variant === "no-usage"
      ? {}
      : {
          usage: {
            prompt_tokens: 2006,
            completion_tokens: 300,
            total_tokens: 2306,
            ...(variant === "details"
              ? {
                  prompt_tokens_details: { cached_tokens: 1920, audio_tokens: 0 },
                  completion_tokens_details: {
                    reasoning_tokens: 192,
                    audio_tokens: 0,
                    accepted_prediction_tokens: 0,
                    rejected_prediction_tokens: 0
                  }
                }
              : {})
          }
        }),
    service_tier: "default"
  }),
  usage:
    variant === "no-usage"
      ? {}
      : variant === "details"
        ? { inputTokens: 2006, outputTokens: 300, totalTokens: 2306, cachedInputTokens: 1920, reasoningTokens: 192 }
        : { inputTokens: 2006, outputTokens: 300, totalTokens: 2306 },
  error: (status, message) => ({
    error: { message, type: status === 429 ? "requests" : "server_error", param: null, code: null }
  }),
  // A reasoning model that spends the whole cap thinking answers with content null.
  empty: null,
  ...chatCompletionsTools("o4-mini-2025-04-16", true)
})

// --- Anthropic and Ollama native --------------------------------------------

const anthropic = (variant: "cache" | "plain"): ServerShape => ({
  name: variant === "cache" ? "Anthropic (prompt cache fields)" : "Anthropic",
  reply: (content, finish) => ({
    id: "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    type: "message",
    role: "assistant",
    model: "claude-sonnet-4-20250514",
    content: content === null || content === "" ? [] : [{ type: "text", text: content }],
    stop_reason: finish === "length" ? "max_tokens" : "end_turn",
    stop_sequence: null,
    usage:
      variant === "cache"
        ? { input_tokens: 50, output_tokens: 64, cache_creation_input_tokens: 10, cache_read_input_tokens: 2000 }
        : { input_tokens: 50, output_tokens: 64 }
  }),
  usage:
    variant === "cache"
      ? { inputTokens: 2060, outputTokens: 64, totalTokens: 2124, cachedInputTokens: 2000 }
      : { inputTokens: 50, outputTokens: 64, totalTokens: 114 },
  error: (status, message) => ({
    type: "error",
    error: { type: status === 429 ? "rate_limit_error" : status === 529 ? "overloaded_error" : "api_error", message }
  }),
  empty: null,
  toolReply: (calls) => ({
    id: "msg_tools",
    type: "message",
    role: "assistant",
    model: "claude-sonnet-4-20250514",
    content: calls.map((call) => ({ type: "tool_use", id: call.id, name: call.name, input: JSON.parse(call.args) })),
    stop_reason: "tool_use",
    usage: { input_tokens: 10, output_tokens: 5 }
  }),
  toolFinish: "tool-calls",
  // Anthropic always sends `input` as an object; what can be broken is the name.
  garbage: {
    reply: {
      content: [
        { type: "text", text: "Let me look." },
        { type: "tool_use", id: "toolu_x", name: "bash", input: { cmd: "ls" } }
      ],
      stop_reason: "tool_use"
    },
    call: { name: "bash", arguments: '{"cmd":"ls"}' }
  }
})

const ollamaNative = (variant: "counts" | "cached"): ServerShape => ({
  name: variant === "counts" ? "Ollama /api/chat" : "Ollama /api/chat (cached prompt: no prompt_eval_count)",
  reply: (content, finish) => ({
    model: "llama3.1",
    created_at: "2025-10-09T14:13:43.416799Z",
    message: { role: "assistant", content: content ?? "" },
    done_reason: finish,
    done: true,
    total_duration: 5191566416,
    load_duration: 2154458,
    ...(variant === "counts" ? { prompt_eval_count: 26, prompt_eval_duration: 383809000 } : {}),
    eval_count: 64,
    eval_duration: 4799921000
  }),
  usage: variant === "counts" ? { inputTokens: 26, outputTokens: 64, totalTokens: 90 } : { outputTokens: 64 },
  error: (_, message) => ({ error: message }),
  empty: "",
  toolReply: (calls) => ({
    model: "llama3.1",
    message: {
      role: "assistant",
      content: "",
      tool_calls: calls.map((call) => ({ function: { name: call.name, arguments: JSON.parse(call.args) } }))
    },
    done_reason: "stop",
    done: true,
    eval_count: 5
  }),
  toolFinish: "stop",
  // A server in Ollama's shape that passes the model's text through as a string.
  garbage: {
    reply: {
      message: {
        role: "assistant",
        content: "",
        tool_calls: [{ function: { name: "run_code", arguments: "{code: 1" } }]
      },
      done: true
    },
    call: { name: "run_code", arguments: "{code: 1" }
  }
})

// -----------------------------------------------------------------------------
// Adapters
// -----------------------------------------------------------------------------

type Body = Record<string, unknown>

interface AdapterSpec {
  readonly name: string
  readonly make: (
    serverUrl: string,
    options: Partial<GenericChatAdapter.Options>
  ) => Effect.Effect<LlmAdapter.Service, never, HttpClient.HttpClient>
  /** The request path the adapter must POST to. */
  readonly path: string
  /** Where the cap must be in the body. */
  readonly cap: (body: Body) => unknown
  /** Cap fields that must not be in the body. */
  readonly notSent: (body: Body) => ReadonlyArray<unknown>
  /** The cap sent when neither the options nor the request give one. */
  readonly defaultCap: number | undefined
  readonly auth: (key: string) => readonly [header: string, value: string]
  readonly servers: ReadonlyArray<ServerShape>
  /** The tools as sent: name, description and JSON Schema parameters, read out of the body. */
  readonly tools: (body: Body) => unknown
  /** What `toolChoice: { tool: "final_answer" }` is sent as (`undefined`: the provider has none). */
  readonly toolChoice: { readonly read: (body: Body) => unknown; readonly expected: unknown }
  /** The body's messages after a tool-call turn, in the provider's shape. */
  readonly history: unknown
  /** Whether ids of calls survive (Ollama has none, the adapter makes them). */
  readonly ids: boolean
}

const functionToolsOf = (body: Body) =>
  (body.tools as ReadonlyArray<{ type: string; function: Record<string, unknown> }>).map((tool) => ({
    type: tool.type,
    ...tool.function
  }))

const openAiHistory = [
  { role: "system", content: "You are an RLM." },
  { role: "user", content: "What is in P?" },
  {
    role: "assistant",
    content: null,
    tool_calls: [{ id: "call_1", type: "function", function: { name: "run_code", arguments: '{"code":"print(1)"}' } }]
  },
  { role: "tool", tool_call_id: "call_1", content: "REPL output:\n1" },
  { role: "user", content: "Go on." }
]

const openAiTools = {
  tools: functionToolsOf,
  toolChoice: {
    read: (body: Body) => body.tool_choice,
    expected: { type: "function", function: { name: "final_answer" } }
  },
  history: openAiHistory,
  ids: true
}

const chatCompletionServers = [
  llamaServer("current"),
  llamaServer("no-details"),
  llamaServer("timings-only"),
  vllm,
  ollamaV1,
  openAi("details"),
  openAi("no-details"),
  openAi("no-usage")
]

const bearer = (key: string) => ["authorization", `Bearer ${key}`] as const

const adapters: ReadonlyArray<AdapterSpec> = [
  {
    name: "OpenAICompatAdapter (maxTokensField auto)",
    make: (url, options) => OpenAICompatAdapter.make({ model: "m", ...options, baseUrl: `${url}/v1` }),
    path: "/v1/chat/completions",
    cap: (body) => body.max_tokens,
    notSent: (body) => [body.max_completion_tokens],
    defaultCap: undefined,
    auth: bearer,
    servers: chatCompletionServers,
    ...openAiTools
  },
  {
    name: "OpenAICompatAdapter (maxTokensField max_completion_tokens)",
    make: (url, options) =>
      OpenAICompatAdapter.make({
        model: "m",
        ...options,
        baseUrl: `${url}/v1`,
        maxTokensField: "max_completion_tokens"
      }),
    path: "/v1/chat/completions",
    cap: (body) => body.max_completion_tokens,
    notSent: (body) => [body.max_tokens],
    defaultCap: undefined,
    auth: bearer,
    servers: [vllm, openAi("details"), openAi("no-usage")],
    ...openAiTools
  },
  {
    name: "GenericChatAdapter.openaiChatCompletions",
    make: (url, options) =>
      GenericChatAdapter.make(GenericChatAdapter.openaiChatCompletions(), { model: "m", ...options, baseUrl: url }),
    path: "/chat/completions",
    cap: (body) => body.max_tokens,
    notSent: (body) => [body.max_completion_tokens],
    defaultCap: undefined,
    auth: bearer,
    servers: chatCompletionServers,
    ...openAiTools
  },
  {
    name: "GenericChatAdapter.anthropicMessages",
    make: (url, options) =>
      GenericChatAdapter.make(GenericChatAdapter.anthropicMessages, { model: "m", ...options, baseUrl: url }),
    path: "/v1/messages",
    cap: (body) => body.max_tokens,
    notSent: () => [],
    defaultCap: GenericChatAdapter.anthropicDefaultMaxTokens,
    auth: (key) => ["x-api-key", key],
    servers: [anthropic("cache"), anthropic("plain")],
    tools: (body) =>
      (body.tools as ReadonlyArray<Record<string, unknown>>).map(({ input_schema, ...rest }) => ({
        type: "function",
        ...rest,
        parameters: input_schema
      })),
    toolChoice: { read: (body) => body.tool_choice, expected: { type: "tool", name: "final_answer" } },
    history: [
      { role: "user", content: "What is in P?" },
      {
        role: "assistant",
        content: [{ type: "tool_use", id: "call_1", name: "run_code", input: { code: "print(1)" } }]
      },
      // The tool result and the next user turn are one user message.
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "call_1", content: "REPL output:\n1" },
          { type: "text", text: "Go on." }
        ]
      }
    ],
    ids: true
  },
  {
    name: "GenericChatAdapter.ollamaChat",
    make: (url, options) =>
      GenericChatAdapter.make(GenericChatAdapter.ollamaChat, { model: "m", ...options, baseUrl: url }),
    path: "/api/chat",
    cap: (body) => (body.options as Body | undefined)?.num_predict,
    notSent: (body) => [body.max_tokens, body.max_completion_tokens],
    defaultCap: undefined,
    auth: bearer,
    servers: [ollamaNative("counts"), ollamaNative("cached")],
    tools: functionToolsOf,
    toolChoice: { read: (body) => body.tool_choice, expected: undefined },
    history: [
      { role: "system", content: "You are an RLM." },
      { role: "user", content: "What is in P?" },
      {
        role: "assistant",
        content: "",
        tool_calls: [{ function: { name: "run_code", arguments: { code: "print(1)" } } }]
      },
      { role: "tool", content: "REPL output:\n1", tool_name: "run_code" },
      { role: "user", content: "Go on." }
    ],
    ids: false
  }
]

const toolDefinitions = [
  new ToolDefinition({
    name: "run_code",
    description: "Run code in the REPL.",
    parameters: { type: "object", properties: { code: { type: "string" } }, required: ["code"] }
  }),
  new ToolDefinition({
    name: "final_answer",
    description: "Answer.",
    parameters: { type: "object", properties: { answer: { type: "string" } } }
  })
]

const toolRequest = (history = false) =>
  new ChatRequest({
    role: "root",
    messages: [
      new ChatMessage({ role: "system", content: "You are an RLM." }),
      new ChatMessage({ role: "user", content: "What is in P?" }),
      ...(history
        ? [
            new ChatMessage({
              role: "assistant",
              content: "",
              toolCalls: [new ToolCall({ id: "call_1", name: "run_code", arguments: '{"code":"print(1)"}' })]
            }),
            new ChatMessage({ role: "tool", content: "REPL output:\n1", toolCallId: "call_1", toolName: "run_code" }),
            new ChatMessage({ role: "user", content: "Go on." })
          ]
        : [])
    ],
    maxOutputTokens: 64,
    tools: toolDefinitions,
    toolChoice: { tool: "final_answer" }
  })

// -----------------------------------------------------------------------------
// The cases
// -----------------------------------------------------------------------------

const KEY = "sk-contract-7f3a9c1e5b2d4f6a8c0e"

const request = (maxOutputTokens?: number) =>
  new ChatRequest({
    role: "root",
    messages: [
      new ChatMessage({ role: "system", content: "You are an RLM." }),
      new ChatMessage({ role: "user", content: "What is in P?" })
    ],
    ...(maxOutputTokens !== undefined ? { maxOutputTokens } : {})
  })

const fast = {
  apiKey: Redacted.make(KEY),
  retryBaseDelay: Duration.millis(1),
  retryMaxDelay: Duration.millis(5),
  maxRetries: 1
} satisfies Partial<GenericChatAdapter.Options>

/** Every way an error can be shown: message, JSON, `String`, a pretty `Cause`, the encoded Schema value. */
const renderings = (error: LlmError): ReadonlyArray<string> => [
  error.message,
  String(error),
  JSON.stringify(error),
  JSON.stringify(Schema.encodeSync(LlmError)(error)),
  Cause.pretty(Cause.fail(error))
]

const assertNoKey = (error: LlmError) => {
  for (const shown of renderings(error)) assert.notInclude(shown, KEY)
}

type Server = Effect.Effect.Success<ReturnType<typeof loopback>>

const bodies = (requests: ReadonlyArray<{ readonly json: unknown }>) => requests.map((r) => r.json as Body)

describe("adapter contract", () => {
  for (const adapter of adapters) {
    for (const shape of adapter.servers) {
      describe(`${adapter.name} × ${shape.name}`, () => {
        const ok = (content: string | null = "The answer.", finish: Finish = "stop") =>
          json(200, shape.reply(content, finish))
        const withServer = <A, E>(
          handlers: ReadonlyArray<Handler>,
          options: Partial<GenericChatAdapter.Options>,
          use: (llm: LlmAdapter.Service, server: Server) => Effect.Effect<A, E>
        ) =>
          Effect.gen(function* () {
            const server = yield* loopback(handlers)
            const llm = yield* adapter
              .make(server.baseUrl, { ...fast, ...options })
              .pipe(Effect.provide(FetchHttpClient.layer))
            return yield* use(llm, server)
          })

        it.scopedLive(
          "sends the cap in its field: the lower of maxTokens and the request's, whole, or the default",
          () =>
            withServer([ok()], {}, (llm, server) =>
              Effect.gen(function* () {
                yield* llm.chat(request(64))
                yield* llm.chat(request(10.7))
                yield* llm.chat(request())
                const configured = yield* adapter
                  .make(server.baseUrl, { ...fast, maxTokens: 32 })
                  .pipe(Effect.provide(FetchHttpClient.layer))
                yield* configured.chat(request(64))
                yield* configured.chat(request(20))
                yield* configured.chat(request())
                const sent = bodies(server.requests)
                assert.deepStrictEqual(sent.map(adapter.cap), [64, 10, adapter.defaultCap, 32, 20, 32])
                for (const body of sent) {
                  for (const other of adapter.notSent(body)) assert.isUndefined(other)
                }
                const first = at(server.requests, 0)
                assert.strictEqual(first.path, adapter.path)
                const [header, value] = adapter.auth(KEY)
                assert.strictEqual(first.headers[header], value)
              })
            )
        )

        it.scopedLive("maps the reply's text, usage, finish reason and the model the server names", () =>
          withServer([ok("The answer.", "stop")], {}, (llm) =>
            Effect.gen(function* () {
              const response = yield* llm.chat(request(64))
              assert.strictEqual(response.text, "The answer.")
              // The name the server reports (llama-server: the file it loaded), not the one configured.
              const reported = (shape.reply("The answer.", "stop") as { readonly model?: string }).model
              assert.isDefined(reported)
              assert.strictEqual(response.model, reported)
              assert.strictEqual(llm.model("root"), "m")
              assert.strictEqual(response.finishReason, "stop")
              const usage = Object.fromEntries(Object.entries({ ...response.usage }).filter(([, v]) => v !== undefined))
              assert.deepStrictEqual(usage, shape.usage)
            })
          )
        )

        it.scopedLive("surfaces a length stop, also one that produced no text", () =>
          withServer([ok("The answer is cut", "length"), ok(shape.empty, "length")], {}, (llm) =>
            Effect.gen(function* () {
              const cut = yield* llm.chat(request(64))
              assert.strictEqual(cut.text, "The answer is cut")
              assert.strictEqual(cut.finishReason, "length")
              // The tokens of an empty length stop were spent: it is a reply whose usage counts, not an error.
              const empty = yield* llm.chat(request(64))
              assert.strictEqual(empty.text, "")
              assert.strictEqual(empty.finishReason, "length")
              assert.strictEqual(empty.usage.outputTokens, shape.usage.outputTokens)
            })
          )
        )

        it.scopedLive("429 honours Retry-After: retried after it, or failed at once when it is too long", () =>
          withServer(
            [
              json(429, shape.error(429, `Rate limit reached for key ${KEY}`), { "retry-after": "0" }),
              ok("after the wait"),
              json(429, shape.error(429, "Rate limit reached"), { "retry-after": "3600" })
            ],
            { maxRetryAfter: Duration.seconds(60) },
            (llm, server) =>
              Effect.gen(function* () {
                const response = yield* llm.chat(request(64))
                assert.strictEqual(response.text, "after the wait")
                const error = yield* Effect.flip(llm.chat(request(64)))
                assert.instanceOf(error, LlmError)
                assert.strictEqual(error.reason, "RateLimited")
                assert.strictEqual(error.status, 429)
                assert.include(error.message, "asked to wait 3600 s")
                assert.strictEqual(server.requests.length, 3)
                assertNoKey(error)
              })
          )
        )

        it.scopedLive("5xx is a retried ServerError quoting the server, without the key", () =>
          withServer(
            [
              json(503, shape.error(503, "Loading model")),
              ok("recovered"),
              json(500, shape.error(500, `internal error for key ${KEY}`))
            ],
            {},
            (llm, server) =>
              Effect.gen(function* () {
                assert.strictEqual((yield* llm.chat(request(64))).text, "recovered")
                const error = yield* Effect.flip(llm.chat(request(64)))
                assert.strictEqual(error.reason, "ServerError")
                assert.strictEqual(error.status, 500)
                assert.isTrue(error.retryable)
                assert.include(error.message, "internal error for key <redacted>")
                assert.include(error.message, "2 attempts")
                assert.strictEqual(server.requests.length, 4)
                assertNoKey(error)
              })
          )
        )

        it.scopedLive("a server that does not answer in time is a Timeout", () =>
          withServer([hang], { timeout: Duration.millis(150), maxRetries: 0 }, (llm) =>
            Effect.gen(function* () {
              const error = yield* Effect.flip(llm.chat(request(64)))
              assert.strictEqual(error.reason, "Timeout")
              assert.isTrue(error.retryable)
              assert.include(error.message, "150 ms")
              assertNoKey(error)
            })
          )
        )

        it.scopedLive("a 2xx body that is not JSON, or not this server's shape, is MalformedResponse", () =>
          withServer(
            [
              text(200, `<html><body>Proxy login for ${KEY}</body></html>`, { "content-type": "text/html" }),
              json(200, { unexpected: true })
            ],
            {},
            (llm, server) =>
              Effect.gen(function* () {
                const notJson = yield* Effect.flip(llm.chat(request(64)))
                assert.strictEqual(notJson.reason, "MalformedResponse")
                assert.include(notJson.message, "not JSON")
                assert.isFalse(notJson.retryable)
                assertNoKey(notJson)
                const wrongShape = yield* Effect.flip(llm.chat(request(64)))
                assert.strictEqual(wrongShape.reason, "MalformedResponse")
                assert.strictEqual(server.requests.length, 2)
              })
          )
        )

        it.scopedLive("a rejected key is Unauthorized, not retried, and the echoed key is cut out", () =>
          withServer([json(401, shape.error(401, `Incorrect API key provided: ${KEY}.`))], {}, (llm, server) =>
            Effect.gen(function* () {
              const error = yield* Effect.flip(llm.chat(request(64)))
              assert.strictEqual(error.reason, "Unauthorized")
              assert.strictEqual(error.status, 401)
              assert.include(error.message, "Incorrect API key provided: <redacted>.")
              assert.strictEqual(server.requests.length, 1)
              assertNoKey(error)
            })
          )
        )

        it.scopedLive("sends the tools and the tool choice in its fields, and reads the tool calls back", () =>
          withServer(
            [
              json(
                200,
                shape.toolReply([
                  { id: "call_a", name: "run_code", args: '{"code":"print(len(P))"}' },
                  { id: "call_b", name: "final_answer", args: '{"answer":"42"}' }
                ])
              ),
              ok()
            ],
            {},
            (llm, server) =>
              Effect.gen(function* () {
                const response = yield* llm.chat(toolRequest())
                assert.strictEqual(response.text, "")
                assert.strictEqual(response.finishReason, shape.toolFinish)
                const calls = response.toolCalls ?? []
                assert.deepStrictEqual(
                  calls.map((call) => ({ name: call.name, args: decodeArguments(call) })),
                  [
                    { name: "run_code", args: Either.right({ code: "print(len(P))" }) },
                    { name: "final_answer", args: Either.right({ answer: "42" }) }
                  ]
                )
                if (adapter.ids)
                  assert.deepStrictEqual(
                    calls.map((call) => call.id),
                    ["call_a", "call_b"]
                  )
                else assert.strictEqual(new Set(calls.map((call) => call.id)).size, 2)
                const body = at(server.requests, 0).json as Body
                assert.deepStrictEqual(
                  adapter.tools(body),
                  toolDefinitions.map((tool) => ({
                    type: "function",
                    name: tool.name,
                    description: tool.description,
                    parameters: tool.parameters
                  }))
                )
                assert.deepStrictEqual(adapter.toolChoice.read(body), adapter.toolChoice.expected)
                // A request without tools sends no tool fields at all.
                yield* llm.chat(request(64))
                const plain = at(server.requests, 1).json as Body
                assert.isUndefined(plain.tools)
                assert.isUndefined(plain.tool_choice)
              })
          )
        )

        it.scopedLive("sends the assistant's tool calls and the tool results in the provider's shape", () =>
          withServer([ok()], {}, (llm, server) =>
            Effect.gen(function* () {
              yield* llm.chat(toolRequest(true))
              const body = at(server.requests, 0).json as Body
              assert.deepStrictEqual(body.messages, adapter.history)
            })
          )
        )

        it.scopedLive("a broken tool call is surfaced as data, not thrown", () =>
          withServer([json(200, shape.garbage.reply)], {}, (llm) =>
            Effect.gen(function* () {
              const response = yield* llm.chat(toolRequest())
              const calls = response.toolCalls ?? []
              assert.strictEqual(calls.length, 1)
              const call = calls[0] as ToolCall
              assert.strictEqual(call.name, shape.garbage.call.name)
              assert.strictEqual(call.arguments, shape.garbage.call.arguments)
              const decoded = decodeArguments(call)
              if (shape.garbage.call.name === "run_code") {
                assert.isTrue(Either.isLeft(decoded))
                assert.include(Either.isLeft(decoded) ? decoded.left : "", "not JSON")
              }
            })
          )
        )
      })
    }
  }
})

describe("maxTokensField auto", () => {
  it("is max_completion_tokens for OpenAI's own API and max_tokens elsewhere", () => {
    assert.strictEqual(GenericChatAdapter.maxTokensFieldFor("https://api.openai.com/v1"), "max_completion_tokens")
    assert.strictEqual(GenericChatAdapter.maxTokensFieldFor("https://API.OpenAI.com/v1/"), "max_completion_tokens")
    for (const url of [
      "http://localhost:8080/v1",
      "http://127.0.0.1:8000/v1",
      "http://localhost:11434/v1",
      "https://openrouter.ai/api/v1",
      "not a url"
    ]) {
      assert.strictEqual(GenericChatAdapter.maxTokensFieldFor(url), "max_tokens")
    }
  })

  it("the dialect specialised for api.openai.com encodes the cap as max_completion_tokens", () => {
    const input = new GenericChatAdapter.ChatInput({ model: "o4-mini", messages: [], maxTokens: 99 })
    const auto = GenericChatAdapter.openaiChatCompletions()
    const forOpenAi = auto.forBaseUrl?.(OpenAICompatAdapter.defaultBaseUrl) ?? auto
    const forLocal = auto.forBaseUrl?.("http://localhost:8080/v1") ?? auto
    const openAiBody = Schema.encodeSync(forOpenAi.request)(input) as Body
    const localBody = Schema.encodeSync(forLocal.request)(input) as Body
    assert.strictEqual(openAiBody.max_completion_tokens, 99)
    assert.isUndefined(openAiBody.max_tokens)
    assert.strictEqual(localBody.max_tokens, 99)
    assert.isUndefined(localBody.max_completion_tokens)
    // A forced field is not re-specialised.
    assert.isUndefined(GenericChatAdapter.openaiChatCompletions({ maxTokensField: "max_tokens" }).forBaseUrl)
  })
})
