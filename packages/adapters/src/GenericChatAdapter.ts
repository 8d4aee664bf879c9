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
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as httpChat from "./internal/httpChat.js"
import * as errors from "./internal/httpErrors.js"
import * as retry from "./internal/httpRetry.js"
import { byRole, ChatMessage, ChatResponse, LlmAdapter, LlmError, make as makeAdapter, Usage } from "./LlmAdapter.js"

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
  model: Schema.String,
  messages: Schema.Array(ChatMessage),
  temperature: Schema.optionalWith(Schema.Number, { exact: true }),
  maxTokens: Schema.optionalWith(Schema.Number, { exact: true })
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
  usage: Usage
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
  /** Parameters filled in when the options leave them out (e.g. Anthropic requires `max_tokens`). */
  readonly defaults?: { readonly temperature?: number | undefined; readonly maxTokens?: number | undefined } | undefined
  /** Environment variables read by `layerConfig`, first present wins. */
  readonly env: { readonly apiKey: ReadonlyArray<string>; readonly baseUrl: ReadonlyArray<string> }
  /** Advice shown when the URL looks wrong (404, refused connection). */
  readonly urlHint?: string | undefined
}

/**
 * Options of one adapter (one model).
 *
 * @since 0.1.0
 * @category Models
 */
export interface Options {
  readonly model: string
  /** Sent in the dialect's auth header; absent → no auth header at all. */
  readonly apiKey?: Redacted.Redacted<string> | undefined
  /** Defaults to the dialect's `defaultBaseUrl`. */
  readonly baseUrl?: string | undefined
  readonly temperature?: number | undefined
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

// -----------------------------------------------------------------------------
// Constructors
// -----------------------------------------------------------------------------

const decodeError = (ctx: errors.ErrorContext, text: string) => (error: ParseResult.ParseError) =>
  errors.malformed(ctx, ParseResult.TreeFormatter.formatErrorSync(error), text)

/**
 * Build an adapter for one model of a dialect.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = <Body, Reply>(
  dialect: Dialect<Body, Reply>,
  options: Options
): Effect.Effect<LlmAdapter.Service, never, HttpClient.HttpClient> =>
  Effect.map(HttpClient.HttpClient, (client) => {
    const url = httpChat.joinUrl(options.baseUrl ?? dialect.defaultBaseUrl, dialect.path)
    const apiKey = Option.fromNullable(options.apiKey)
    const context: errors.ErrorContext = {
      provider: dialect.name,
      url,
      model: options.model,
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
    const maxTokens = options.maxTokens ?? dialect.defaults?.maxTokens
    const encodeBody = Schema.encode(dialect.request)
    const decodeReply = Schema.decodeUnknown(dialect.response)

    const chat = (request: { readonly messages: ReadonlyArray<ChatMessage> }) =>
      Effect.gen(function* () {
        const input = new ChatInput({
          model: options.model,
          messages: request.messages,
          ...(temperature !== undefined ? { temperature } : {}),
          ...(maxTokens !== undefined ? { maxTokens } : {})
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
          context
        })
        const output = yield* Effect.mapError(decodeReply(reply.json), decodeError(context, reply.text))
        return new ChatResponse({ text: output.text, model: options.model, usage: output.usage })
      })

    return makeAdapter({
      model: () => options.model,
      chat: (request) =>
        chat(request).pipe(
          Effect.withSpan("GenericChatAdapter.chat", {
            attributes: { provider: dialect.name, url, model: options.model, role: request.role }
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

const usageOf = (input: number | undefined, output: number | undefined, total?: number | undefined): UsageEncoded => ({
  ...(input !== undefined ? { inputTokens: input } : {}),
  ...(output !== undefined ? { outputTokens: output } : {}),
  ...(total !== undefined
    ? { totalTokens: total }
    : input !== undefined && output !== undefined
      ? { totalTokens: input + output }
      : {})
})

const sumDefined = (...values: ReadonlyArray<number | null | undefined>): number | undefined => {
  const defined = values.filter((v): v is number => typeof v === "number")
  return defined.length === 0 ? undefined : defined.reduce((a, b) => a + b, 0)
}

const optionalNumber = Schema.optionalWith(Schema.Number, { exact: true })
const WireMessage = Schema.Struct({ role: Schema.Literal("system", "user", "assistant"), content: Schema.String })

// --- OpenAI chat completions -------------------------------------------------

const OpenAiRequest = Schema.Struct({
  model: Schema.String,
  messages: Schema.Array(WireMessage),
  temperature: optionalNumber,
  max_tokens: optionalNumber,
  max_completion_tokens: optionalNumber
})

const OpenAiResponse = Schema.Struct({
  model: Schema.optional(Schema.String),
  choices: Schema.Array(
    Schema.Struct({
      message: Schema.Struct({
        role: Schema.optional(Schema.String),
        content: Schema.optional(Schema.NullOr(Schema.String)),
        refusal: Schema.optional(Schema.NullOr(Schema.String))
      }),
      finish_reason: Schema.optional(Schema.NullOr(Schema.String))
    })
  ),
  usage: Schema.optional(
    Schema.NullOr(
      Schema.Struct({
        prompt_tokens: Schema.optional(Schema.NullOr(Schema.Number)),
        completion_tokens: Schema.optional(Schema.NullOr(Schema.Number)),
        total_tokens: Schema.optional(Schema.NullOr(Schema.Number))
      })
    )
  )
})

/**
 * OpenAI's chat completions (`POST {baseUrl}/chat/completions`, bearer key),
 * spoken by OpenAI, OpenRouter, llama.cpp, vLLM, Ollama (`/v1`) and LM
 * Studio. `maxTokensField` picks `max_tokens` (default; understood by local
 * servers) or `max_completion_tokens` (required by OpenAI's reasoning models).
 *
 * @since 0.1.0
 * @category Dialects
 */
export const openaiChatCompletions = (
  options: { readonly maxTokensField?: "max_tokens" | "max_completion_tokens" | undefined } = {}
): Dialect<typeof OpenAiRequest.Encoded, typeof OpenAiResponse.Encoded> => {
  const maxTokensField = options.maxTokensField ?? "max_tokens"
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
    request: Schema.transform(OpenAiRequest, ChatInput, {
      strict: true,
      decode: (body) => ({
        model: body.model,
        messages: body.messages,
        ...(body.temperature !== undefined ? { temperature: body.temperature } : {}),
        ...((body.max_tokens ?? body.max_completion_tokens) !== undefined
          ? { maxTokens: (body.max_tokens ?? body.max_completion_tokens) as number }
          : {})
      }),
      encode: (input) => ({
        model: input.model,
        messages: input.messages.map(({ content, role }) => ({ role, content })),
        ...(input.temperature !== undefined ? { temperature: input.temperature } : {}),
        ...(input.maxTokens !== undefined ? { [maxTokensField]: input.maxTokens } : {})
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
        const content = choice.message.content
        if (typeof content !== "string") {
          return ParseResult.fail(
            new ParseResult.Type(
              ast,
              reply,
              typeof choice.message.refusal === "string"
                ? `the model refused: ${choice.message.refusal}`
                : `the first choice has no text content (finish_reason: ${choice.finish_reason ?? "none"})` +
                    (choice.finish_reason === "length" ? "; raise maxTokens" : "")
            )
          )
        }
        const usage = reply.usage
        return ParseResult.succeed({
          text: content,
          ...(reply.model !== undefined ? { model: reply.model } : {}),
          usage:
            usage === undefined || usage === null
              ? {}
              : usageOf(
                  usage.prompt_tokens ?? undefined,
                  usage.completion_tokens ?? undefined,
                  usage.total_tokens ?? undefined
                )
        })
      },
      encode: (output) =>
        ParseResult.succeed({
          ...(output.model !== undefined ? { model: output.model } : {}),
          choices: [{ message: { role: "assistant", content: output.text }, finish_reason: "stop" }],
          ...(output.usage.inputTokens !== undefined ||
          output.usage.outputTokens !== undefined ||
          output.usage.totalTokens !== undefined
            ? {
                usage: {
                  ...(output.usage.inputTokens !== undefined ? { prompt_tokens: output.usage.inputTokens } : {}),
                  ...(output.usage.outputTokens !== undefined ? { completion_tokens: output.usage.outputTokens } : {}),
                  ...(output.usage.totalTokens !== undefined ? { total_tokens: output.usage.totalTokens } : {})
                }
              }
            : {})
        })
    })
  }
}

// --- Anthropic Messages ------------------------------------------------------

const AnthropicRequest = Schema.Struct({
  model: Schema.String,
  max_tokens: Schema.Number,
  system: Schema.optionalWith(Schema.String, { exact: true }),
  messages: Schema.Array(Schema.Struct({ role: Schema.Literal("user", "assistant"), content: Schema.String })),
  temperature: optionalNumber
})

const AnthropicResponse = Schema.Struct({
  model: Schema.optional(Schema.String),
  content: Schema.Array(Schema.Struct({ type: Schema.String, text: Schema.optional(Schema.String) })),
  stop_reason: Schema.optional(Schema.NullOr(Schema.String)),
  usage: Schema.optional(
    Schema.Struct({
      input_tokens: Schema.optional(Schema.NullOr(Schema.Number)),
      output_tokens: Schema.optional(Schema.NullOr(Schema.Number)),
      cache_creation_input_tokens: Schema.optional(Schema.NullOr(Schema.Number)),
      cache_read_input_tokens: Schema.optional(Schema.NullOr(Schema.Number))
    })
  )
})

/**
 * The default `max_tokens` sent to Anthropic, which requires the field.
 *
 * @since 0.1.0
 * @category Defaults
 */
export const anthropicDefaultMaxTokens = 4096

/**
 * Anthropic's Messages API: `POST {baseUrl}/v1/messages`, the key in
 * `x-api-key`, `anthropic-version: 2023-06-01`, system messages joined into
 * the separate `system` field, the reply read from `content[].text` and usage
 * from `usage.input_tokens` (plus cache reads and writes) / `output_tokens`.
 * Keys come from `LLM_API_KEY`, else `ANTHROPIC_API_KEY`.
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
  env: { apiKey: ["LLM_API_KEY", "ANTHROPIC_API_KEY"], baseUrl: ["LLM_BASE_URL", "ANTHROPIC_BASE_URL"] },
  urlHint: "the Anthropic base URL is https://api.anthropic.com, without /v1 (the adapter adds /v1/messages).",
  request: Schema.transform(AnthropicRequest, ChatInput, {
    strict: true,
    decode: (body) => ({
      model: body.model,
      messages: [
        ...(body.system !== undefined ? [{ role: "system" as const, content: body.system }] : []),
        ...body.messages
      ],
      maxTokens: body.max_tokens,
      ...(body.temperature !== undefined ? { temperature: body.temperature } : {})
    }),
    encode: (input) => {
      const system = input.messages.filter((m) => m.role === "system").map((m) => m.content)
      return {
        model: input.model,
        max_tokens: input.maxTokens ?? anthropicDefaultMaxTokens,
        ...(system.length > 0 ? { system: system.join("\n\n") } : {}),
        messages: input.messages.flatMap((m) =>
          m.role === "system" ? [] : [{ role: m.role as "user" | "assistant", content: m.content }]
        ),
        ...(input.temperature !== undefined ? { temperature: input.temperature } : {})
      }
    }
  }),
  response: Schema.transformOrFail(AnthropicResponse, ChatOutput, {
    strict: true,
    decode: (reply, _, ast) => {
      const texts = reply.content.flatMap((block) =>
        block.type === "text" && typeof block.text === "string" ? [block.text] : []
      )
      if (texts.length === 0) {
        return ParseResult.fail(
          new ParseResult.Type(
            ast,
            reply,
            `"content" has no text block (stop_reason: ${reply.stop_reason ?? "none"})` +
              (reply.stop_reason === "max_tokens" ? "; raise maxTokens" : "")
          )
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
                usage.output_tokens ?? undefined
              )
      })
    },
    encode: (output) =>
      ParseResult.succeed({
        ...(output.model !== undefined ? { model: output.model } : {}),
        content: [{ type: "text", text: output.text }],
        stop_reason: "end_turn",
        ...(output.usage.inputTokens !== undefined || output.usage.outputTokens !== undefined
          ? {
              usage: {
                ...(output.usage.inputTokens !== undefined ? { input_tokens: output.usage.inputTokens } : {}),
                ...(output.usage.outputTokens !== undefined ? { output_tokens: output.usage.outputTokens } : {})
              }
            }
          : {})
      })
  })
}

// --- Ollama /api/chat --------------------------------------------------------

const OllamaRequest = Schema.Struct({
  model: Schema.String,
  messages: Schema.Array(WireMessage),
  stream: Schema.Literal(false),
  options: Schema.optionalWith(Schema.Struct({ temperature: optionalNumber, num_predict: optionalNumber }), {
    exact: true
  })
})

const OllamaResponse = Schema.Struct({
  model: Schema.optional(Schema.String),
  message: Schema.Struct({ role: Schema.optional(Schema.String), content: Schema.String }),
  done: Schema.optional(Schema.Boolean),
  prompt_eval_count: Schema.optional(Schema.NullOr(Schema.Number)),
  eval_count: Schema.optional(Schema.NullOr(Schema.Number))
})

/**
 * Ollama's native chat endpoint: `POST {baseUrl}/api/chat` with
 * `stream: false`, temperature and `num_predict` under `options`, the reply
 * from `message.content` and usage from `prompt_eval_count` / `eval_count`
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
  urlHint:
    "Ollama listens on http://localhost:11434 by default; give the base URL without /api (the adapter adds /api/chat).",
  request: Schema.transform(OllamaRequest, ChatInput, {
    strict: true,
    decode: (body) => ({
      model: body.model,
      messages: body.messages,
      ...(body.options?.temperature !== undefined ? { temperature: body.options.temperature } : {}),
      ...(body.options?.num_predict !== undefined ? { maxTokens: body.options.num_predict } : {})
    }),
    encode: (input) => ({
      model: input.model,
      messages: input.messages.map(({ content, role }) => ({ role, content })),
      stream: false as const,
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
    decode: (reply) => ({
      text: reply.message.content,
      ...(reply.model !== undefined ? { model: reply.model } : {}),
      usage: usageOf(reply.prompt_eval_count ?? undefined, reply.eval_count ?? undefined)
    }),
    encode: (output) => ({
      ...(output.model !== undefined ? { model: output.model } : {}),
      message: { role: "assistant", content: output.text },
      done: true,
      ...(output.usage.inputTokens !== undefined ? { prompt_eval_count: output.usage.inputTokens } : {}),
      ...(output.usage.outputTokens !== undefined ? { eval_count: output.usage.outputTokens } : {})
    })
  })
}
