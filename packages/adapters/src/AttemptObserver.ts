/**
 * Failed attempts of a model call, made visible to whoever makes the call.
 *
 * An adapter that retries (the HTTP adapters retry 429s, 5xx, timeouts and
 * dropped connections) tells each failed attempt it is about to retry to the
 * observer in the calling fiber's {@link currentObserver}; the run loop sets
 * one around each model call, so every retry shows in the run's events (a
 * `ModelCallRetried` trace event, a progress line) and the tokens a failed
 * attempt's response reported count in the budget. Nothing changes for an
 * `LlmAdapter` that does not report: the observer is optional, and with none
 * set {@link report} does nothing.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Schema from "effect/Schema"
import { LlmErrorReason, Usage } from "./LlmAdapter.js"

/**
 * One failed attempt that is retried: its number (from 1), why it failed,
 * the HTTP status when there was one, the wait before the next attempt, and
 * the usage its response reported (when it carried any).
 *
 * @since 0.2.0
 * @category Models
 */
export class AttemptFailed extends Schema.Class<AttemptFailed>("@rlm-runtime/adapters/AttemptFailed")({
  attempt: Schema.Number,
  reason: LlmErrorReason,
  message: Schema.String,
  status: Schema.optional(Schema.Number),
  delayMs: Schema.Number,
  usage: Schema.optional(Usage)
}) {}

/**
 * What is told each failed attempt.
 *
 * @since 0.2.0
 * @category Models
 */
export type Observer = (attempt: AttemptFailed) => Effect.Effect<void>

/**
 * The observer of the calling fiber; by default none (attempts go nowhere).
 *
 * @since 0.2.0
 * @category FiberRefs
 */
export const currentObserver: FiberRef.FiberRef<Observer | undefined> = FiberRef.unsafeMake<Observer | undefined>(
  undefined
)

/**
 * Tell the calling fiber's observer about a failed attempt (for adapters that
 * retry). Never fails; an observer's defect is ignored.
 *
 * @since 0.2.0
 * @category Reporting
 */
export const report = (attempt: AttemptFailed): Effect.Effect<void> =>
  Effect.flatMap(FiberRef.get(currentObserver), (observer) =>
    observer === undefined ? Effect.void : Effect.catchAllCause(observer(attempt), () => Effect.void)
  )

/**
 * Run `self` (a model call) with `observer` told each failed attempt it
 * retries.
 *
 * @since 0.2.0
 * @category Combinators
 */
export const observe =
  (observer: Observer) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.locally(self, currentObserver, observer)
