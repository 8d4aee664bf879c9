/**
 * The model adapter service: chat messages in, text and token usage out.
 *
 * The run loop only talks to this tag; a real provider, the Fake adapter or an
 * `@effect/ai` bridge are different Layers for it.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"

/**
 * Who wrote a message. `"tool"` is the result of a tool call the model made
 * (see {@link ChatMessage.toolCallId}).
 *
 * @since 0.1.0
 * @category Models
 */
export const ChatRole = Schema.Literal("system", "user", "assistant", "tool")

/**
 * One tool call the model made: the provider's call id, the tool's name and
 * the arguments exactly as the model wrote them (JSON text; Anthropic's and
 * `@effect/ai`'s already decoded `input` is written back as JSON). Nothing is
 * checked here: arguments that are not JSON, or a name no tool has, arrive
 * as data for the caller to answer (see {@link decodeArguments}).
 *
 * @since 0.2.0
 * @category Models
 */
export class ToolCall extends Schema.Class<ToolCall>("@rlm-runtime/adapters/ToolCall")({
  id: Schema.String,
  name: Schema.String,
  arguments: Schema.String
}) {}

/**
 * A tool call's arguments decoded as JSON; `Left` says why they are not JSON.
 *
 * @since 0.2.0
 * @category Utils
 */
export const decodeArguments = (call: ToolCall): Either.Either<unknown, string> => {
  const text = call.arguments.trim()
  // Some servers send "" for a call without arguments.
  if (text === "") return Either.right({})
  try {
    return Either.right(JSON.parse(text) as unknown)
  } catch (cause) {
    return Either.left(`the arguments are not JSON (${(cause as Error).message})`)
  }
}

/**
 * One chat message. An assistant message may carry the tool calls the model
 * made (`toolCalls`); a `"tool"` message is the result of one of them, bound
 * to it by `toolCallId` (and `toolName`, which some providers want).
 *
 * @since 0.1.0
 * @category Models
 */
export class ChatMessage extends Schema.Class<ChatMessage>("@rlm-runtime/adapters/ChatMessage")({
  role: ChatRole,
  content: Schema.String,
  /** The tool calls of an assistant message. */
  toolCalls: Schema.optionalWith(Schema.Array(ToolCall), { exact: true }),
  /** For `role: "tool"`: the id of the call this message answers. */
  toolCallId: Schema.optionalWith(Schema.String, { exact: true }),
  /** For `role: "tool"`: the name of the tool that was called. */
  toolName: Schema.optionalWith(Schema.String, { exact: true })
}) {}

/**
 * A tool the model may call: its name, what it does, and its parameters as a
 * JSON Schema object (sent as is in the provider's field).
 *
 * @since 0.2.0
 * @category Models
 */
export class ToolDefinition extends Schema.Class<ToolDefinition>("@rlm-runtime/adapters/ToolDefinition")({
  name: Schema.String,
  description: Schema.String,
  parameters: Schema.Record({ key: Schema.String, value: Schema.Unknown })
}) {}

/**
 * Whether the model must call a tool: `"auto"` (it may), `"required"` (it
 * must call one), `"none"` (it must not), or `{ tool }` (it must call that
 * one).
 *
 * @since 0.2.0
 * @category Models
 */
export const ToolChoice = Schema.Union(
  Schema.Literal("auto", "required", "none"),
  Schema.Struct({ tool: Schema.String })
)

/**
 * @since 0.2.0
 * @category Models
 */
export type ToolChoice = typeof ToolChoice.Type

/**
 * Who a call is for: the root model driving the REPL, or a sub-call made from
 * model code (`llm_query`). Adapters may route the two roles to different models.
 *
 * @since 0.1.0
 * @category Models
 */
export const CallRole = Schema.Literal("root", "sub")

/**
 * @since 0.1.0
 * @category Models
 */
export type CallRole = typeof CallRole.Type

/**
 * Token usage of one call. A field the provider did not report is `undefined`
 * (unknown), never `0`.
 *
 * @since 0.1.0
 * @category Models
 */
export class Usage extends Schema.Class<Usage>("@rlm-runtime/adapters/Usage")({
  inputTokens: Schema.optional(Schema.Number),
  outputTokens: Schema.optional(Schema.Number),
  totalTokens: Schema.optional(Schema.Number),
  /**
   * The part of `inputTokens` the provider served from its prompt cache
   * (OpenAI `prompt_tokens_details.cached_tokens`, Anthropic
   * `cache_read_input_tokens`, llama.cpp `timings.cache_n`). Already counted
   * in `inputTokens`.
   */
  cachedInputTokens: Schema.optional(Schema.Number),
  /**
   * The part of `outputTokens` spent on hidden reasoning (OpenAI
   * `completion_tokens_details.reasoning_tokens`). Already counted in
   * `outputTokens`.
   */
  reasoningTokens: Schema.optional(Schema.Number)
}) {
  /**
   * @since 0.1.0
   */
  static readonly unknown: Usage = new Usage({})
}

/**
 * @since 0.1.0
 * @category Models
 */
