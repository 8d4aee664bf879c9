/**
 * The budget of one run tree: a `Ref` of what was used and reserved, shared by
 * the root run, every batch and every child RLM, plus one `Semaphore` per depth
 * level bounding concurrent model calls.
 *
 * A model call reserves its budget before it is sent (its estimated input and
 * an output cap it is sent with); a call that would exceed a limit is not sent.
 * When the reply arrives the reservation is replaced by the usage the provider
 * reported (or, when it reported none, kept as the estimate).
 *
 * @since 0.1.0
 */

import type { Usage } from "@rlm-runtime/adapters/LlmAdapter"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import type { Policy } from "./Policy.js"
import { BudgetExceeded, type Limit } from "./RlmError.js"

/**
 * Output tokens reserved for one call when a token or cost limit is set: the
 * call is sent with this (or what is left, if less) as its `maxOutputTokens`.
 *
 * @since 0.1.0
 * @category Constants
 */
export const OUTPUT_RESERVATION = 4096

/**
 * What a run tree has used.
 *
 * @since 0.1.0
 * @category Models
 */
export interface Totals {
  readonly rootCalls: number
  readonly subCalls: number
  readonly inputTokens: number
  readonly outputTokens: number
  readonly totalTokens: number
  readonly costUsd: number
  /** Calls whose provider reported no usage (budgets counted their estimate). */
  readonly unknownUsageCalls: number
  /** Calls to a model with no known price (their cost is not counted). */
  readonly unpricedCalls: number
}

/**
 * @since 0.1.0
 * @category Constructors
 */
export const emptyTotals: Totals = {
  rootCalls: 0,
  subCalls: 0,
  inputTokens: 0,
  outputTokens: 0,
  totalTokens: 0,
  costUsd: 0,
  unknownUsageCalls: 0,
  unpricedCalls: 0
}

interface State {
  readonly used: Totals
  readonly reservedInput: number
  readonly reservedOutput: number
  readonly reservedCost: number
}

/**
 * A granted reservation; settle it with `commit` or `release`.
 *
 * @since 0.1.0
 * @category Models
 */
export interface Reservation {
  readonly input: number
  readonly output: number
  readonly cost: number
  /** The output cap to send with the call, when a limit bounds it. */
  readonly maxOutputTokens: number | undefined
  readonly model: string
  readonly kind: "root" | "sub"
}

/**
 * @since 0.1.0
 * @category Models
 */
