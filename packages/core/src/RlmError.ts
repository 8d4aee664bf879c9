/**
 * The ways a run ends without an answer. Every error carries the partial
 * trace, so nothing recorded before the failure is lost.
 *
 * @since 0.1.0
 */

import type { Trace } from "@rlm-runtime/trace/Trace"
import * as Data from "effect/Data"
import type * as Option from "effect/Option"

/**
 * The limits a policy bounds.
 *
 * @since 0.1.0
 * @category Models
 */
export type Limit =
  | "maxSteps"
  | "maxSubCalls"
  | "maxInputTokens"
  | "maxOutputTokens"
  | "maxTotalTokens"
  | "maxCostUsd"
  | "timeoutMs"
  | "maxConsecutiveErrors"

/**
 * A budget limit was hit. The call that would have exceeded it was not sent.
 *
 * @since 0.1.0
 * @category Errors
 */
export class BudgetExceeded extends Data.TaggedError("BudgetExceeded")<{
  readonly limit: Limit
  /** The limit's value. */
  readonly value: number
  /** What was used (or would have been, for the refused call). */
  readonly used: number
  readonly message: string
  /** The trace up to the failure (filled in when the run ends). */
  readonly trace: Trace | undefined
  /** The best answer known when the run stopped, if any. */
  readonly partialAnswer: Option.Option<string>
}> {}

/**
 * Why a run failed, other than a budget:
 * - `Model`: the root model call failed.
 * - `Sandbox`: the sandbox could not start, or closed.
 * - `SandboxRestarts`: the run's interpreter was lost more than
 *   `Policy.maxSandboxRestarts` times (`cause`: the last `SandboxError`).
 * - `Timeout`.
 *
 * @since 0.1.0
 * @category Errors
 */
export type RunFailedReason = "Model" | "Sandbox" | "SandboxRestarts" | "Timeout"

/**
 * A run failed: the model provider or the sandbox broke. `cause` is the
 * original typed error (`LlmError`, `SandboxError`).
 *
 * @since 0.1.0
 * @category Errors
 */
export class RunFailed extends Data.TaggedError("RunFailed")<{
  readonly reason: RunFailedReason
  readonly message: string
  readonly cause: unknown
  readonly trace: Trace | undefined
  readonly partialAnswer: Option.Option<string>
}> {}

/**
 * @since 0.1.0
 * @category Errors
 */
export type RlmError = BudgetExceeded | RunFailed
