import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import * as AttemptObserver from "../AttemptObserver.js"
import { LlmError, type Usage } from "../LlmAdapter.js"

/** @internal */
export interface RetryPolicy {
  /** Retries after the first attempt (so `maxRetries + 1` attempts at most). */
  readonly maxRetries: number
  /** Delay before the first retry; doubled for each next one. */
  readonly baseDelay: Duration.Duration
  /** Cap of the exponential delay. */
  readonly maxDelay: Duration.Duration
  /** A `Retry-After` longer than this is not waited for: the call fails at once. */
  readonly maxRetryAfter: Duration.Duration
}

/** @internal */
export const defaultRetryPolicy: RetryPolicy = {
  maxRetries: 3,
  baseDelay: Duration.millis(500),
  maxDelay: Duration.seconds(30),
  maxRetryAfter: Duration.seconds(60)
}

/**
 * A failed attempt, with the server's requested delay if it sent one.
 *
 * @internal
 */
export interface AttemptFailure {
  readonly error: LlmError
  readonly retryAfterMillis?: number | undefined
  /** The usage the failed response reported, if it carried any. */
  readonly usage?: Usage | undefined
}

/**
 * Parse `Retry-After` (delta-seconds or an HTTP date) or `retry-after-ms`
 * into milliseconds from `now`. Unparseable values are ignored.
 *
 * @internal
 */
export const parseRetryAfter = (
  headers: Readonly<Record<string, string | undefined>>,
  now: number
): number | undefined => {
  const ms = headers["retry-after-ms"]
  if (ms !== undefined && /^\s*\d+(\.\d+)?\s*$/.test(ms)) {
    return Math.max(0, Number(ms))
  }
  const value = headers["retry-after"]
  if (value === undefined) return undefined
  if (/^\s*\d+(\.\d+)?\s*$/.test(value)) {
    return Math.max(0, Number(value) * 1000)
  }
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

/**
 * The delay before retry number `retry` (0-based): `baseDelay * 2^retry`,
 * capped at `maxDelay`, times a random factor in [0.5, 1) ("equal jitter").
 *
 * @internal
 */
export const backoff = (policy: RetryPolicy, retry: number): Effect.Effect<number> => {
  const exponential = Math.min(Duration.toMillis(policy.maxDelay), Duration.toMillis(policy.baseDelay) * 2 ** retry)
  return Effect.map(Random.nextRange(0.5, 1), (factor) => Math.round(exponential * factor))
}

const withAttempts = (error: LlmError, attempts: number, note?: string): LlmError =>
  attempts <= 1 && note === undefined
    ? error
    : new LlmError({
        reason: error.reason,
        status: error.status,
        retryable: error.retryable,
        message: `${error.message} (${attempts} attempt${attempts === 1 ? "" : "s"}${note !== undefined ? `; ${note}` : ""})`
      })

/**
 * Run `attempt` and retry retryable failures with exponential backoff and
 * jitter, waiting what `Retry-After` asks for when the server sends it. Each
 * failed attempt that is retried is told to the caller's
 * `AttemptObserver` before the wait.
 *
 * @internal
 */
export const retrying = <A>(
  attempt: Effect.Effect<A, AttemptFailure>,
  policy: RetryPolicy
): Effect.Effect<A, LlmError> => {
  const loop = (retry: number): Effect.Effect<A, LlmError> =>
    Effect.catchAll(attempt, (failure) => {
      const { error } = failure
      if (!error.retryable) return Effect.fail(withAttempts(error, retry + 1))
      if (retry >= policy.maxRetries) return Effect.fail(withAttempts(error, retry + 1, "giving up"))
      if (
        failure.retryAfterMillis !== undefined &&
        failure.retryAfterMillis > Duration.toMillis(policy.maxRetryAfter)
      ) {
        return Effect.fail(
          withAttempts(
            error,
            retry + 1,
            `the server asked to wait ${Math.ceil(failure.retryAfterMillis / 1000)} s, more than the ` +
              `${Duration.format(policy.maxRetryAfter)} allowed; try again later`
          )
        )
      }
      return Effect.flatMap(
        failure.retryAfterMillis !== undefined ? Effect.succeed(failure.retryAfterMillis) : backoff(policy, retry),
        (delay) =>
          Effect.logDebug(`model call failed (${error.reason}); retrying in ${delay} ms`).pipe(
            Effect.zipRight(
              AttemptObserver.report(
                new AttemptObserver.AttemptFailed({
                  attempt: retry + 1,
                  reason: error.reason,
                  message: error.message,
                  ...(error.status !== undefined ? { status: error.status } : {}),
                  delayMs: delay,
                  ...(failure.usage !== undefined ? { usage: failure.usage } : {})
                })
              )
            ),
            Effect.zipRight(Effect.sleep(Duration.millis(delay))),
            Effect.zipRight(loop(retry + 1))
          )
      )
    })
  return loop(0)
}

/** @internal */
export const now: Effect.Effect<number> = Clock.currentTimeMillis
