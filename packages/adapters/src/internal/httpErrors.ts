import { LlmError, type LlmErrorReason } from "../LlmAdapter.js"

/**
 * What the error messages may mention to tell the user what to change.
 *
 * @internal
 */
export interface ErrorContext {
  /** e.g. "OpenAI-compatible server", "Anthropic Messages API". */
  readonly provider: string
  readonly url: string
  readonly model: string
  readonly hasKey: boolean
  /** Environment variables the key is read from, in order. */
  readonly keyEnv: ReadonlyArray<string>
  /** Environment variables the base URL is read from, in order. */
  readonly urlEnv: ReadonlyArray<string>
  /** Extra advice for a wrong URL (404 without a model mention, refused connection). */
  readonly urlHint?: string | undefined
}

const maxServerText = 2_000

/** @internal */
export const excerpt = (text: string, max = maxServerText): string =>
  text.length > max ? `${text.slice(0, max)}… (${text.length - max} more characters)` : text

const stringField = (value: unknown, key: string): string | undefined => {
  if (typeof value === "object" && value !== null && key in value) {
    const field = (value as Record<string, unknown>)[key]
    if (typeof field === "string" && field.length > 0) return field
  }
  return undefined
}

/**
 * The server's own error text: `error.message` (OpenAI, Anthropic, OpenRouter),
 * `error` as a string (Ollama), `message` (vLLM), `detail` (FastAPI servers),
 * else the raw body.
 *
 * @internal
 */
export const serverErrorText = (body: string): string => {
  let json: unknown
  try {
    json = JSON.parse(body)
  } catch {
    return excerpt(body.trim())
  }
  if (typeof json === "object" && json !== null) {
    const error = (json as Record<string, unknown>).error
    const nested = stringField(error, "message")
    if (nested !== undefined) {
      const code = stringField(error, "code") ?? stringField(error, "type")
      return excerpt(code !== undefined ? `${nested} [${code}]` : nested)
    }
    if (typeof error === "string" && error.length > 0) return excerpt(error)
    const message = stringField(json, "message") ?? stringField(json, "detail")
    if (message !== undefined) return excerpt(message)
    const detail = (json as Record<string, unknown>).detail
    if (detail !== undefined) return excerpt(JSON.stringify(detail))
  }
  return excerpt(body.trim())
}

