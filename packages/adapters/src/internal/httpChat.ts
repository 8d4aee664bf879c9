import * as Headers from "@effect/platform/Headers"
import type * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type { LlmError, Usage } from "../LlmAdapter.js"
import * as errors from "./httpErrors.js"
import * as retry from "./httpRetry.js"

/** @internal */
export interface Auth {
  /** Header carrying the key, e.g. `authorization` or `x-api-key`. */
  readonly header: string
  /** Prefix before the key, e.g. `"Bearer "`. */
  readonly prefix?: string | undefined
}

/** @internal */
export interface PostOptions {
  readonly url: string
  readonly headers: Readonly<Record<string, string>>
  readonly auth?: Auth | undefined
  readonly apiKey: Option.Option<Redacted.Redacted<string>>
  readonly body: unknown
  readonly timeout: Duration.Duration
  readonly retry: retry.RetryPolicy
  readonly context: errors.ErrorContext
  /** Read the usage out of a failed response's JSON body, when it reports any. */
  readonly usageOf?: ((json: unknown) => Usage | undefined) | undefined
}

/** @internal */
export interface PostResult {
  readonly json: unknown
  readonly text: string
}

/**
 * Join a base URL and a path without doubling or dropping slashes.
 *
 * @internal
 */
export const joinUrl = (base: string, path: string): string => `${base.replace(/\/+$/, "")}/${path.replace(/^\/+/, "")}`

const buildHeaders = (options: PostOptions): Record<string, string> => {
  const headers: Record<string, string> = { accept: "application/json" }
  for (const [name, value] of Object.entries(options.headers)) headers[name.toLowerCase()] = value
  if (options.auth !== undefined && Option.isSome(options.apiKey)) {
    headers[options.auth.header.toLowerCase()] = `${options.auth.prefix ?? ""}${Redacted.value(options.apiKey.value)}`
  }
  return headers
}

/**
 * Some servers echo the key they rejected; error messages end up in traces,
 * so the key is cut out of any server text we quote.
 */
const scrubber = (apiKey: Option.Option<Redacted.Redacted<string>>) => {
  if (Option.isNone(apiKey)) return (text: string) => text
  const key = Redacted.value(apiKey.value)
  return key.length < 6 ? (text: string) => text : (text: string) => text.split(key).join("<redacted>")
}

/** The usage a failed response's body reports, if it is JSON the dialect can read usage from. */
const failedUsage = (options: PostOptions, text: string): Usage | undefined => {
  if (options.usageOf === undefined) return undefined
  try {
    return options.usageOf(JSON.parse(text))
  } catch {
    return undefined
  }
}

/**
 * One attempt: send the request, read the whole body, classify the status.
 * The key lives only in the request headers, which `@effect/platform` redacts
 * in spans and logs (the auth header is added to the redacted names).
 */
const attempt = (
  client: HttpClient.HttpClient,
  options: PostOptions
): Effect.Effect<PostResult, retry.AttemptFailure> => {
  const ctx = options.context
  const scrub = scrubber(options.apiKey)
  const request = HttpClientRequest.post(options.url).pipe(
    HttpClientRequest.setHeaders(buildHeaders(options)),
    HttpClientRequest.bodyUnsafeJson(options.body)
  )
  const exchange = Effect.flatMap(client.execute(request), (response) =>
    Effect.map(response.text, (text) => ({ status: response.status, headers: response.headers, text }))
  )
  return exchange.pipe(
    Effect.catchTags({
      RequestError: (error) =>
        Effect.fail<retry.AttemptFailure>({
          error: errors.fromTransport(error.cause ?? error, ctx, error.reason === "InvalidUrl")
        }),
      ResponseError: (error) =>
        Effect.fail<retry.AttemptFailure>({ error: errors.fromTransport(error.cause ?? error, ctx) })
    }),
    Effect.timeoutFail({
      duration: options.timeout,
      onTimeout: (): retry.AttemptFailure => ({ error: errors.timeout(Duration.toMillis(options.timeout), ctx) })
    }),
    Effect.flatMap(({ headers, status, text }) => {
      if (status < 200 || status >= 300) {
        return Effect.flatMap(retry.now, (now) =>
          Effect.fail<retry.AttemptFailure>({
            error: errors.fromStatus(status, scrub(text), ctx),
            retryAfterMillis: status === 429 || status >= 500 ? retry.parseRetryAfter(headers, now) : undefined,
            usage: failedUsage(options, text)
          })
        )
      }
      try {
        return Effect.succeed({ json: JSON.parse(text) as unknown, text })
      } catch (cause) {
        return Effect.fail<retry.AttemptFailure>({
          error: errors.malformed(ctx, `the body is not JSON (${(cause as Error).message})`, scrub(text))
        })
      }
    }),
    Effect.locallyWith(Headers.currentRedactedNames, (names) =>
      options.auth === undefined ? names : [...names, options.auth.header.toLowerCase()]
    )
  )
}

/**
 * POST a JSON body and read a JSON reply, with timeout per attempt and
 * bounded retries of 429, 5xx, timeouts and dropped connections.
 *
 * @internal
 */
export const postJson = (client: HttpClient.HttpClient, options: PostOptions): Effect.Effect<PostResult, LlmError> =>
  retry.retrying(attempt(client, options), options.retry)
