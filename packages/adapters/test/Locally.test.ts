/**
 * The model call's cheaper `Effect.locally` (`internal/locally.ts`, under
 * `CallSite.within` and `AttemptObserver.observe`): the value inside, the old
 * one back after, whatever the exit, as `Effect.locally` does.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, FiberRef, FastCheck as fc } from "effect"
import { AttemptObserver, CallSite } from "../src/index.js"
import { locally } from "../src/internal/locally.js"

type Outcome = "succeed" | "fail" | "die" | "interrupt"
const outcomeOf = (outcome: Outcome): Effect.Effect<string, string> =>
  outcome === "succeed"
    ? Effect.succeed("ok")
    : outcome === "fail"
      ? Effect.fail("failed")
      : outcome === "die"
        ? Effect.dieMessage("died")
        : Effect.interrupt

/** Nested regions over one ref: what each level saw inside, what the outside sees after, and the exit. */
const observe = (
  region: <A, E>(self: Effect.Effect<A, E>, ref: FiberRef.FiberRef<number>, value: number) => Effect.Effect<A, E>,
  values: ReadonlyArray<number>,
  outcome: Outcome
) => {
  const ref = FiberRef.unsafeMake(-1)
  const seen: Array<number> = []
  const nest = (level: number): Effect.Effect<string, string> =>
    level === values.length
      ? outcomeOf(outcome)
      : region(
          Effect.flatMap(FiberRef.get(ref), (v) => {
            seen.push(v)
            return Effect.zipLeft(
              nest(level + 1),
              Effect.flatMap(FiberRef.get(ref), (after) => Effect.sync(() => seen.push(after)))
            )
          }),
          ref,
          values[level] as number
        )
  return Effect.runSync(
    Effect.gen(function* () {
      const exit = yield* Effect.exit(nest(0))
      const after = yield* FiberRef.get(ref)
      return { seen, after, exit: Exit.isSuccess(exit) ? "ok" : Cause.isInterruptedOnly(exit.cause) ? "int" : "err" }
    })
  )
}

describe("locally", () => {
  it.prop(
    "sets the value inside and restores the old one after, as Effect.locally does",
    [
      fc.array(fc.integer(), { minLength: 1, maxLength: 5 }),
      fc.constantFrom<Outcome>("succeed", "fail", "die", "interrupt")
    ],
    ([values, outcome]) => {
      const ours = observe(locally, values, outcome)
      assert.deepStrictEqual(
        ours,
        observe((self, ref, value) => Effect.locally(self, ref, value), values, outcome)
      )
      assert.strictEqual(ours.after, -1)
      assert.deepStrictEqual(ours.seen.slice(0, values.length), values)
    }
  )

  it.effect("interrupted from outside, the old value is back for the fiber's finalizers", () =>
    Effect.gen(function* () {
      const seen: Array<CallSite.CallSite | undefined> = []
      const started = yield* Effect.makeLatch(false)
      const site = { runId: "r", step: 1, role: "root", depth: 0 } as const
      const fiber = yield* Effect.fork(
        CallSite.within(site)(Effect.zipRight(started.open, Effect.never)).pipe(
          Effect.onInterrupt(() => Effect.flatMap(CallSite.get, (s) => Effect.sync(() => seen.push(s))))
        )
      )
      yield* started.await
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(seen, [undefined])
    })
  )

  it.effect("AttemptObserver.observe: the observer is told inside, and nobody after", () =>
    Effect.gen(function* () {
      const told: Array<number> = []
      const failed = new AttemptObserver.AttemptFailed({
        attempt: 1,
        reason: "RateLimited",
        message: "429",
        delayMs: 0
      })
      yield* AttemptObserver.observe((a) => Effect.sync(() => told.push(a.attempt)))(AttemptObserver.report(failed))
      yield* AttemptObserver.report(failed)
      assert.deepStrictEqual(told, [1])
    })
  )
})