export class ChatRequest extends Schema.Class<ChatRequest>("@rlm-runtime/adapters/ChatRequest")({
  role: CallRole,
  messages: Schema.Array(ChatMessage),
  /**
   * The most output tokens this call may produce (the run's remaining budget).
   * Every adapter sends it in its provider's field — chat completions
   * `max_tokens` / `max_completion_tokens`, Anthropic `max_tokens`, Ollama
   * `options.num_predict`, `@effect/ai` through `EffectAiAdapter`'s
   * `withMaxOutputTokens` — and the Fake adapter cuts its reply to it. A reply
   * cut there has `finishReason: "length"`.
   */
  maxOutputTokens: Schema.optional(Schema.Number),
  /** Tools the model may call, sent in the provider's tools field. Absent: a plain chat call. */
  tools: Schema.optionalWith(Schema.Array(ToolDefinition), { exact: true }),
  /** Sent only with `tools`; absent: the provider's default (`"auto"`). */
  toolChoice: Schema.optionalWith(ToolChoice, { exact: true })
}) {}

/**
 * Why the model stopped, in `@effect/ai`'s vocabulary: `"stop"` (a natural
 * end or a stop sequence), `"length"` (the output cap was reached: chat
 * completions `finish_reason: "length"`, Anthropic `stop_reason:
 * "max_tokens"`, Ollama `done_reason: "length"`), `"content-filter"`,
 * `"tool-calls"`, `"error"`, `"pause"`, `"other"` (a reason this library does
 * not know) and `"unknown"` (the provider said nothing).
 *
 * @since 0.1.0
 * @category Models
 */
export const FinishReason = Schema.Literal(
  "stop",
  "length",
  "content-filter",
  "tool-calls",
  "error",
  "pause",
  "other",
  "unknown"
)

/**
 * @since 0.1.0
 * @category Models
 */
export type FinishReason = typeof FinishReason.Type

/**
 * The token estimate used for budget reservations before a call is sent:
 * one token per four characters, rounded up. The Fake adapter reports usage
 * with the same estimate.
 *
 * @since 0.1.0
 * @category Utils
 */
export const estimateTokens = (text: string): number => Math.ceil(text.length / 4)

/**
 * The estimated input tokens of a request: the sum over its messages.
 *
 * @since 0.1.0
 * @category Utils
 */
export const estimateRequestTokens = (messages: ReadonlyArray<ChatMessage>): number =>
  messages.reduce(
    (n, m) =>
      n +
      estimateTokens(m.content) +
      (m.toolCalls === undefined ? 0 : m.toolCalls.reduce((k, call) => k + estimateTokens(call.arguments), 0)),
    0
  )

/**
 * @since 0.1.0
 * @category Models
 */
export class ChatResponse extends Schema.Class<ChatResponse>("@rlm-runtime/adapters/ChatResponse")({
  text: Schema.String,
  model: Schema.String,
  usage: Usage,
  /** Why the model stopped; absent when the adapter cannot tell. `"length"`: the reply hit the output cap. */
  finishReason: Schema.optional(FinishReason),
  /** The tool calls the model made, in order (absent or empty: none). */
  toolCalls: Schema.optionalWith(Schema.Array(ToolCall), { exact: true })
}) {}

/**
 * Why a model call failed. Each reason tells the user what to do next.
 *
 * @since 0.1.0
 * @category Errors
 */
export const LlmErrorReason = Schema.Literal(
  "ScriptExhausted",
  "NoRuleMatched",
  "RateLimited",
  "ServerError",
  "Unauthorized",
  "Forbidden",
  "ModelNotFound",
  "NotFound",
  "ContextTooLong",
  "BadRequest",
  "Timeout",
  "Transport",
  "MalformedResponse",
  "Unknown"
)

/**
 * @since 0.1.0
 * @category Errors
 */
export type LlmErrorReason = typeof LlmErrorReason.Type

/**
 * A failed model call.
 *
 * @since 0.1.0
 * @category Errors
 */
export class LlmError extends Schema.TaggedError<LlmError>("@rlm-runtime/adapters/LlmError")("LlmError", {
  reason: LlmErrorReason,
  message: Schema.String,
  status: Schema.optional(Schema.Number),
  retryable: Schema.optionalWith(Schema.Boolean, { default: () => false })
}) {}

/**
 * @since 0.1.0
 * @category Tags
 */
export class LlmAdapter extends Context.Tag("@rlm-runtime/adapters/LlmAdapter")<LlmAdapter, LlmAdapter.Service>() {}

/**
 * @since 0.1.0
 */
export declare namespace LlmAdapter {
  /**
   * @since 0.1.0
   * @category Models
   */
  export interface Service {
    /** The model name used for the given role (for traces and pricing). */
    readonly model: (role: CallRole) => string
    /** Send one chat request. */
    readonly chat: (request: ChatRequest) => Effect.Effect<ChatResponse, LlmError>
  }
}

/**
 * Build an adapter service from a chat function.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = (service: LlmAdapter.Service): LlmAdapter.Service => service

/**
 * Route root calls to one adapter and sub-calls to another, for example a
 * large root model with a small sub model.
 *
 * @since 0.1.0
 * @category Combinators
 */
export const byRole = (adapters: {
  readonly root: LlmAdapter.Service
  readonly sub: LlmAdapter.Service
}): LlmAdapter.Service => ({
  model: (role) => adapters[role].model(role),
  chat: (request) => adapters[request.role].chat(request)
})
