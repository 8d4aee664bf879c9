/**
 * An `LlmAdapter` for any JSON chat endpoint whose request and response
 * shapes are configured, not coded.
 *
 * A {@link Dialect} names the endpoint (path, default base URL, auth header,
 * fixed headers, environment variables) and describes the wire format with
 * two Schemas:
 *
 * - `request: Schema<ChatInput, Body>` — encoding a {@link ChatInput} (model,
 *   messages, temperature, max tokens) gives the JSON request body;
 * - `response: Schema<ChatOutput, Reply>` — decoding the JSON reply gives a
 *   {@link ChatOutput} (text and usage).
 *
 * Ready dialects: {@link anthropicMessages}, {@link ollamaChat} and
 * {@link openaiChatCompletions}. Retries, timeouts and error messages are the
 * same as the OpenAI-compatible adapter's.
 *
 * @since 0.1.0
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as httpChat from "./internal/httpChat.js"
import * as errors from "./internal/httpErrors.js"
import * as retry from "./internal/httpRetry.js"
import {
  byRole,
  ChatMessage,
  type ChatRequest,
  ChatResponse,
  decodeArguments,
  FinishReason,
  LlmAdapter,
  LlmError,
  make as makeAdapter,
  ToolCall,
  ToolChoice,
  ToolDefinition,
  Usage
} from "./LlmAdapter.js"

// -----------------------------------------------------------------------------
// Models
// -----------------------------------------------------------------------------

/**
 * What the adapter sends, before the dialect's request Schema shapes it.
 *
 * @since 0.1.0
 * @category Models
 */
export class ChatInput extends Schema.Class<ChatInput>("@rlm-runtime/adapters/GenericChatAdapter/ChatInput")({
  /** Absent: no model is named, the server uses its own (see `Options.model`). */
  model: Schema.optionalWith(Schema.String, { exact: true }),
  messages: Schema.Array(ChatMessage),
  temperature: Schema.optionalWith(Schema.Number, { exact: true }),
  maxTokens: Schema.optionalWith(Schema.Number, { exact: true }),
  /** The request's tools, for the dialect to send in its provider's field. */
  tools: Schema.optionalWith(Schema.Array(ToolDefinition), { exact: true }),
  toolChoice: Schema.optionalWith(ToolChoice, { exact: true })
}) {}

/**
 * What the dialect's response Schema reads out of a reply.
 *
 * @since 0.1.0
 * @category Models
 */
export class ChatOutput extends Schema.Class<ChatOutput>("@rlm-runtime/adapters/GenericChatAdapter/ChatOutput")({
  text: Schema.String,
  model: Schema.optionalWith(Schema.String, { exact: true }),
  usage: Usage,
  /** Why the model stopped, when the reply says; `"length"` when it hit the output cap. */
  finishReason: Schema.optionalWith(FinishReason, { exact: true }),
  /** The tool calls of the reply, in order; absent when it made none. */
  toolCalls: Schema.optionalWith(Schema.Array(ToolCall), { exact: true })
}) {}

/**
 * The configuration of a chat endpoint.
 *
 * @since 0.1.0
 * @category Models
 */
export interface Dialect<Body = any, Reply = any> {
  /** Human name used in error messages, e.g. "Anthropic Messages API". */
  readonly name: string
  /** Path appended to the base URL, e.g. `/v1/messages`. */
  readonly path: string
  /** Base URL when none is configured. */
  readonly defaultBaseUrl: string
  /** Where the API key goes; with no key configured, the header is not sent at all. */
  readonly auth?: { readonly header: string; readonly prefix?: string | undefined } | undefined
  /** Fixed headers, e.g. `anthropic-version`. */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** `ChatInput` ⇄ request body. Encoding is used to build the body. */
  readonly request: Schema.Schema<ChatInput, Body>
  /** `ChatOutput` ⇄ response body. Decoding is used to read the reply. */
  readonly response: Schema.Schema<ChatOutput, Reply>
  /**
   * Parameters filled in when neither the options nor the request give them
   * (e.g. Anthropic requires `max_tokens`).
   */
  readonly defaults?: { readonly temperature?: number | undefined; readonly maxTokens?: number | undefined } | undefined
  /** Environment variables read by `layerConfig`, first present wins. */
  readonly env: { readonly apiKey: ReadonlyArray<string>; readonly baseUrl: ReadonlyArray<string> }
  /** Advice shown when the URL looks wrong (404, refused connection). */
  readonly urlHint?: string | undefined
  /**
   * Whether the API needs a model name in every request (Anthropic, Ollama);
   * without one a call fails with a `BadRequest` that says so. Chat
   * completions servers that serve one model (llama.cpp's `llama-server`)
   * take requests without it.
   */
  readonly requiresModel?: boolean | undefined
  /**
   * Specialise the dialect for the base URL it will talk to, once per adapter
   * (e.g. OpenAI's own API wants `max_completion_tokens`, local servers
   * `max_tokens`).
   */
  readonly forBaseUrl?: ((baseUrl: string) => Dialect<Body, Reply>) | undefined
}

/**
 * Options of one adapter (one model).
 *
 * @since 0.1.0
 * @category Models
 */
export interface Options {
  /**
   * The model to ask for. Optional where the dialect allows it (chat
   * completions): with none, requests name no model, the server answers with
   * its own (llama.cpp's `llama-server` serves the one it loaded), traces
   * record the name the server reports, and `model(role)` is
   * {@link unnamedModel}.
   */
  readonly model?: string | undefined
  /** Sent in the dialect's auth header; absent → no auth header at all. */
  readonly apiKey?: Redacted.Redacted<string> | undefined
  /** Defaults to the dialect's `defaultBaseUrl`. */
  readonly baseUrl?: string | undefined
  readonly temperature?: number | undefined
  /**
   * A cap on the output tokens of every call. Each call is sent with the
   * lower of this and its request's `maxOutputTokens` (the run's remaining
   * budget); with neither, the dialect's default (Anthropic: 4096) or none.
   */
  readonly maxTokens?: number | undefined
  /**
   * Merged into the request body after encoding: nested objects are merged,
   * other values win over the encoded ones (see {@link deepMerge}).
   */
  readonly extraBody?: Readonly<Record<string, unknown>> | undefined
  /** Sent with every request (they win over the dialect's and the auth header). */
  readonly extraHeaders?: Readonly<Record<string, string>> | undefined
  /** Timeout of one attempt, reading the whole reply included (default 5 minutes). */
  readonly timeout?: Duration.DurationInput | undefined
  /** Retries after the first attempt (default 3). */
  readonly maxRetries?: number | undefined
  /** Delay before the first retry, doubled for each next one, with jitter (default 500 ms). */
  readonly retryBaseDelay?: Duration.DurationInput | undefined
  /** Cap of the backoff delay (default 30 s). */
  readonly retryMaxDelay?: Duration.DurationInput | undefined
  /** A `Retry-After` longer than this fails the call instead of waiting (default 60 s). */
  readonly maxRetryAfter?: Duration.DurationInput | undefined
}

