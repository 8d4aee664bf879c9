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
import * as Schema from "effect/Schema"

/**
 * @since 0.1.0
 * @category Models
 */
export const ChatRole = Schema.Literal("system", "user", "assistant")

/**
 * @since 0.1.0
 * @category Models
 */
export class ChatMessage extends Schema.Class<ChatMessage>("@rlm-runtime/adapters/ChatMessage")({
  role: ChatRole,
  content: Schema.String
}) {}

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
  maxOutputTokens: Schema.optional(Schema.Number)
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
  messages.reduce((n, m) => n + estimateTokens(m.content), 0)

/**
 * @since 0.1.0
 * @category Models
 */
export class ChatResponse extends Schema.Class<ChatResponse>("@rlm-runtime/adapters/ChatResponse")({
  text: Schema.String,
  model: Schema.String,
  usage: Usage,
  /** Why the model stopped; absent when the adapter cannot tell. `"length"`: the reply hit the output cap. */
  finishReason: Schema.optional(FinishReason)
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
