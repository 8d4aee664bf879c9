/**
 * Where a model call comes from: the run, the step and the role of the call,
 * and the run's depth. The run loop sets it around each model call (in the
 * calling fiber's {@link currentCallSite}), so an adapter that needs to know
 * which run and step a `ChatRequest` belongs to — the trace replay adapter
 * answers root calls by run and step — can read it. Adapters that do not care
 * never see it; outside a run it is `undefined`.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type { CallRole } from "./LlmAdapter.js"

/**
 * A model call's place in its run tree. For a root call `step` is the step
 * whose reply is asked for; for a sub-call (`llm_query`) it is the step whose
 * code made the call.
 *
 * @since 0.2.0
 * @category Models
 */
export interface CallSite {
  readonly runId: string
  readonly step: number
  readonly role: CallRole
  readonly depth: number
}

/**
 * The call site of the calling fiber; `undefined` outside a run.
 *
 * @since 0.2.0
 * @category FiberRefs
 */
export const currentCallSite: FiberRef.FiberRef<CallSite | undefined> = FiberRef.unsafeMake<CallSite | undefined>(
  undefined
)

/**
 * The call site of the calling fiber.
 *
 * @since 0.2.0
 * @category Accessors
 */
export const get: Effect.Effect<CallSite | undefined> = FiberRef.get(currentCallSite)

/**
 * Run `self` (a model call) at `site`.
 *
 * @since 0.2.0
 * @category Combinators
 */
export const within =
  (site: CallSite) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.locally(self, currentCallSite, site)
