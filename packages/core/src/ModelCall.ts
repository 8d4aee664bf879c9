/**
 * The one path every model call of a run tree takes — the root model's turns,
 * `llm_query` sub-calls and the "answer now" call of
 * `onBudgetExceeded: "answer-now"`:
 *
 * depth permit → reserve budget (or grant it, for "answer now") → the adapter
 * under `callTimeoutMs` → commit the reported usage, or release the
 * reservation when the call failed or was interrupted
 * (`Effect.acquireUseRelease`).
 *
 * The commit and the caller's `onCommit` run in the same uninterruptible
 * release: a call whose usage is counted is always recorded. Each failed
 * attempt the adapter retries is told to `onRetry` as it happens (the
 * adapter reports it through `AttemptObserver`), and the tokens it reported
 * are committed with the call's: on success with the last attempt's usage, on
 * failure alone (instead of releasing the reservation).
 *
 * Each call is an `rlm.model_call` span (see `Tracing`): its role, model and
 * depth, then the reply's tokens and finish reason, or the error.
 *
 * @since 0.2.0
 */
import * as AttemptObserver from "@rlm-runtime/adapters/AttemptObserver"
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Budget from "./Budget.js"
import type * as Policy from "./Policy.js"
import * as Tracing from "./internal/tracing.js"
import type { BudgetExceeded } from "./RlmError.js"
import { Attribute, GenAiAttribute, SpanName } from "./Tracing.js"

/**
 * What a call needs from its run tree.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Deps {
  readonly adapter: LlmAdapter.LlmAdapter.Service
  readonly budget: Budget.Budget
  readonly policy: Policy.Policy
}

/**
 * One model call.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Request {
  readonly role: LlmAdapter.CallRole
  /** The depth of the run making the call: its permit is taken from that level's semaphore. */
  readonly depth: number
  readonly messages: ReadonlyArray<LlmAdapter.ChatMessage>
  /** Tools the model may call (the tools protocol's root calls); absent: a plain chat call. */
  readonly tools?: ReadonlyArray<LlmAdapter.ToolDefinition> | undefined
  /**
   * `"reserve"` (default): checked against every limit, refused (nothing sent)
   * when one would be passed. `"grant"`: the one call granted outside the
   * limits by `onBudgetExceeded: "answer-now"`; its usage is still counted.
   */
  readonly admission?: "reserve" | "grant" | undefined
  /** Runs when the call is sent (its permit and reservation held). */
  readonly onStart?: ((model: string) => Effect.Effect<void>) | undefined
  /**
   * Runs with the reply and its cost (`undefined`: unpriced) in the same
   * uninterruptible region that commits its usage.
   */
  readonly onCommit?: ((response: LlmAdapter.ChatResponse, cost: number | undefined) => Effect.Effect<void>) | undefined
  /** Runs when the call failed or was interrupted, after its reservation was released. */
  readonly onFailure?: (() => Effect.Effect<void>) | undefined
  /**
   * Runs for each failed attempt the adapter retries (told through
   * `AttemptObserver`), before it waits for the next one.
   */
  readonly onRetry?: ((attempt: AttemptObserver.AttemptFailed) => Effect.Effect<void>) | undefined
}

/** Two usages added field by field; a field stays unknown unless one side reports it. */
const addUsage = (a: LlmAdapter.Usage | undefined, b: LlmAdapter.Usage): LlmAdapter.Usage => {
  if (a === undefined) return b
  const sum = (x: number | undefined, y: number | undefined) => (x === undefined ? y : y === undefined ? x : x + y)
  const fields = {
    inputTokens: sum(a.inputTokens, b.inputTokens),
    outputTokens: sum(a.outputTokens, b.outputTokens),
    totalTokens: sum(a.totalTokens, b.totalTokens),
    cachedInputTokens: sum(a.cachedInputTokens, b.cachedInputTokens),
    reasoningTokens: sum(a.reasoningTokens, b.reasoningTokens)
  }
  return new LlmAdapter.Usage(Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)), true)
}

const timeoutError = (ms: number) =>
  new LlmAdapter.LlmError({
    reason: "Timeout",
    message: `The model call took longer than callTimeoutMs=${ms} ms and was cancelled.`,
    retryable: true
  })