/**
 * Options with an optional different configuration for sub-calls, e.g.
 * `{ model: "big", sub: { model: "small" } }`. The sub options are merged over
 * the root ones.
 *
 * @since 0.1.0
 * @category Models
 */
export interface RoleOptions<O> {
  readonly sub?: Partial<O> | undefined
}

/**
 * The default timeout of one attempt.
 *
 * @since 0.1.0
 * @category Defaults
 */
export const defaultTimeout: Duration.Duration = Duration.minutes(5)

/**
 * What `model(role)` reports for an adapter configured without a model (the
 * server picks it): the name the server reports is in each response.
 *
 * @since 0.2.0
 * @category Defaults
 */
export const unnamedModel = "server-default"

// -----------------------------------------------------------------------------
// Constructors
// -----------------------------------------------------------------------------

const decodeError = (ctx: errors.ErrorContext, text: string) => (error: ParseResult.ParseError) =>
  errors.malformed(ctx, ParseResult.TreeFormatter.formatErrorSync(error), text)

/**
 * The output cap one call is sent with: the lower of the configured
 * `maxTokens` and the request's `maxOutputTokens`, as a whole number of at
 * least 1 (every provider rejects 0), else the dialect's default.
 *
 * @since 0.1.0
 * @category Utils
 */
export const outputCap = (
  configured: number | undefined,
  requested: number | undefined,
  fallback?: number | undefined
): number | undefined => {
  const caps = [configured, requested].filter((n): n is number => n !== undefined && !Number.isNaN(n))
  const cap = caps.length === 0 ? fallback : Math.min(...caps)
  return cap === undefined || !Number.isFinite(cap) ? undefined : Math.max(1, Math.floor(cap))
}

/**
 * Build an adapter for one model of a dialect.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = <Body, Reply>(
  generic: Dialect<Body, Reply>,
  options: Options
): Effect.Effect<LlmAdapter.Service, never, HttpClient.HttpClient> =>
  Effect.map(HttpClient.HttpClient, (client) => {
    const baseUrl = options.baseUrl ?? generic.defaultBaseUrl
    const dialect = generic.forBaseUrl?.(baseUrl) ?? generic
    const url = httpChat.joinUrl(baseUrl, dialect.path)
    const apiKey = Option.fromNullable(options.apiKey)
    const modelName = options.model ?? unnamedModel
    const context: errors.ErrorContext = {
      provider: dialect.name,
      url,
      model: modelName,
      hasKey: Option.isSome(apiKey),
      keyEnv: dialect.env.apiKey,
      urlEnv: dialect.env.baseUrl,
      urlHint: dialect.urlHint
    }
    const policy: retry.RetryPolicy = {
      maxRetries: Math.max(0, options.maxRetries ?? retry.defaultRetryPolicy.maxRetries),
      baseDelay: Duration.decode(options.retryBaseDelay ?? retry.defaultRetryPolicy.baseDelay),
      maxDelay: Duration.decode(options.retryMaxDelay ?? retry.defaultRetryPolicy.maxDelay),
      maxRetryAfter: Duration.decode(options.maxRetryAfter ?? retry.defaultRetryPolicy.maxRetryAfter)
    }
    const timeout = Duration.decode(options.timeout ?? defaultTimeout)
    const temperature = options.temperature ?? dialect.defaults?.temperature
    const encodeBody = Schema.encode(dialect.request)
    const decodeReply = Schema.decodeUnknown(dialect.response)
    const decodeReplyOption = Schema.decodeUnknownOption(dialect.response)
    /** A failed attempt's usage: its body read as a reply, when it is one that reports some. */
    const usageOf = (json: unknown): Usage | undefined =>
      Option.match(decodeReplyOption(json), {
        onNone: () => undefined,
        onSome: (output) => (hasUsage(output.usage) ? output.usage : undefined)
      })

    const chat = (request: ChatRequest) =>
      Effect.gen(function* () {
        if (options.model === undefined && dialect.requiresModel === true) {
          return yield* new LlmError({
            reason: "BadRequest",
            message: `The ${dialect.name} needs a model name in every request: give one (model, or --model NAME).`
          })
        }
        const maxTokens = outputCap(options.maxTokens, request.maxOutputTokens, dialect.defaults?.maxTokens)
        const input = new ChatInput({
          ...(options.model !== undefined ? { model: options.model } : {}),
          messages: request.messages,
          ...(temperature !== undefined ? { temperature } : {}),
          ...(maxTokens !== undefined ? { maxTokens } : {}),
          ...(request.tools !== undefined && request.tools.length > 0
            ? { tools: request.tools, ...(request.toolChoice !== undefined ? { toolChoice: request.toolChoice } : {}) }
            : {})
        })
        const body = yield* encodeBody(input).pipe(
          Effect.mapError(
            (error) =>
              new LlmError({
                reason: "BadRequest",
                message: `Could not build the ${dialect.name} request: ${ParseResult.TreeFormatter.formatErrorSync(error)}`
              })
          )
        )
        const reply = yield* httpChat.postJson(client, {
          url,
          headers: { ...dialect.headers, ...options.extraHeaders },
          auth: dialect.auth,
          apiKey,
          body: options.extraBody === undefined ? body : deepMerge(body, options.extraBody),
          timeout,
          retry: policy,
          context,
          usageOf
        })
        const output = yield* Effect.mapError(decodeReply(reply.json), decodeError(context, reply.text))
        return new ChatResponse({
          text: output.text,
          // The name the server reports (llama-server: the file it loaded), else the one configured.
          model: output.model ?? modelName,
          usage: output.usage,
          ...(output.finishReason !== undefined ? { finishReason: output.finishReason } : {}),
          ...(output.toolCalls !== undefined && output.toolCalls.length > 0 ? { toolCalls: output.toolCalls } : {})
        })
      })

    return makeAdapter({
      model: () => modelName,
      chat: (request) =>
        chat(request).pipe(
          Effect.withSpan("GenericChatAdapter.chat", {
            attributes: { provider: dialect.name, url, model: modelName, role: request.role }
          })
        )
    })
  })