export interface Budget {
  readonly policy: Policy
  /** Reserve a model call; fails, sending nothing, when a limit would be passed. */
  readonly reserve: (request: {
    readonly kind: "root" | "sub"
    readonly model: string
    readonly inputEstimate: number
  }) => Effect.Effect<Reservation, BudgetExceeded>
  /**
   * Count a call granted outside the limits (the "answer now" call of
   * `onBudgetExceeded: "answer-now"`): nothing is checked or reserved, and
   * `commit` adds its usage.
   */
  readonly grant: (request: { readonly kind: "root" | "sub"; readonly model: string }) => Effect.Effect<Reservation>
  /** Count one sub-call that makes no model call itself (a child RLM). */
  readonly reserveSubCall: Effect.Effect<void, BudgetExceeded>
  /** Replace a reservation by the usage the provider reported. Returns the call's cost, if priced. */
  readonly commit: (reservation: Reservation, usage: Usage) => Effect.Effect<number | undefined>
  /** Drop a reservation whose call failed before any usage. */
  readonly release: (reservation: Reservation) => Effect.Effect<void>
  readonly totals: Effect.Effect<Totals>
  /** The concurrency bound of one depth level. */
  readonly permit: (depth: number) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

const exceeded = (limit: Limit, value: number, used: number, what: string) =>
  new BudgetExceeded({
    limit,
    value,
    used,
    message: `Budget exceeded: ${limit} is ${value} and ${what} would need ${used}. Raise ${limit} in the policy (or the matching CLI flag) to allow more.`,
    trace: undefined,
    partialAnswer: Option.none()
  })

/**
 * The cost in USD of a call, or `undefined` when the model has no price.
 *
 * @since 0.1.0
 * @category Utils
 */
export const costOf = (policy: Policy, model: string, input: number, output: number): number | undefined => {
  const price = policy.prices[model]
  if (price === undefined) return undefined
  return (input * price.inputPerMillion + output * price.outputPerMillion) / 1_000_000
}

/**
 * Build the shared budget of a run tree.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = (policy: Policy): Effect.Effect<Budget> =>
  Effect.gen(function* () {
    const state = yield* Ref.make<State>({ used: emptyTotals, reservedInput: 0, reservedOutput: 0, reservedCost: 0 })
    const levels = yield* Effect.forEach(Array.from({ length: policy.maxDepth + 2 }), () =>
      Effect.makeSemaphore(policy.concurrency)
    )
    const outputBounded =
      policy.maxOutputTokens !== undefined || policy.maxTotalTokens !== undefined || policy.maxCostUsd !== undefined

    const reserve: Budget["reserve"] = ({ inputEstimate, kind, model }) =>
      Ref.modify(state, (s): readonly [BudgetExceeded | Reservation, State] => {
        const u = s.used
        if (kind === "sub" && u.subCalls + 1 > policy.maxSubCalls) {
          return [exceeded("maxSubCalls", policy.maxSubCalls, u.subCalls + 1, "one more sub-call"), s]
        }
        const inputNeed = u.inputTokens + s.reservedInput + inputEstimate
        if (policy.maxInputTokens !== undefined && inputNeed > policy.maxInputTokens) {
          return [exceeded("maxInputTokens", policy.maxInputTokens, inputNeed, "the next call's input"), s]
        }
        const price = policy.prices[model]
        // The output this call may produce: the least of what each bounded limit has left.
        let room = outputBounded ? OUTPUT_RESERVATION : Number.POSITIVE_INFINITY
        if (policy.maxOutputTokens !== undefined) {
          room = Math.min(room, policy.maxOutputTokens - u.outputTokens - s.reservedOutput)
        }
        if (policy.maxTotalTokens !== undefined) {
          const totalLeft = policy.maxTotalTokens - u.totalTokens - s.reservedInput - s.reservedOutput - inputEstimate
          if (totalLeft < 1) {
            return [
              exceeded("maxTotalTokens", policy.maxTotalTokens, policy.maxTotalTokens - totalLeft + 1, "the next call"),
              s
            ]
          }
          room = Math.min(room, totalLeft)
        }
        if (policy.maxCostUsd !== undefined && price !== undefined) {
          const inputCost = (inputEstimate * price.inputPerMillion) / 1_000_000
          const costLeft = policy.maxCostUsd - u.costUsd - s.reservedCost - inputCost
          const affordable =
            price.outputPerMillion > 0 ? Math.floor((costLeft * 1_000_000) / price.outputPerMillion) : room
          if (costLeft <= 0 || affordable < 1) {
            return [
              exceeded("maxCostUsd", policy.maxCostUsd, u.costUsd + s.reservedCost + inputCost, "the next call"),
              s
            ]
          }
          room = Math.min(room, affordable)
        }
        if (room < 1) {
          const limit = policy.maxOutputTokens !== undefined ? "maxOutputTokens" : "maxTotalTokens"
          const value = (policy.maxOutputTokens ?? policy.maxTotalTokens) as number
          return [exceeded(limit, value, value + 1, "the next call's output"), s]
        }
        const output = Number.isFinite(room) ? Math.floor(room) : 0
        const cost = price ? (inputEstimate * price.inputPerMillion + output * price.outputPerMillion) / 1_000_000 : 0
        const reservation: Reservation = {
          input: inputEstimate,
          output,
          cost,
          maxOutputTokens: Number.isFinite(room) ? Math.floor(room) : undefined,
          model,
          kind
        }
        return [
          reservation,
          {
            used: {
              ...u,
              rootCalls: u.rootCalls + (kind === "root" ? 1 : 0),
              subCalls: u.subCalls + (kind === "sub" ? 1 : 0)
            },
            reservedInput: s.reservedInput + inputEstimate,
            reservedOutput: s.reservedOutput + output,
            reservedCost: s.reservedCost + cost
          }
        ]
      }).pipe(Effect.flatMap((r) => (r instanceof BudgetExceeded ? Effect.fail(r) : Effect.succeed(r))))

    const grant: Budget["grant"] = ({ kind, model }) =>
      Ref.modify(state, (s): readonly [Reservation, State] => [
        { input: 0, output: 0, cost: 0, maxOutputTokens: undefined, model, kind },
        {
          ...s,
          used: {
            ...s.used,
            rootCalls: s.used.rootCalls + (kind === "root" ? 1 : 0),
            subCalls: s.used.subCalls + (kind === "sub" ? 1 : 0)
          }
        }
      ])

    const reserveSubCall: Budget["reserveSubCall"] = Ref.modify(state, (s): readonly [BudgetExceeded | null, State] =>
      s.used.subCalls + 1 > policy.maxSubCalls
        ? [exceeded("maxSubCalls", policy.maxSubCalls, s.used.subCalls + 1, "one more sub-call"), s]
        : [null, { ...s, used: { ...s.used, subCalls: s.used.subCalls + 1 } }]
    ).pipe(Effect.flatMap((r) => (r === null ? Effect.void : Effect.fail(r))))

    const unreserve = (s: State, r: Reservation): State => ({
      ...s,
      reservedInput: s.reservedInput - r.input,
      reservedOutput: s.reservedOutput - r.output,
      reservedCost: s.reservedCost - r.cost
    })

    const commit: Budget["commit"] = (r, usage) =>
      Ref.modify(state, (s) => {
        const known = usage.inputTokens !== undefined || usage.outputTokens !== undefined
        const input = usage.inputTokens ?? r.input
        const output = usage.outputTokens ?? (usage.totalTokens !== undefined ? usage.totalTokens - input : r.output)
        const total = usage.totalTokens ?? input + output
        const cost = costOf(policy, r.model, input, output)
        const u = s.used
        const next: State = {
          ...unreserve(s, r),
          used: {
            ...u,
            inputTokens: u.inputTokens + input,
            outputTokens: u.outputTokens + output,
            totalTokens: u.totalTokens + total,
            costUsd: u.costUsd + (cost ?? 0),
            unknownUsageCalls: u.unknownUsageCalls + (known ? 0 : 1),
            unpricedCalls: u.unpricedCalls + (cost === undefined ? 1 : 0)
          }
        }
        return [cost, next] as const
      })

    const release: Budget["release"] = (r) => Ref.update(state, (s) => unreserve(s, r))

    return {
      policy,
      reserve,
      grant,
      reserveSubCall,
      commit,
      release,
      totals: Effect.map(Ref.get(state), (s) => s.used),
      permit: (depth) => (levels[Math.min(depth, levels.length - 1)] as Effect.Semaphore).withPermits(1)
    }
  })
