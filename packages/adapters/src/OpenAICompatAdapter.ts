/**
 * An `LlmAdapter` for any server speaking OpenAI's chat completions:
 * `POST {baseUrl}/chat/completions` over `@effect/platform`'s `HttpClient`
 * (provide `NodeHttpClient.layerUndici`, `FetchHttpClient.layer`, …).
 *
 * OpenAI, OpenRouter, llama.cpp's `llama-server`, vLLM, Ollama (`/v1`) and LM
 * Studio all serve this endpoint; `@effect/ai-openai` speaks only the
 * Responses API, which most local servers lack.
 *
 * Configuration from the environment (`layerConfig`):
 * - key: `LLM_API_KEY`, else `OPENAI_API_KEY` — redacted, sent as
 *   `Authorization: Bearer …`; with no key, no `Authorization` header at all;
 * - base URL: `LLM_BASE_URL`, else `OPENAI_BASE_URL`, else
 *   `https://api.openai.com/v1`.
 *
 * Budgets: every call is sent with an output cap (`max_tokens`, or
 * `max_completion_tokens` for OpenAI's own API, see `maxTokensField`), and a
 * `finish_reason: "length"` reply is a `ChatResponse` with
 * `finishReason: "length"`.
 *
 * Faults: 429, 5xx, timeouts and dropped connections are retried with
 * exponential backoff and jitter, honouring `Retry-After`, at most
 * `maxRetries` times; 400/401/403/404 never are. Every failure is an
 * `LlmError` whose message says what to change and quotes the server.
 *
 * @since 0.1.0
 */
import type * as HttpClient from "@effect/platform/HttpClient"
import type * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import type * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import * as GenericChatAdapter from "./GenericChatAdapter.js"
import type { LlmAdapter } from "./LlmAdapter.js"

/**
 * @since 0.1.0
 * @category Models
 */
export interface Options extends GenericChatAdapter.Options {
  /**
   * The request field carrying the output cap (the lower of `maxTokens` and
   * the run's remaining budget). `"auto"` (default): `max_completion_tokens`
   * when the base URL is OpenAI's own API (where `max_tokens` is deprecated
   * and rejected by reasoning models), `max_tokens` for every other server
   * (llama.cpp's `llama-server`, vLLM, Ollama's `/v1`, LM Studio,
   * OpenRouter). Force one for a server that reads only the other (e.g. an
   * OpenAI proxy on another host: `"max_completion_tokens"`).
   */
  readonly maxTokensField?: GenericChatAdapter.MaxTokensField | undefined
}

/**
 * The default base URL.
 *
 * @since 0.1.0
 * @category Defaults
 */
export const defaultBaseUrl = "https://api.openai.com/v1"

/**
 * The chat-completions dialect used by this adapter.
 *
 * @since 0.1.0
 * @category Dialects
 */
export const dialect = (options: Pick<Options, "maxTokensField"> = {}) =>
  GenericChatAdapter.openaiChatCompletions({ maxTokensField: options.maxTokensField })

/**
 * Key (`LLM_API_KEY`, else `OPENAI_API_KEY`; empty counts as unset) and base
 * URL (`LLM_BASE_URL`, else `OPENAI_BASE_URL`, else OpenAI's).
 *
 * @since 0.1.0
 * @category Config
 */
export const config: Config.Config<{
  readonly apiKey: Option.Option<Redacted.Redacted<string>>
  readonly baseUrl: string
}> = GenericChatAdapter.config(dialect().env, defaultBaseUrl)

/**
 * Build an adapter for one model.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = (options: Options): Effect.Effect<LlmAdapter.Service, never, HttpClient.HttpClient> =>
  GenericChatAdapter.make(dialect(options), options)

/**
 * Root and sub adapters, e.g. `{ model: "gpt-4.1", sub: { model: "gpt-4.1-mini" } }`
 * (sub options are merged over the root ones), combined with `LlmAdapter.byRole`.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const makeByRole = (
  options: Options & GenericChatAdapter.RoleOptions<Options>
): Effect.Effect<LlmAdapter.Service, never, HttpClient.HttpClient> =>
  GenericChatAdapter.makeByRole(dialect(options), options)

/**
 * @since 0.1.0
 * @category Layers
 */
export const layer = (
  options: Options & GenericChatAdapter.RoleOptions<Options>
): Layer.Layer<LlmAdapter, never, HttpClient.HttpClient> => GenericChatAdapter.layer(dialect(options), options)

/**
 * Like {@link layer}, with the key and base URL read from the environment.
 * A `baseUrl` given in the options (e.g. `--base-url`) wins over the
 * environment; the key is only ever read from the environment.
 *
 * @since 0.1.0
 * @category Layers
 */
export const layerConfig = (
  options: Omit<Options, "apiKey"> & GenericChatAdapter.RoleOptions<Omit<Options, "apiKey">>
): Layer.Layer<LlmAdapter, ConfigError.ConfigError, HttpClient.HttpClient> =>
  GenericChatAdapter.layerConfig(dialect(options), options)