/**
 * Build root and sub adapters (sub options merged over root options) and route
 * calls by role. Without `sub`, one adapter serves both roles.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const makeByRole = <Body, Reply>(
  dialect: Dialect<Body, Reply>,
  options: Options & RoleOptions<Options>
): Effect.Effect<LlmAdapter.Service, never, HttpClient.HttpClient> => {
  const { sub, ...rootOptions } = options
  if (sub === undefined) return make(dialect, rootOptions)
  return Effect.map(
    Effect.all({ root: make(dialect, rootOptions), sub: make(dialect, { ...rootOptions, ...definedOnly(sub) }) }),
    byRole
  )
}

const hasUsage = (u: Usage) =>
  u.inputTokens !== undefined || u.outputTokens !== undefined || u.totalTokens !== undefined

const isPlainObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u) && Object.getPrototypeOf(u) === Object.prototype

/**
 * Merge `extra` into `body`: nested plain objects are merged (so
 * `{ options: { num_ctx: 32768 } }` adds to Ollama's `options`), anything
 * else in `extra` replaces the body's value.
 *
 * @since 0.1.0
 * @category Utils
 */
export const deepMerge = (body: unknown, extra: Readonly<Record<string, unknown>>): unknown => {
  if (!isPlainObject(body)) return extra
  const merged: Record<string, unknown> = { ...body }
  for (const [key, value] of Object.entries(extra)) {
    merged[key] = isPlainObject(value) && isPlainObject(merged[key]) ? deepMerge(merged[key], value) : value
  }
  return merged
}

const definedOnly = <O extends object>(o: O): Partial<O> =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<O>

/**
 * @since 0.1.0
 * @category Layers
 */
export const layer = <Body, Reply>(
  dialect: Dialect<Body, Reply>,
  options: Options & RoleOptions<Options>
): Layer.Layer<LlmAdapter, never, HttpClient.HttpClient> => Layer.effect(LlmAdapter, makeByRole(dialect, options))

/**
 * The key and base URL a dialect reads from the environment: the first of
 * `dialect.env.apiKey` that is set and non-empty (redacted), and the first of
 * `dialect.env.baseUrl`, else the dialect's default.
 *
 * @since 0.1.0
 * @category Config
 */
export const config = (
  env: Dialect["env"],
  defaultBaseUrl: string
): Config.Config<{ readonly apiKey: Option.Option<Redacted.Redacted<string>>; readonly baseUrl: string }> =>
  Config.all({
    apiKey: firstOf(
      env.apiKey,
      (name) => Config.redacted(name),
      (key) => Redacted.value(key).trim().length > 0
    ),
    baseUrl: Config.map(
      firstOf(
        env.baseUrl,
        (name) => Config.string(name),
        (url) => url.trim().length > 0
      ),
      Option.getOrElse(() => defaultBaseUrl)
    )
  })

/** The first variable that is set and passes `usable` (an empty variable counts as unset). */
const firstOf = <A>(
  names: ReadonlyArray<string>,
  read: (name: string) => Config.Config<A>,
  usable: (value: A) => boolean
): Config.Config<Option.Option<A>> =>
  Config.map(
    Config.all(names.map((name) => Config.map(Config.option(read(name)), Option.filter(usable)))),
    Option.firstSomeOf
  )

/**
 * Like {@link layer}, with the key and base URL read from the environment
 * (see {@link config}). A `baseUrl` in the options wins over the environment;
 * the key is only ever read from the environment.
 *
 * @since 0.1.0
 * @category Layers
 */
export const layerConfig = <Body, Reply>(
  dialect: Dialect<Body, Reply>,
  options: Omit<Options, "apiKey"> & RoleOptions<Omit<Options, "apiKey">>
): Layer.Layer<LlmAdapter, ConfigError.ConfigError, HttpClient.HttpClient> =>
  Layer.effect(
    LlmAdapter,
    Effect.flatMap(config(dialect.env, dialect.defaultBaseUrl), ({ apiKey, baseUrl }) =>
      makeByRole(dialect, {
        ...options,
        baseUrl: options.baseUrl ?? baseUrl,
        apiKey: Option.getOrUndefined(apiKey)
      })
    )
  )

// -----------------------------------------------------------------------------
// Dialects
// -----------------------------------------------------------------------------

type UsageEncoded = typeof Usage.Encoded

const usageOf = (
  input: number | undefined,
  output: number | undefined,
  total?: number | undefined,
  details: { readonly cached?: number | undefined; readonly reasoning?: number | undefined } = {}
): UsageEncoded => ({
  ...(input !== undefined ? { inputTokens: input } : {}),
  ...(output !== undefined ? { outputTokens: output } : {}),
  ...(total !== undefined
    ? { totalTokens: total }
    : input !== undefined && output !== undefined
      ? { totalTokens: input + output }
      : {}),
  ...(details.cached !== undefined ? { cachedInputTokens: details.cached } : {}),
  ...(details.reasoning !== undefined ? { reasoningTokens: details.reasoning } : {})
})

const sumDefined = (...values: ReadonlyArray<number | null | undefined>): number | undefined => {
  const defined = values.filter((v): v is number => typeof v === "number")
  return defined.length === 0 ? undefined : defined.reduce((a, b) => a + b, 0)
}

/** `{ [key]: value }` when `value` is defined, else `{}`. */
const present = <K extends string, V>(key: K, value: V | null | undefined): { [P in K]?: V } =>
  (value === undefined || value === null ? {} : { [key]: value }) as { [P in K]?: V }

/** A provider's stop reason in our vocabulary: absent stays absent, an unlisted one is `"other"`. */
const finishReasonFrom =
  (table: Readonly<Record<string, FinishReason>>) =>
  (raw: string | null | undefined): FinishReason | undefined =>
    raw === undefined || raw === null ? undefined : (table[raw] ?? "other")

/** The inverse of a table, for the response Schemas' encode side. */
const finishReasonTo =
  (table: Readonly<Record<string, FinishReason>>) =>
  (reason: FinishReason | undefined): string | undefined => {
    if (reason === undefined || reason === "unknown") return undefined
    return Object.entries(table).find(([, r]) => r === reason)?.[0] ?? reason
  }

const optionalNumber = Schema.optionalWith(Schema.Number, { exact: true })
const nullableNumber = Schema.optional(Schema.NullOr(Schema.Number))
type MessageEncoded = typeof ChatMessage.Encoded
type ToolCallEncoded = typeof ToolCall.Encoded
type ToolChoiceEncoded = typeof ToolChoice.Encoded

