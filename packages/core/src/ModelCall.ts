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
 * release: a call whose usage is counted is always recorded.
 *
 * @since 0.2.0
 */
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Budget from "./Budget.js"
import type * as Policy from "./Policy.js"
import type { BudgetExceeded } from "./RlmError.js"

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
}

const timeoutError = (ms: number) =>
  new LlmAdapter.LlmError({
    reason: "Timeout",
    message: `The model call took longer than callTimeoutMs=${ms} ms and was cancelled.`,
    retryable: true
  })

/**
 * Make one model call under the run tree's budget, depth permit and call
 * timeout.
 *
 * @since 0.2.0
 * @category Calls
 */
export const call: (
  deps: Deps,
  request: Request
) => Effect.Effect<LlmAdapter.ChatResponse, LlmAdapter.LlmError | BudgetExceeded> = Effect.fn("ModelCall.call")(
  function* (deps: Deps, request: Request) {
    const { adapter, budget, policy } = deps
    const model = adapter.model(request.role)
    const kind = request.role === "root" ? "root" : "sub"
    const admit =
      request.admission === "grant"
        ? budget.grant({ kind, model })
        : budget.reserve({ kind, model, inputEstimate: LlmAdapter.estimateRequestTokens(request.messages) })
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
      const timed =
        policy.callTimeoutMs === undefined
          ? chat
          : Effect.timeoutFail(chat, {
              duration: Duration.millis(policy.callTimeoutMs),
              onTimeout: () => timeoutError(policy.callTimeoutMs as number)
            })
      return request.onStart === undefined ? timed : Effect.zipRight(request.onStart(model), timed)
    }
    const settle = (
      reservation: Budget.Reservation,
      exit: Exit.Exit<LlmAdapter.ChatResponse, LlmAdapter.LlmError>
    ): Effect.Effect<void> =>
      Exit.isSuccess(exit)
        ? Effect.flatMap(budget.commit(reservation, exit.value.usage), (cost) =>
            request.onCommit === undefined ? Effect.void : request.onCommit(exit.value, cost)
          )
        : Effect.zipRight(
            budget.release(reservation),
            request.onFailure === undefined ? Effect.void : request.onFailure()
          )
    return yield* budget.permit(request.depth)(Effect.acquireUseRelease(admit, send, settle))
  }
)
