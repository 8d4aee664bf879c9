/**
 * The ways a run ends without an answer. Every error carries the partial
 * trace, so nothing recorded before the failure is lost.
 *
 * @since 0.1.0
 */

import { Trace } from "@rlm-runtime/trace/Trace"
import * as Schema from "effect/Schema"

/**
 * The limits a policy bounds.
 *
 * @since 0.1.0
 * @category Models
 */
export const Limit = Schema.Literal(
  "maxSteps",
  "maxSubCalls",
  "maxInputTokens",
  "maxOutputTokens",
  "maxTotalTokens",
  "maxCostUsd",
  "timeoutMs",
  "maxConsecutiveErrors"
)

/**
 * @since 0.1.0
 * @category Models
 */
export type Limit = typeof Limit.Type

/**
 * A budget limit was hit. The call that would have exceeded it was not sent.
 *
 * @since 0.1.0
 * @category Errors
 */
export class BudgetExceeded extends Schema.TaggedError<BudgetExceeded>("@rlm-runtime/core/BudgetExceeded")(
  "BudgetExceeded",
  {
    limit: Limit,
    /** The limit's value. */
    value: Schema.Number,
    /** What was used (or would have been, for the refused call). */
    used: Schema.Number,
    message: Schema.String,
    /** The trace up to the failure (filled in when the run ends). */
    trace: Schema.UndefinedOr(Trace),
    /** The best answer known when the run stopped, if any. */
    partialAnswer: Schema.Option(Schema.String)
  }
) {}

/**
 * Why a run failed, other than a budget:
 * - `Model`: the root model call failed.
 * - `Sandbox`: the sandbox could not start, or closed.
 * - `SandboxRestarts`: the run's interpreter was lost more than
 *   `Policy.maxSandboxRestarts` times (`cause`: the last `SandboxError`).
 * - `Timeout`.
 * - `InvalidOptions`: a run option has a value the run cannot use (e.g. a
 *   `protocol` other than `"fenced"` or `"tools"`); nothing was started.
 * - `Tools`: a user tool's name clashes with a built-in or is not an
 *   identifier (`Rlm.run`'s `tools`); nothing was run.
 *
 * @since 0.1.0
 * @category Errors
 */
export const RunFailedReason = Schema.Literal(
  "Model",
  "Sandbox",
  "SandboxRestarts",
  "Timeout",
  "InvalidOptions",
  "Tools"
)

/**
 * @since 0.1.0
 * @category Errors
 */
export type RunFailedReason = typeof RunFailedReason.Type

/**
 * A run failed: the model provider or the sandbox broke. `cause` is the
 * original typed error (`LlmError`, `SandboxError`).
 *
 * @since 0.1.0
 * @category Errors
 */
export class RunFailed extends Schema.TaggedError<RunFailed>("@rlm-runtime/core/RunFailed")("RunFailed", {
  reason: RunFailedReason,
  message: Schema.String,
  cause: Schema.Unknown,
  trace: Schema.UndefinedOr(Trace),
  partialAnswer: Schema.Option(Schema.String)
}) {}

/**
 * @since 0.1.0
 * @category Errors
 */
export type RlmError = BudgetExceeded | RunFailed