/** A wire tool call's arguments as JSON text: a string as sent, anything else written as JSON. */
const argumentsText = (raw: unknown): string =>
  typeof raw === "string" ? raw : raw === undefined || raw === null ? "{}" : JSON.stringify(raw)

/**
 * JSON-text arguments as the object providers that take them decoded want
 * (Anthropic `input`, Ollama `arguments`); `{}` when they are not a JSON
 * object (a model's garbage, already told to it as such).
 */
const argumentsObject = (text: string): Record<string, unknown> => {
  const decoded = decodeArguments(new ToolCall({ id: "", name: "", arguments: text }, true))
  return Either.isRight(decoded) && isPlainObject(decoded.right) ? decoded.right : {}
}

/** A tool call as a reply reports it: every field optional, so a broken call is data, not a decoding failure. */
const WireToolCall = Schema.Struct({
  id: Schema.optional(Schema.NullOr(Schema.String)),
  function: Schema.optional(
    Schema.NullOr(
      Schema.Struct({ name: Schema.optional(Schema.NullOr(Schema.String)), arguments: Schema.optional(Schema.Unknown) })
    )
  )
})

const readToolCalls = (
  calls: ReadonlyArray<typeof WireToolCall.Type> | null | undefined
): { readonly toolCalls?: ReadonlyArray<ToolCallEncoded> } =>
  calls === undefined || calls === null || calls.length === 0
    ? {}
    : {
        toolCalls: calls.map((call, i) => ({
          id: call.id ?? `call_${i}`,
          name: call.function?.name ?? "",
          arguments: argumentsText(call.function?.arguments)
        }))
      }

/** The chat-completions (and Ollama) tool definition. */
const FunctionTool = Schema.Struct({
  type: Schema.Literal("function"),
  function: Schema.Struct({
    name: Schema.String,
    description: Schema.optionalWith(Schema.String, { exact: true }),
    parameters: Schema.Record({ key: Schema.String, value: Schema.Unknown })
  })
})

const functionTools = (input: typeof ChatInput.Encoded) =>
  input.tools === undefined
    ? {}
    : {
        tools: input.tools.map((tool) => ({
          type: "function" as const,
          function: { name: tool.name, description: tool.description, parameters: tool.parameters }
        }))
      }

const fromFunctionTools = (tools: ReadonlyArray<typeof FunctionTool.Type> | undefined) =>
  tools === undefined
    ? {}
    : {
        tools: tools.map((tool) => ({
          name: tool.function.name,
          description: tool.function.description ?? "",
          parameters: tool.function.parameters
        }))
      }

// --- OpenAI chat completions -------------------------------------------------

const OpenAiMessage = Schema.Struct({
  role: Schema.Literal("system", "user", "assistant", "tool"),
  content: Schema.NullOr(Schema.String),
  tool_calls: Schema.optionalWith(
    Schema.Array(
      Schema.Struct({
        id: Schema.String,
        type: Schema.Literal("function"),
        function: Schema.Struct({ name: Schema.String, arguments: Schema.String })
      })
    ),
    { exact: true }
  ),
  tool_call_id: Schema.optionalWith(Schema.String, { exact: true })
})

const OpenAiToolChoice = Schema.Union(
  Schema.Literal("auto", "required", "none"),
  Schema.Struct({ type: Schema.Literal("function"), function: Schema.Struct({ name: Schema.String }) })
)

const OpenAiRequest = Schema.Struct({
  model: Schema.optionalWith(Schema.String, { exact: true }),
  messages: Schema.Array(OpenAiMessage),
  temperature: optionalNumber,
  max_tokens: optionalNumber,
  max_completion_tokens: optionalNumber,
  tools: Schema.optionalWith(Schema.Array(FunctionTool), { exact: true }),
  tool_choice: Schema.optionalWith(OpenAiToolChoice, { exact: true })
})

/** A message in chat completions: a tool result is `role: "tool"` with its call id, tool calls ride the assistant turn. */
const toOpenAiMessage = (m: MessageEncoded): typeof OpenAiMessage.Type => {
  if (m.role === "tool") return { role: "tool", content: m.content, tool_call_id: m.toolCallId ?? "" }
  if (m.toolCalls !== undefined && m.toolCalls.length > 0) {
    return {
      role: m.role,
      content: m.content === "" ? null : m.content,
      tool_calls: m.toolCalls.map((call) => ({
        id: call.id,
        type: "function" as const,
        function: { name: call.name, arguments: call.arguments }
      }))
    }
  }
  return { role: m.role, content: m.content }
}

const fromOpenAiMessage = (m: typeof OpenAiMessage.Type): MessageEncoded => ({
  role: m.role,
  content: m.content ?? "",
  ...(m.tool_calls !== undefined
    ? {
        toolCalls: m.tool_calls.map((call) => ({
          id: call.id,
          name: call.function.name,
          arguments: call.function.arguments
        }))
      }
    : {}),
  ...(m.tool_call_id !== undefined ? { toolCallId: m.tool_call_id } : {})
})

const toOpenAiToolChoice = (choice: ToolChoiceEncoded): typeof OpenAiToolChoice.Type =>
  typeof choice === "string" ? choice : { type: "function", function: { name: choice.tool } }

const OpenAiResponse = Schema.Struct({
  model: Schema.optional(Schema.String),
  choices: Schema.Array(
    Schema.Struct({
      message: Schema.Struct({
        role: Schema.optional(Schema.String),
        content: Schema.optional(Schema.NullOr(Schema.String)),
        refusal: Schema.optional(Schema.NullOr(Schema.String)),
        tool_calls: Schema.optional(Schema.NullOr(Schema.Array(WireToolCall)))
      }),
      finish_reason: Schema.optional(Schema.NullOr(Schema.String))
    })
  ),
  usage: Schema.optional(
    Schema.NullOr(
      Schema.Struct({
        prompt_tokens: nullableNumber,
        completion_tokens: nullableNumber,
        total_tokens: nullableNumber,
        prompt_tokens_details: Schema.optional(Schema.NullOr(Schema.Struct({ cached_tokens: nullableNumber }))),
        completion_tokens_details: Schema.optional(Schema.NullOr(Schema.Struct({ reasoning_tokens: nullableNumber })))
      })
    )
  ),
  /** llama.cpp's `llama-server`: `prompt_n` tokens evaluated, `cache_n` reused from the cache, `predicted_n` generated. */
  timings: Schema.optional(
    Schema.NullOr(Schema.Struct({ prompt_n: nullableNumber, cache_n: nullableNumber, predicted_n: nullableNumber }))
  )
})

