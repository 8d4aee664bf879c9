/**
 * Every error the server answers with, in OpenAI's error JSON shape:
 *
 * ```json
 * { "error": { "message": "…", "type": "invalid_request_error", "param": "messages", "code": "missing_query" } }
 * ```
 *
 * `ApiError` is the value handlers fail with; {@link toResponse} renders it
 * (status, body, and `Retry-After` for a 429).
 *
 * @since 0.1.0
 */
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Data from "effect/Data"
import * as Schema from "effect/Schema"

/**
 * The `error` object of an OpenAI error body.
 *
 * @since 0.1.0
 * @category Schemas
 */
export const ErrorObject = Schema.Struct({
  message: Schema.String,
  type: Schema.String,
  param: Schema.NullOr(Schema.String),
  code: Schema.NullOr(Schema.String)
})

/**
 * An OpenAI error body: `{"error": {"message", "type", "param", "code"}}`.
 *
 * @since 0.1.0
 * @category Schemas
 */
export const ErrorBody = Schema.Struct({ error: ErrorObject }).annotations({
  identifier: "ErrorBody",
  description: 'OpenAI\'s error shape: {"error": {"message", "type", "param", "code"}}.'
})

/**
 * @since 0.1.0
 * @category Schemas
 */
export type ErrorBody = typeof ErrorBody.Type

/**
 * The `type` of an error body: OpenAI's names where one fits.
 *
 * @since 0.1.0
 * @category Models
 */
export type ErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "not_found_error"
  | "rate_limit_error"
  | "budget_exceeded_error"
  | "upstream_error"
  | "server_error"
  | "timeout_error"

/**
 * An error the server answers with.
 *
 * @since 0.1.0
 * @category Errors
 */
export class ApiError extends Data.TaggedError("ApiError")<{
  readonly status: number
  readonly type: ErrorType
  readonly message: string
  readonly param?: string | undefined
  readonly code?: string | undefined
  /** Seconds, sent as `Retry-After` (429, 503). */
  readonly retryAfter?: number | undefined
}> {}

/**
 * The error body of an {@link ApiError}.
 *
 * @since 0.1.0
 * @category Rendering
 */
export const body = (e: ApiError): ErrorBody => ({
  error: { message: e.message, type: e.type, param: e.param ?? null, code: e.code ?? null }
})

/**
 * An {@link ApiError} as a JSON response with its status (and `Retry-After`).
 *
 * @since 0.1.0
 * @category Rendering
 */
export const toResponse = (e: ApiError): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.unsafeJson(body(e), {
    status: e.status,
    ...(e.retryAfter !== undefined ? { headers: { "retry-after": String(Math.max(1, Math.ceil(e.retryAfter))) } } : {})
  })

/**
 * A 400 `invalid_request_error`.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const invalid = (message: string, param?: string, code?: string): ApiError =>
  new ApiError({ status: 400, type: "invalid_request_error", message, param, code })

/**
 * A 404 for an id that names nothing.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const notFound = (message: string, param?: string, code = "not_found"): ApiError =>
  new ApiError({ status: 404, type: "not_found_error", message, param, code })