const contextTooLong =
  /context[_ ]length|context window|context size|maximum context|too many tokens|prompt is too long|prompt too long|request_too_large|input is too long|exceeds the (?:model'?s? )?(?:maximum|max)|n_ctx/i

const mentionsModel = /model/i

const said = (text: string) => (text.length > 0 ? ` Server said: ${text}` : " The server sent no error text.")

const or = (names: ReadonlyArray<string>) => names.join(" or ")

/**
 * Turn an HTTP error status into an actionable `LlmError`.
 *
 * @internal
 */
export const fromStatus = (status: number, body: string, ctx: ErrorContext): LlmError => {
  const text = serverErrorText(body)
  const make = (reason: LlmErrorReason, message: string, retryable = false) =>
    new LlmError({ reason, message, status, retryable })
  const where = `${ctx.provider} at ${ctx.url}`
  if (status === 401) {
    return make(
      "Unauthorized",
      `${where} rejected the request as unauthorized (401)` +
        (ctx.hasKey
          ? `: the API key is wrong or expired. Set ${or(ctx.keyEnv)} to a valid key for this server.`
          : `: no API key was sent. Set ${or(ctx.keyEnv)} in the environment.`) +
        said(text)
    )
  }
  if (status === 403) {
    return make(
      "Forbidden",
      `${where} refused access (403): the API key is valid but may not use model "${ctx.model}" or this endpoint. ` +
        `Check the key's permissions, organisation or project, or pick another model.${said(text)}`
    )
  }
  if (status === 404) {
    return mentionsModel.test(text)
      ? make(
          "ModelNotFound",
          `Model "${ctx.model}" was not found at ${where} (404). Check the model name (--model / --sub-model); ` +
            `the server lists its models, and a local server may need the model pulled or loaded first.${said(text)}`
        )
      : make(
          "NotFound",
          `Nothing answers at ${ctx.url} (404). Check the base URL (${or(ctx.urlEnv)} or --base-url)` +
            `${ctx.urlHint !== undefined ? `: ${ctx.urlHint}` : "."}${said(text)}`
        )
  }
  if ((status === 400 || status === 413 || status === 422) && contextTooLong.test(text)) {
    return make(
      "ContextTooLong",
      `The prompt is longer than model "${ctx.model}" accepts (${status}). Use a model with a larger context window, ` +
        `lower the amount of REPL output shown to the model, or raise the server's context size ` +
        `(e.g. llama.cpp --ctx-size, vLLM --max-model-len, Ollama num_ctx).${said(text)}`
    )
  }
  if (status === 429) {
    return /insufficient_quota|quota|billing|credit/i.test(text)
      ? make(
          "RateLimited",
          `${where} refused the request for lack of quota or credit (429); retrying will not help. ` +
            `Check the account's billing and limits.${said(text)}`
        )
      : make(
          "RateLimited",
          `${where} is rate limiting requests (429). Wait, lower the number of concurrent sub-calls ` +
            `(--concurrency), or raise the account's rate limit.${said(text)}`,
          true
        )
  }
  if (status === 408) {
    return make("Timeout", `${where} timed out reading the request (408).${said(text)}`, true)
  }
  if (status >= 500) {
    return make(
      "ServerError",
      `${where} failed with a server error (${status}). This is usually temporary; if it persists, check the server's ` +
        `logs or status page.${said(text)}`,
      true
    )
  }
  if (status === 400 || status === 413 || status === 422) {
    const capField = /max_completion_tokens|max_tokens/i.test(text)
      ? " If it is about the output cap's field, set maxTokensField to the other one (max_tokens or " +
        "max_completion_tokens)."
      : ""
    return make(
      "BadRequest",
      `${where} rejected the request (${status}). Check the model name and parameters (temperature, max tokens, ` +
        `extra body fields).${capField}${said(text)}`
    )
  }
  return make("Unknown", `${where} answered with unexpected status ${status}.${said(text)}`)
}

const errorCodes = (cause: unknown): ReadonlyArray<string> => {
  const codes: Array<string> = []
  let current: unknown = cause
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === "string") codes.push(code)
    current = (current as { cause?: unknown }).cause
  }
  return codes
}

const describe = (cause: unknown): string => {
  const parts: Array<string> = []
  let current: unknown = cause
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    if (current instanceof Error) {
      const code = (current as { code?: unknown }).code
      parts.push(
        typeof code === "string" && !current.message.includes(code) ? `${current.message} (${code})` : current.message
      )
      current = (current as { cause?: unknown }).cause
    } else {
      parts.push(String(current))
      break
    }
  }
  return parts.filter((p) => p.length > 0).join(": ")
}

const configErrors = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ERR_INVALID_URL", "CERT_HAS_EXPIRED"])

/**
 * A transport failure (no HTTP status). Resets and other socket errors are
 * retryable; refused connections and unknown hosts are configuration errors
 * and fail at once.
 *
 * @internal
 */
export const fromTransport = (cause: unknown, ctx: ErrorContext, invalidUrl = false): LlmError => {
  const codes = errorCodes(cause)
  const detail = describe(cause)
  const isConfig = invalidUrl || codes.some((code) => configErrors.has(code))
  return new LlmError({
    reason: "Transport",
    retryable: !isConfig,
    message: isConfig
      ? `Could not connect to ${ctx.provider} at ${ctx.url} (${detail}). Is the server running, and is the base URL ` +
        `(${or(ctx.urlEnv)} or --base-url) right?${ctx.urlHint !== undefined ? ` ${ctx.urlHint}` : ""}`
      : `The connection to ${ctx.provider} at ${ctx.url} failed (${detail}).`
  })
}

/** @internal */
export const timeout = (millis: number, ctx: ErrorContext): LlmError =>
  new LlmError({
    reason: "Timeout",
    retryable: true,
    message:
      `${ctx.provider} at ${ctx.url} did not answer within ${millis} ms. Raise the request timeout if the model is ` +
      `slow (large prompts on local servers can take minutes), or check that the server is not stuck.`
  })

/** @internal */
export const malformed = (ctx: ErrorContext, what: string, body: string): LlmError =>
  new LlmError({
    reason: "MalformedResponse",
    message:
      `${ctx.provider} at ${ctx.url} sent a reply that could not be read: ${what}. Check that the base URL points ` +
      `at the right kind of API. Body: ${excerpt(body, 500)}`
  })