const openAiFinishReasons: Readonly<Record<string, FinishReason>> = {
  stop: "stop",
  length: "length",
  content_filter: "content-filter",
  tool_calls: "tool-calls",
  function_call: "tool-calls",
  error: "error"
}

/**
 * Where the chat-completions output cap goes: `max_tokens` (read by
 * llama.cpp's `llama-server`, vLLM, Ollama's `/v1`, LM Studio, OpenRouter)
 * or `max_completion_tokens` (OpenAI's own API, where `max_tokens` is
 * deprecated and rejected by its reasoning models). `"auto"` picks by the
 * base URL, see {@link maxTokensFieldFor}.
 *
 * @since 0.1.0
 * @category Models
 */
export type MaxTokensField = "max_tokens" | "max_completion_tokens" | "auto"

/**
 * The field `"auto"` sends for a base URL: `max_completion_tokens` for
 * OpenAI's own API (`api.openai.com`), `max_tokens` for every other server.
 *
 * @since 0.1.0
 * @category Utils
 */
export const maxTokensFieldFor = (baseUrl: string): "max_tokens" | "max_completion_tokens" => {
  let host: string
  try {
    host = new URL(baseUrl).hostname.toLowerCase()
  } catch {
    return "max_tokens"
  }
  return host === "api.openai.com" ? "max_completion_tokens" : "max_tokens"
}

/**
 * OpenAI's chat completions (`POST {baseUrl}/chat/completions`, bearer key),
 * spoken by OpenAI, OpenRouter, llama.cpp, vLLM, Ollama (`/v1`) and LM
 * Studio. The output cap goes in `maxTokensField` (default `"auto"`:
 * `max_completion_tokens` for `api.openai.com`, `max_tokens` elsewhere; used
 * without a base URL, `"auto"` sends `max_tokens`). Usage comes from `usage`
 * (with `prompt_tokens_details.cached_tokens` and
 * `completion_tokens_details.reasoning_tokens` when sent), else from
 * llama.cpp's `timings`; `finish_reason: "length"` is a `"length"` stop, and
 * a length stop with no content is an empty reply, not an error.
 *
 * @since 0.1.0
 * @category Dialects
 */
export const openaiChatCompletions = (
  options: { readonly maxTokensField?: MaxTokensField | undefined } = {}
): Dialect<typeof OpenAiRequest.Encoded, typeof OpenAiResponse.Encoded> => {
  const configured = options.maxTokensField ?? "auto"
  const maxTokensField = configured === "auto" ? "max_tokens" : configured
  const toFinish = finishReasonFrom(openAiFinishReasons)
  const fromFinish = finishReasonTo(openAiFinishReasons)
  return {
    name: "OpenAI-compatible server",
    path: "/chat/completions",
    defaultBaseUrl: "https://api.openai.com/v1",
    auth: { header: "authorization", prefix: "Bearer " },
    env: { apiKey: ["LLM_API_KEY", "OPENAI_API_KEY"], baseUrl: ["LLM_BASE_URL", "OPENAI_BASE_URL"] },
    urlHint:
      "OpenAI-compatible servers answer POST <base URL>/chat/completions, so the base URL usually ends in /v1 " +
      "(llama.cpp http://localhost:8080/v1, vLLM http://localhost:8000/v1, Ollama http://localhost:11434/v1, " +
      "LM Studio http://localhost:1234/v1).",
    ...(configured === "auto"
      ? { forBaseUrl: (baseUrl: string) => openaiChatCompletions({ maxTokensField: maxTokensFieldFor(baseUrl) }) }
      : {}),
    request: Schema.transform(OpenAiRequest, ChatInput, {
      strict: true,
      decode: (body) => ({
        ...(body.model !== undefined ? { model: body.model } : {}),
        messages: body.messages.map(fromOpenAiMessage),
        ...(body.temperature !== undefined ? { temperature: body.temperature } : {}),
        ...((body.max_tokens ?? body.max_completion_tokens) !== undefined
          ? { maxTokens: (body.max_tokens ?? body.max_completion_tokens) as number }
          : {}),
        ...fromFunctionTools(body.tools),
        ...(body.tool_choice !== undefined
          ? {
              toolChoice:
                typeof body.tool_choice === "string" ? body.tool_choice : { tool: body.tool_choice.function.name }
            }
          : {})
      }),
      encode: (input) => ({
        // No model named: a server serving one model (llama-server) uses it.
        ...(input.model !== undefined ? { model: input.model } : {}),
        messages: input.messages.map(toOpenAiMessage),
        ...(input.temperature !== undefined ? { temperature: input.temperature } : {}),
        ...(input.maxTokens !== undefined ? { [maxTokensField]: input.maxTokens } : {}),
        ...functionTools(input),
        ...(input.tools !== undefined && input.toolChoice !== undefined
          ? { tool_choice: toOpenAiToolChoice(input.toolChoice) }
          : {})
      })
    }),
    response: Schema.transformOrFail(OpenAiResponse, ChatOutput, {
      strict: true,
      decode: (reply, _, ast) => {
        const choice = reply.choices[0]
        if (choice === undefined) {
          return ParseResult.fail(
            new ParseResult.Type(ast, reply, 'the "choices" list is empty, so there is no reply text')
          )
        }
        const finishReason = toFinish(choice.finish_reason)
        const content = choice.message.content
        const calls = readToolCalls(choice.message.tool_calls)
        // A reasoning model can spend the whole cap before writing: that is a length stop, not a broken reply.
        // A reply of tool calls only has no text either.
        const text =
          typeof content === "string"
            ? content
            : finishReason === "length" || calls.toolCalls !== undefined
              ? ""
              : undefined
        if (text === undefined) {
          return ParseResult.fail(
            new ParseResult.Type(
              ast,
              reply,
              typeof choice.message.refusal === "string"
                ? `the model refused: ${choice.message.refusal}`
                : `the first choice has no text content (finish_reason: ${choice.finish_reason ?? "none"})`
            )
          )
        }
        const usage = reply.usage
        const timings = reply.timings
        return ParseResult.succeed({
          text,
          ...(reply.model !== undefined ? { model: reply.model } : {}),
          usage:
            usage !== undefined && usage !== null
              ? usageOf(
                  usage.prompt_tokens ?? undefined,
                  usage.completion_tokens ?? undefined,
                  usage.total_tokens ?? undefined,
                  {
                    cached: usage.prompt_tokens_details?.cached_tokens ?? timings?.cache_n ?? undefined,
                    reasoning: usage.completion_tokens_details?.reasoning_tokens ?? undefined
                  }
                )
              : timings !== undefined && timings !== null
                ? usageOf(sumDefined(timings.prompt_n, timings.cache_n), timings.predicted_n ?? undefined, undefined, {
                    cached: timings.cache_n ?? undefined
                  })
                : {},
          ...(finishReason !== undefined ? { finishReason } : {}),
          ...calls
        })
      },
      encode: (output) => {
        const u = output.usage
        const hasUsage =
          u.inputTokens !== undefined ||
          u.outputTokens !== undefined ||
          u.totalTokens !== undefined ||
          u.cachedInputTokens !== undefined ||
          u.reasoningTokens !== undefined
        return ParseResult.succeed({
          ...(output.model !== undefined ? { model: output.model } : {}),
          choices: [
            {
              message: {
                role: "assistant",
                content: output.text,
                ...(output.toolCalls !== undefined
                  ? {
                      tool_calls: output.toolCalls.map((call) => ({
                        id: call.id,
                        function: { name: call.name, arguments: call.arguments }
                      }))
                    }
                  : {})
              },
              finish_reason: fromFinish(output.finishReason) ?? null
            }
          ],
          ...(hasUsage
            ? {
                usage: {
                  ...present("prompt_tokens", u.inputTokens),
                  ...present("completion_tokens", u.outputTokens),
                  ...present("total_tokens", u.totalTokens),
                  ...(u.cachedInputTokens !== undefined
                    ? { prompt_tokens_details: { cached_tokens: u.cachedInputTokens } }
                    : {}),
                  ...(u.reasoningTokens !== undefined
                    ? { completion_tokens_details: { reasoning_tokens: u.reasoningTokens } }
                    : {})
                }
              }
            : {})
        })
      }
    })
  }
}

