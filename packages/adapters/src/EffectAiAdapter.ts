/**
 * An `LlmAdapter` from any `@effect/ai` `LanguageModel` service, so the
 * providers Effect maintains (`@effect/ai-openai`, `@effect/ai-anthropic`,
 * `@effect/ai-google`, …) plug in as Layers:
 *
 * ```ts
 * const Adapter = EffectAiAdapter.layer({ model: "claude-sonnet-4" }).pipe(
 *   Layer.provide(AnthropicLanguageModel.model("claude-sonnet-4")),
 *   Layer.provide(AnthropicClient.layerConfig({ apiKey: Config.redacted("ANTHROPIC_API_KEY") }))
 * )
 * ```
 *
 * Chat messages become a `Prompt`, the reply is `.text`, usage fields the
 * provider did not report stay unknown, `.finishReason` is the response's
 * (`"length"` when the output cap was hit), and every `AiError` becomes an
 * `LlmError` (an HTTP status is classified like the HTTP adapters do).
 * Retries are left to the provider's own client.
 *
 * The output cap: `LanguageModel.generateText` in `@effect/ai` 0.37 has no
 * max-tokens option — each provider reads it from its own config service —
 * so pass `withMaxOutputTokens`, which applies a request's cap to the call,
 * e.g. `(n) => OpenAiLanguageModel.withConfigOverride({ max_output_tokens: n })`
 * or `(n) => AnthropicLanguageModel.withConfigOverride({ max_tokens: n })`.
 * Without it the cap is not sent, and a debug log says so once per adapter.
 *
 * @since 0.1.0
 */
import type * as AiError from "@effect/ai/AiError"
import * as LanguageModel from "@effect/ai/LanguageModel"
import * as Prompt from "@effect/ai/Prompt"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as errors from "./internal/httpErrors.js"
import {
  type ChatMessage,
  type ChatRequest,
  ChatResponse,
  LlmAdapter,
  LlmError,
  make as makeAdapter,
  Usage
} from "./LlmAdapter.js"

/**
 * @since 0.1.0
 * @category Models
 */
export interface Options {
  /** The model name reported for traces and pricing (the LanguageModel does not expose it). */
  readonly model: string
  /** Provider name used in error messages (default `"@effect/ai LanguageModel"`). */
  readonly provider?: string | undefined
  /**
   * Send a request's `maxOutputTokens` in the provider's own field, e.g.
   * `(n) => OpenAiLanguageModel.withConfigOverride({ max_output_tokens: n })`.
   * Called only for requests with a cap.
   */
  readonly withMaxOutputTokens?:
    | ((maxOutputTokens: number) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>)
    | undefined
}

/**
 * Chat messages as an `@effect/ai` `Prompt`.
 *
 * @since 0.1.0
 * @category Conversions
 */
export const toPrompt = (messages: ReadonlyArray<ChatMessage>): Prompt.Prompt =>
  Prompt.make(messages.map((message) => ({ role: message.role, content: message.content })))

/**
 * An `AiError` as an `LlmError`.
 *
 * @since 0.1.0
 * @category Conversions
 */
export const fromAiError = (error: AiError.AiError, options: Options): LlmError => {
  const provider = options.provider ?? "@effect/ai LanguageModel"
  switch (error._tag) {
    case "HttpResponseError": {
      if (error.reason === "StatusCode") {
        const ctx: errors.ErrorContext = {
          provider,
          url: error.request.url,
          model: options.model,
          hasKey: true,
          keyEnv: ["the provider's API key setting"],
          urlEnv: ["the provider client's URL setting"]
        }
        return errors.fromStatus(error.response.status, error.body ?? error.description ?? error.message, ctx)
      }
      return new LlmError({
        reason: "MalformedResponse",
        status: error.response.status,
        message: `${provider} could not read the reply of model "${options.model}": ${error.message}`
      })
    }
    case "HttpRequestError":
      return new LlmError({
        reason: "Transport",
        retryable: error.reason === "Transport",
        message: `${provider} could not send the request for model "${options.model}": ${error.message}`
      })
    case "MalformedInput":
      return new LlmError({
        reason: "BadRequest",
        message: `${provider} rejected the prompt for model "${options.model}" as malformed: ${error.message}`
      })
    case "MalformedOutput":
      return new LlmError({
        reason: "MalformedResponse",
        message: `${provider} returned a reply for model "${options.model}" that could not be decoded: ${error.message}`
      })
    case "UnknownError":
      return new LlmError({
        reason: "Unknown",
        message: `${provider} failed for model "${options.model}": ${error.message}`
      })
  }
}

/** The model id the provider reported in the reply's `response-metadata` part, if any. */
const reportedModel = (content: ReadonlyArray<{ readonly type: string }>): string | undefined => {
  for (const part of content) {
    if (part.type !== "response-metadata") continue
    const id = (part as unknown as { readonly modelId: Option.Option<string> }).modelId
    if (Option.isOption(id) && Option.isSome(id) && id.value.length > 0) return id.value
  }
  return undefined
}

/**
 * An adapter over a given `LanguageModel` service.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const fromLanguageModel = (model: LanguageModel.Service, options: Options): LlmAdapter.Service => {
  let warned = false
  const capped = <A, E, R>(request: ChatRequest, self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
    const cap = request.maxOutputTokens
    if (cap === undefined) return self
    if (options.withMaxOutputTokens !== undefined) {
      return options.withMaxOutputTokens(Math.max(1, Math.floor(cap)))(self)
    }
    if (warned) return self
    warned = true
    return Effect.zipRight(
      Effect.logDebug(
        `EffectAiAdapter for "${options.model}": a call has an output cap (${cap}) but no withMaxOutputTokens ` +
          `option was given, so the cap is not sent to the provider`
      ),
      self
    )
  }
  return makeAdapter({
    model: () => options.model,
    chat: (request: ChatRequest) =>
      capped(request, model.generateText({ prompt: toPrompt(request.messages) })).pipe(
        Effect.mapError((error) => fromAiError(error, options)),
        Effect.map((response) => {
          const usage = response.usage
          return new ChatResponse({
            text: response.text,
            model: reportedModel(response.content) ?? options.model,
            usage: new Usage({
              ...(usage.inputTokens !== undefined ? { inputTokens: usage.inputTokens } : {}),
              ...(usage.outputTokens !== undefined ? { outputTokens: usage.outputTokens } : {}),
              ...(usage.totalTokens !== undefined ? { totalTokens: usage.totalTokens } : {}),
              ...(usage.cachedInputTokens !== undefined ? { cachedInputTokens: usage.cachedInputTokens } : {}),
              ...(usage.reasoningTokens !== undefined ? { reasoningTokens: usage.reasoningTokens } : {})
            }),
            ...(response.finishReason !== "unknown" ? { finishReason: response.finishReason } : {})
          })
        }),
        Effect.withSpan("EffectAiAdapter.chat", { attributes: { model: options.model, role: request.role } })
      )
  })
}

/**
 * An adapter over the `LanguageModel` in the context.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = (options: Options): Effect.Effect<LlmAdapter.Service, never, LanguageModel.LanguageModel> =>
  Effect.map(LanguageModel.LanguageModel, (model) => fromLanguageModel(model, options))

/**
 * @since 0.1.0
 * @category Layers
 */
export const layer = (options: Options): Layer.Layer<LlmAdapter, never, LanguageModel.LanguageModel> =>
  Layer.effect(LlmAdapter, make(options))
