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
 * Chat messages become a `Prompt`, the reply is `.text` (and its tool-call
 * parts, when the request has tools), usage fields the
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
 * Tools: a request's tool definitions are passed as a toolkit whose tools
 * take their JSON Schema as is, with `disableToolCallResolution: true`, so
 * the model's tool calls come back as parts and are never run here. Their
 * parameters are not checked (any JSON is accepted), so a call with odd
 * arguments is data for the caller; the provider itself fails a call whose
 * arguments are not JSON, or that names a tool the toolkit does not have.
 *
 * @since 0.1.0
 */
import type * as AiError from "@effect/ai/AiError"
import * as LanguageModel from "@effect/ai/LanguageModel"
import * as Prompt from "@effect/ai/Prompt"
import * as Tool from "@effect/ai/Tool"
import type * as Toolkit from "@effect/ai/Toolkit"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Option from "effect/Option"
import * as errors from "./internal/httpErrors.js"
import {
  type ChatMessage,
  type ChatRequest,
  ChatResponse,
  LlmAdapter,
  decodeArguments,
  LlmError,
  make as makeAdapter,
  ToolCall,
  type ToolDefinition,
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
  Prompt.make(messages.map(toPromptMessage))

const toPromptMessage = (message: ChatMessage): Prompt.MessageEncoded => {
  switch (message.role) {
    case "tool":
      return {
        role: "tool",
        content: [
          {
            type: "tool-result",
            id: message.toolCallId ?? "",
            name: message.toolName ?? "",
            isFailure: false,
            result: message.content,
            providerExecuted: false
          }
        ]
      }
    case "assistant":
      if (message.toolCalls === undefined || message.toolCalls.length === 0) {
        return { role: "assistant", content: message.content }
      }
      return {
        role: "assistant",
        content: [
          ...(message.content.length > 0 ? [{ type: "text" as const, text: message.content }] : []),
          ...message.toolCalls.map((call) => ({
            type: "tool-call" as const,
            id: call.id,
            name: call.name,
            // Arguments that are not JSON go back as the text the model wrote.
            params: Either.getOrElse(decodeArguments(call), () => call.arguments),
            providerExecuted: false
          }))
        ]
      }
    default:
      return { role: message.role, content: message.content }
  }
}

/**
 * Tool definitions as an `@effect/ai` toolkit: each tool's parameters are its
 * JSON Schema as is (the call's params are not decoded), and its handler is
 * never run (the adapter asks with `disableToolCallResolution: true`).
 *
 * @since 0.2.0
 * @category Conversions
 */
export const toToolkit = (tools: ReadonlyArray<ToolDefinition>): Toolkit.WithHandler<Record<string, Tool.Any>> => {
  const byName: Record<string, Tool.Any> = {}
  for (const definition of tools) {
    const tool = Tool.make(definition.name, { description: definition.description })
    byName[definition.name] = Object.assign(Object.create(Object.getPrototypeOf(tool)), tool, {
      parametersSchema: Schema.Unknown.annotations({ jsonSchema: definition.parameters })
    }) as Tool.Any
  }
  return {
    tools: byName,
    handle: (name) =>
      Effect.dieMessage(`EffectAiAdapter: the tool "${String(name)}" was to be run, but tool calls are never resolved`)
  }
}

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

/** One call: plain text, or with the request's tools (never resolved). */
const generate = (model: LanguageModel.Service, request: ChatRequest) => {
  const prompt = toPrompt(request.messages)
  if (request.tools === undefined || request.tools.length === 0) return model.generateText({ prompt })
  return model.generateText({
    prompt,
    toolkit: toToolkit(request.tools),
    ...(request.toolChoice !== undefined ? { toolChoice: request.toolChoice } : {}),
    disableToolCallResolution: true
  } as LanguageModel.GenerateTextOptions<Record<string, Tool.Any>>)
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
      capped(request, generate(model, request)).pipe(
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
            ...(response.finishReason !== "unknown" ? { finishReason: response.finishReason } : {}),
            ...(response.toolCalls.length > 0
              ? {
                  toolCalls: response.toolCalls.map(
                    (part) =>
                      new ToolCall({
                        id: part.id,
                        name: part.name,
                        arguments: typeof part.params === "string" ? part.params : JSON.stringify(part.params ?? {})
                      })
                  )
                }
              : {})
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