// --- Anthropic Messages ------------------------------------------------------

const AnthropicBlock = Schema.Union(
  Schema.Struct({ type: Schema.Literal("text"), text: Schema.String }),
  Schema.Struct({ type: Schema.Literal("tool_use"), id: Schema.String, name: Schema.String, input: Schema.Unknown }),
  Schema.Struct({ type: Schema.Literal("tool_result"), tool_use_id: Schema.String, content: Schema.String })
)

type AnthropicBlock = typeof AnthropicBlock.Type

const AnthropicMessage = Schema.Struct({
  role: Schema.Literal("user", "assistant"),
  content: Schema.Union(Schema.String, Schema.Array(AnthropicBlock))
})

type AnthropicMessage = typeof AnthropicMessage.Type

const AnthropicToolChoice = Schema.Union(
  Schema.Struct({ type: Schema.Literal("auto", "any", "none") }),
  Schema.Struct({ type: Schema.Literal("tool"), name: Schema.String })
)

const AnthropicRequest = Schema.Struct({
  model: Schema.String,
  max_tokens: Schema.Number,
  system: Schema.optionalWith(Schema.String, { exact: true }),
  messages: Schema.Array(AnthropicMessage),
  temperature: optionalNumber,
  tools: Schema.optionalWith(
    Schema.Array(
      Schema.Struct({
        name: Schema.String,
        description: Schema.optionalWith(Schema.String, { exact: true }),
        input_schema: Schema.Record({ key: Schema.String, value: Schema.Unknown })
      })
    ),
    { exact: true }
  ),
  tool_choice: Schema.optionalWith(AnthropicToolChoice, { exact: true })
})

const AnthropicResponse = Schema.Struct({
  model: Schema.optional(Schema.String),
  content: Schema.Array(
    Schema.Struct({
      type: Schema.String,
      text: Schema.optional(Schema.String),
      id: Schema.optional(Schema.String),
      name: Schema.optional(Schema.String),
      input: Schema.optional(Schema.Unknown)
    })
  ),
  stop_reason: Schema.optional(Schema.NullOr(Schema.String)),
  usage: Schema.optional(
    Schema.Struct({
      input_tokens: nullableNumber,
      output_tokens: nullableNumber,
      cache_creation_input_tokens: nullableNumber,
      cache_read_input_tokens: nullableNumber
    })
  )
})

const blocksOf = (content: AnthropicMessage["content"]): ReadonlyArray<AnthropicBlock> =>
  typeof content === "string" ? [{ type: "text", text: content }] : content

/**
 * Messages in Anthropic's shape: tool calls are `tool_use` blocks of the
 * assistant turn, and tool results `tool_result` blocks of a user turn, so a
 * result is merged with the user turns next to it (Anthropic wants every
 * `tool_use` answered in the very next user message). Turns without tools are
 * sent as plain strings, as before.
 */
const toAnthropicMessages = (messages: ReadonlyArray<MessageEncoded>): Array<AnthropicMessage> => {
  const out: Array<AnthropicMessage & { merge?: boolean }> = []
  for (const m of messages) {
    if (m.role === "system") continue
    if (m.role === "tool") {
      const result: AnthropicBlock = { type: "tool_result", tool_use_id: m.toolCallId ?? "", content: m.content }
      const last = out[out.length - 1]
      if (last !== undefined && last.role === "user") {
        out[out.length - 1] = { role: "user", content: [...blocksOf(last.content), result], merge: true }
      } else out.push({ role: "user", content: [result], merge: true })
      continue
    }
    if (m.role === "assistant" && m.toolCalls !== undefined && m.toolCalls.length > 0) {
      out.push({
        role: "assistant",
        content: [
          ...(m.content.length > 0 ? [{ type: "text" as const, text: m.content }] : []),
          ...m.toolCalls.map((call) => ({
            type: "tool_use" as const,
            id: call.id,
            name: call.name,
            input: argumentsObject(call.arguments)
          }))
        ]
      })
      continue
    }
    const last = out[out.length - 1]
    if (m.role === "user" && last?.merge === true) {
      out[out.length - 1] = { role: "user", content: [...blocksOf(last.content), { type: "text", text: m.content }] }
      continue
    }
    out.push({ role: m.role, content: m.content })
  }
  return out.map(({ content, role }) => ({ role, content }))
}

const fromAnthropicMessage = (m: AnthropicMessage): Array<MessageEncoded> => {
  if (typeof m.content === "string") return [{ role: m.role, content: m.content }]
  const out: Array<MessageEncoded> = []
  const texts: Array<string> = []
  const calls: Array<ToolCallEncoded> = []
  for (const block of m.content) {
    if (block.type === "text") texts.push(block.text)
    else if (block.type === "tool_use")
      calls.push({ id: block.id, name: block.name, arguments: argumentsText(block.input) })
    else out.push({ role: "tool", content: block.content, toolCallId: block.tool_use_id })
  }
  if (texts.length > 0 || calls.length > 0) {
    out.push({ role: m.role, content: texts.join(""), ...(calls.length > 0 ? { toolCalls: calls } : {}) })
  }
  return out
}