/**
 * Make one model call under the run tree's budget, depth permit and call
 * timeout, in an `rlm.model_call` span.
 *
 * @since 0.2.0
 * @category Calls
 */
export const call = (
  deps: Deps,
  request: Request
): Effect.Effect<LlmAdapter.ChatResponse, LlmAdapter.LlmError | BudgetExceeded> =>
  Effect.suspend(() => {
    const model = deps.adapter.model(request.role)
    // What the failed attempts the adapter retried reported (their usage is
    // committed with the call's own), made anew each time the call runs: one
    // call's attempts come one at a time.
    const attempts: Attempts = { retries: 0, usage: undefined }
    return Tracing.spanned(
      SpanName.modelCall,
      {
        [Attribute.role]: request.role,
        [Attribute.model]: model,
        [Attribute.depth]: request.depth,
        [GenAiAttribute.requestModel]: model
      },
      () => attempt(deps, request, model, attempts),
      (span, exit) => {
        if (Exit.isSuccess(exit)) Tracing.setAttributes(span, Tracing.reply(exit.value, true))
        if (attempts.retries > 0) span.attribute(Attribute.retries, attempts.retries)
        Tracing.endWithOutcome(span, exit)
      }
    )
  })

interface Attempts {
  retries: number
  usage: LlmAdapter.Usage | undefined
}

const attempt = (
  { adapter, budget, policy }: Deps,
  request: Request,
  model: string,
  attempts: Attempts
): Effect.Effect<LlmAdapter.ChatResponse, LlmAdapter.LlmError | BudgetExceeded> => {
  const kind = request.role === "root" ? "root" : "sub"
  const admit =
    request.admission === "grant"
      ? budget.grant({ kind, model })
      : budget.reserve({ kind, model, inputEstimate: LlmAdapter.estimateRequestTokens(request.messages) })
  const observer: AttemptObserver.Observer = (failed) =>
    Effect.zipRight(
      Effect.sync(() => {
        attempts.retries++
        if (failed.usage !== undefined) attempts.usage = addUsage(attempts.usage, failed.usage)
      }),
      request.onRetry === undefined ? Effect.void : request.onRetry(failed)
    )
  const send = (reservation: Budget.Reservation) => {
    const chat = adapter.chat(
      new LlmAdapter.ChatRequest(
        {
          role: request.role,
          // Not copied: a run's history is immutable (`Step.RunState`), each step makes a new one.
          messages: request.messages,
          ...(request.tools !== undefined ? { tools: request.tools } : {}),
          ...(reservation.maxOutputTokens !== undefined ? { maxOutputTokens: reservation.maxOutputTokens } : {})
        },
        // Built from values already typed here; validating each request costs ~0.25 ms on the hot path.
        true
      )
    )
    const observed = AttemptObserver.observe(observer)(chat)
    const timed =
      policy.callTimeoutMs === undefined
        ? observed
        : Effect.timeoutFail(observed, {
            duration: Duration.millis(policy.callTimeoutMs),
            onTimeout: () => timeoutError(policy.callTimeoutMs as number)
          })
    return request.onStart === undefined ? timed : Effect.zipRight(request.onStart(model), timed)
  }
  const settle = (
    reservation: Budget.Reservation,
    exit: Exit.Exit<LlmAdapter.ChatResponse, LlmAdapter.LlmError>
  ): Effect.Effect<void> =>
    Effect.suspend(() => {
      const before = attempts.usage
      return Exit.isSuccess(exit)
        ? Effect.flatMap(budget.commit(reservation, addUsage(before, exit.value.usage)), (cost) =>
            request.onCommit === undefined ? Effect.void : request.onCommit(exit.value, cost)
          )
        : Effect.zipRight(
            // Tokens spent by attempts that failed are spent all the same.
            before === undefined ? budget.release(reservation) : Effect.asVoid(budget.commit(reservation, before)),
            request.onFailure === undefined ? Effect.void : request.onFailure()
          )
    })
  return budget.permit(request.depth)(Effect.acquireUseRelease(admit, send, settle))
}