const toAnthropicToolChoice = (choice: ToolChoiceEncoded): typeof AnthropicToolChoice.Type =>
  typeof choice === "object"
    ? { type: "tool", name: choice.tool }
    : choice === "required"
      ? { type: "any" }
      : { type: choice }

const anthropicStopReasons: Readonly<Record<string, FinishReason>> = {
  end_turn: "stop",
  stop_sequence: "stop",
  max_tokens: "length",
  tool_use: "tool-calls",
  refusal: "content-filter",
  pause_turn: "pause"
}

/**
 * The default `max_tokens` sent to Anthropic, which requires the field, when
 * neither the options nor the request cap the output.
 *
 * @since 0.1.0
 * @category Defaults
 */
export const anthropicDefaultMaxTokens = 4096

const anthropicToFinish = finishReasonFrom(anthropicStopReasons)
const anthropicFromFinish = finishReasonTo(anthropicStopReasons)

/**
 * Anthropic's Messages API: `POST {baseUrl}/v1/messages`, the key in
 * `x-api-key`, `anthropic-version: 2023-06-01`, system messages joined into
 * the separate `system` field, the output cap in the required `max_tokens`,
 * the reply read from `content[].text`, usage from `usage.input_tokens` (plus
 * cache reads and writes) / `output_tokens`, and `stop_reason: "max_tokens"`
 * as a `"length"` stop. Keys come from `LLM_API_KEY`, else
 * `ANTHROPIC_API_KEY`.
 *
 * @since 0.1.0
 * @category Dialects
 */
export const anthropicMessages: Dialect<typeof AnthropicRequest.Encoded, typeof AnthropicResponse.Encoded> = {
  name: "Anthropic Messages API",
  path: "/v1/messages",
  defaultBaseUrl: "https://api.anthropic.com",
  auth: { header: "x-api-key" },
  headers: { "anthropic-version": "2023-06-01" },
  defaults: { maxTokens: anthropicDefaultMaxTokens },
  requiresModel: true,
  env: { apiKey: ["LLM_API_KEY", "ANTHROPIC_API_KEY"], baseUrl: ["LLM_BASE_URL", "ANTHROPIC_BASE_URL"] },
  urlHint: "the Anthropic base URL is https://api.anthropic.com, without /v1 (the adapter adds /v1/messages).",
  request: Schema.transform(AnthropicRequest, ChatInput, {
    strict: true,
    decode: (body) => ({
      model: body.model,
      messages: [
        ...(body.system !== undefined ? [{ role: "system" as const, content: body.system }] : []),
        ...body.messages.flatMap(fromAnthropicMessage)
      ],
      maxTokens: body.max_tokens,
      ...(body.temperature !== undefined ? { temperature: body.temperature } : {}),
      ...(body.tools !== undefined
        ? {
            tools: body.tools.map((tool) => ({
              name: tool.name,
              description: tool.description ?? "",
              parameters: tool.input_schema
            }))
          }
        : {}),
      ...(body.tool_choice !== undefined
        ? {
            toolChoice:
              body.tool_choice.type === "tool"
                ? { tool: body.tool_choice.name }
                : body.tool_choice.type === "any"
                  ? ("required" as const)
                  : body.tool_choice.type
          }
        : {})
    }),
    encode: (input) => {
      const system = input.messages.filter((m) => m.role === "system").map((m) => m.content)
      return {
        model: input.model ?? "",
        max_tokens: input.maxTokens ?? anthropicDefaultMaxTokens,
        ...(system.length > 0 ? { system: system.join("\n\n") } : {}),
        messages: toAnthropicMessages(input.messages),
        ...(input.temperature !== undefined ? { temperature: input.temperature } : {}),
        ...(input.tools !== undefined
          ? {
              tools: input.tools.map((tool) => ({
                name: tool.name,
                description: tool.description,
                input_schema: tool.parameters
              })),
              ...(input.toolChoice !== undefined ? { tool_choice: toAnthropicToolChoice(input.toolChoice) } : {})
            }
          : {})
      }
    }
  }),
  response: Schema.transformOrFail(AnthropicResponse, ChatOutput, {
    strict: true,
    decode: (reply, _, ast) => {
      const finishReason = anthropicToFinish(reply.stop_reason)
      const texts = reply.content.flatMap((block) =>
        block.type === "text" && typeof block.text === "string" ? [block.text] : []
      )
      const calls = reply.content.flatMap((block, i) =>
        block.type === "tool_use"
          ? [{ id: block.id ?? `toolu_${i}`, name: block.name ?? "", arguments: argumentsText(block.input) }]
          : []
      )
      if (texts.length === 0 && calls.length === 0 && finishReason !== "length") {
        return ParseResult.fail(
          new ParseResult.Type(ast, reply, `"content" has no text block (stop_reason: ${reply.stop_reason ?? "none"})`)
        )
      }
      const usage = reply.usage
      return ParseResult.succeed({
        text: texts.join(""),
        ...(reply.model !== undefined ? { model: reply.model } : {}),
        usage:
          usage === undefined
            ? {}
            : usageOf(
                typeof usage.input_tokens === "number"
                  ? sumDefined(usage.input_tokens, usage.cache_creation_input_tokens, usage.cache_read_input_tokens)
                  : undefined,
                usage.output_tokens ?? undefined,
                undefined,
                { cached: usage.cache_read_input_tokens ?? undefined }
              ),
        ...(finishReason !== undefined ? { finishReason } : {}),
        ...(calls.length > 0 ? { toolCalls: calls } : {})
      })
    },
    encode: (output) => {
      const u = output.usage
      // Cache reads are part of inputTokens here; on the wire they are counted apart.
      const uncached =
        u.inputTokens !== undefined && u.cachedInputTokens !== undefined
          ? u.inputTokens - u.cachedInputTokens
          : u.inputTokens
      return ParseResult.succeed({
        ...(output.model !== undefined ? { model: output.model } : {}),
        content: [
          ...(output.text.length > 0 || output.toolCalls === undefined ? [{ type: "text", text: output.text }] : []),
          ...(output.toolCalls ?? []).map((call) => ({
            type: "tool_use",
            id: call.id,
            name: call.name,
            input: argumentsObject(call.arguments)
          }))
        ],
        stop_reason: anthropicFromFinish(output.finishReason) ?? null,
        ...(u.inputTokens !== undefined || u.outputTokens !== undefined
          ? {
              usage: {
                ...present("input_tokens", uncached),
                ...present("output_tokens", u.outputTokens),
                ...(u.inputTokens !== undefined ? present("cache_read_input_tokens", u.cachedInputTokens) : {})
              }
            }
          : {})
      })
    }
  })
}

// --- Ollama /api/chat --------------------------------------------------------

const OllamaMessage = Schema.Struct({
  role: Schema.Literal("system", "user", "assistant", "tool"),
  content: Schema.String,
  tool_calls: Schema.optionalWith(
    Schema.Array(
      Schema.Struct({
        function: Schema.Struct({
          name: Schema.String,
          arguments: Schema.Record({ key: Schema.String, value: Schema.Unknown })
        })
      })
    ),
    { exact: true }
  ),
  tool_name: Schema.optionalWith(Schema.String, { exact: true })
})

const OllamaRequest = Schema.Struct({
  model: Schema.String,
  messages: Schema.Array(OllamaMessage),
  stream: Schema.Literal(false),
  options: Schema.optionalWith(Schema.Struct({ temperature: optionalNumber, num_predict: optionalNumber }), {
    exact: true
  }),
  tools: Schema.optionalWith(Schema.Array(FunctionTool), { exact: true })
})

const OllamaResponse = Schema.Struct({
  model: Schema.optional(Schema.String),
  message: Schema.Struct({
    role: Schema.optional(Schema.String),
    content: Schema.String,
    tool_calls: Schema.optional(Schema.NullOr(Schema.Array(WireToolCall)))
  }),
  done: Schema.optional(Schema.Boolean),
  done_reason: Schema.optional(Schema.NullOr(Schema.String)),
  prompt_eval_count: nullableNumber,
  eval_count: nullableNumber
})

/** Ollama has no call ids: a tool result names its tool (`tool_name`), and arguments are an object. */
const toOllamaMessage = (m: MessageEncoded): typeof OllamaMessage.Type => ({
  role: m.role,
  content: m.content,
  ...(m.toolCalls !== undefined && m.toolCalls.length > 0
    ? {
        tool_calls: m.toolCalls.map((call) => ({
          function: { name: call.name, arguments: argumentsObject(call.arguments) }
        }))
      }
    : {}),
  ...(m.role === "tool" && m.toolName !== undefined ? { tool_name: m.toolName } : {})
})

const fromOllamaMessage = (m: typeof OllamaMessage.Type): MessageEncoded => ({
  role: m.role,
  content: m.content,
  ...(m.tool_calls !== undefined
    ? {
        toolCalls: m.tool_calls.map((call, i) => ({
          id: `call_${i}`,
          name: call.function.name,
          arguments: JSON.stringify(call.function.arguments)
        }))
      }
    : {}),
  ...(m.tool_name !== undefined ? { toolName: m.tool_name } : {})
})

const ollamaDoneReasons: Readonly<Record<string, FinishReason>> = { stop: "stop", length: "length" }
const ollamaToFinish = finishReasonFrom(ollamaDoneReasons)
const ollamaFromFinish = finishReasonTo(ollamaDoneReasons)

/**
 * Ollama's native chat endpoint: `POST {baseUrl}/api/chat` with
 * `stream: false`, temperature and the output cap (`num_predict`) under
 * `options`, the reply from `message.content`, `done_reason: "length"` as a
 * `"length"` stop, and usage from `prompt_eval_count` / `eval_count`
 * (Ollama omits `prompt_eval_count` when the prompt was cached: that input is
 * then unknown). Base URL from `LLM_BASE_URL`, else `http://localhost:11434`.
 *
 * @since 0.1.0
 * @category Dialects
 */
export const ollamaChat: Dialect<typeof OllamaRequest.Encoded, typeof OllamaResponse.Encoded> = {
  name: "Ollama",
  path: "/api/chat",
  defaultBaseUrl: "http://localhost:11434",
  auth: { header: "authorization", prefix: "Bearer " },
  env: { apiKey: ["LLM_API_KEY", "OLLAMA_API_KEY"], baseUrl: ["LLM_BASE_URL"] },
  requiresModel: true,
  urlHint:
    "Ollama listens on http://localhost:11434 by default; give the base URL without /api (the adapter adds /api/chat).",
  request: Schema.transform(OllamaRequest, ChatInput, {
    strict: true,
    decode: (body) => ({
      model: body.model,
      messages: body.messages.map(fromOllamaMessage),
      ...(body.options?.temperature !== undefined ? { temperature: body.options.temperature } : {}),
      ...(body.options?.num_predict !== undefined ? { maxTokens: body.options.num_predict } : {}),
      ...fromFunctionTools(body.tools)
    }),
    // Ollama has no tool choice: the model always may call a tool.
    encode: (input) => ({
      model: input.model ?? "",
      messages: input.messages.map(toOllamaMessage),
      stream: false as const,
      ...functionTools(input),
      ...(input.temperature !== undefined || input.maxTokens !== undefined
        ? {
            options: {
              ...(input.temperature !== undefined ? { temperature: input.temperature } : {}),
              ...(input.maxTokens !== undefined ? { num_predict: input.maxTokens } : {})
            }
          }
        : {})
    })
  }),
  response: Schema.transform(OllamaResponse, ChatOutput, {
    strict: true,
    decode: (reply) => {
      const finishReason = ollamaToFinish(reply.done_reason)
      return {
        text: reply.message.content,
        ...(reply.model !== undefined ? { model: reply.model } : {}),
        usage: usageOf(reply.prompt_eval_count ?? undefined, reply.eval_count ?? undefined),
        ...(finishReason !== undefined ? { finishReason } : {}),
        ...readToolCalls(reply.message.tool_calls)
      }
    },
    encode: (output) => ({
      ...(output.model !== undefined ? { model: output.model } : {}),
      message: {
        role: "assistant",
        content: output.text,
        ...(output.toolCalls !== undefined
          ? {
              tool_calls: output.toolCalls.map((call) => ({
                function: { name: call.name, arguments: argumentsObject(call.arguments) }
              }))
            }
          : {})
      },
      done: true,
      ...present("done_reason", ollamaFromFinish(output.finishReason)),
      ...present("prompt_eval_count", output.usage.inputTokens),
      ...present("eval_count", output.usage.outputTokens)
    })
  })
}
