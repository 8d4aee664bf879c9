/**
 * The server's bound on concurrent runs: at most `maxConcurrent` runs at a
 * time, up to `maxQueue` more waiting their turn in arrival order, and past
 * that an {@link Overloaded} refusal (a 429 with `Retry-After`) decided at
 * once, before anything is started.
 *
 * `reserve` takes a place (running or queued) or refuses; the {@link Slot} it
 * returns runs one effect when its turn comes and gives the place back when
 * that effect ends, however it ends.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Ref from "effect/Ref"

/**
 * @since 0.1.0
 * @category Models
 */
export interface Options {
  /** Runs at the same time (>= 1). */
  readonly maxConcurrent: number
  /** Runs waiting for a place (>= 0); past it, {@link Overloaded}. */
  readonly maxQueue: number
}

/**
 * Every place is taken: `maxConcurrent` running and `maxQueue` waiting.
 * `retryAfterSeconds` is a guess at when a place frees up: the mean duration
 * of recent runs times the queue ahead, over the places.
 *
 * @since 0.1.0
 * @category Errors
 */
export class Overloaded extends Data.TaggedError("Overloaded")<{
  readonly running: number
  readonly queued: number
  readonly retryAfterSeconds: number
}> {}

/**
 * A place taken by {@link Admission.reserve}.
 *
 * @since 0.1.0
 * @category Models
 */
export interface Slot {
  /**
   * Wait for a running place (in arrival order), run `effect`, and give the
   * place back. `onStart` runs when the place is granted. Call it once; the
   * place is given back also when the waiting is interrupted.
   */
  readonly run: <A, E, R>(effect: Effect.Effect<A, E, R>, onStart?: Effect.Effect<void>) => Effect.Effect<A, E, R>
  /** Give back a place never used (the run was not started). */
  readonly release: Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category Models
 */
export interface Stats {
  readonly running: number
  readonly queued: number
  readonly maxConcurrent: number
  readonly maxQueue: number
}

/**
 * @since 0.1.0
 * @category Models
 */
export interface Admission {
  /** Take a place, or fail with {@link Overloaded} at once. */
  readonly reserve: Effect.Effect<Slot, Overloaded>
  readonly stats: Effect.Effect<Stats>
}

interface State {
  readonly running: number
  readonly queued: number
  /** Mean run duration, ms (exponentially weighted). */
  readonly meanMs: number
}

/**
 * @since 0.1.0
 * @category Constructors
 */
export const make = (options: Options): Effect.Effect<Admission> =>
  Effect.gen(function* () {
    const maxConcurrent = Math.max(1, Math.floor(options.maxConcurrent))
    const maxQueue = Math.max(0, Math.floor(options.maxQueue))
    const state = yield* Ref.make<State>({ running: 0, queued: 0, meanMs: 1000 })
    // Fair (FIFO) in effect's semaphore: waiters are served in the order they asked.
    const permits = yield* Effect.makeSemaphore(maxConcurrent)

    const refusal = (s: State) =>
      new Overloaded({
        running: s.running,
        queued: s.queued,
        retryAfterSeconds: Math.max(1, Math.ceil(((s.queued + 1) * s.meanMs) / maxConcurrent / 1000))
      })

    const finished = (startedAt: number) =>
      Ref.update(state, (s) => ({
        ...s,
        running: s.running - 1,
        meanMs: s.meanMs * 0.8 + Math.max(0, Date.now() - startedAt) * 0.2
      }))

    const makeSlot = (): Slot => {
      let used = false
      const giveBack = Ref.update(state, (s) => ({ ...s, queued: s.queued - 1 }))
      return {
        release: Effect.suspend(() => {
          if (used) return Effect.void
          used = true
          return giveBack
        }),
        run: <A, E, R>(effect: Effect.Effect<A, E, R>, onStart?: Effect.Effect<void>) =>
          Effect.suspend(() => {
            if (used) return Effect.dieMessage("Admission: a slot was used twice")
            used = true
            return Effect.uninterruptibleMask((restore) =>
              restore(permits.take(1)).pipe(
                Effect.onInterrupt(() => giveBack),
                Effect.zipRight(Ref.update(state, (s) => ({ ...s, queued: s.queued - 1, running: s.running + 1 }))),
                Effect.zipRight(Effect.sync(() => Date.now())),
                Effect.flatMap((startedAt) =>
                  restore(Effect.zipRight(onStart ?? Effect.void, effect)).pipe(
                    Effect.ensuring(Effect.zipRight(finished(startedAt), permits.release(1)))
                  )
                )
              )
            )
          })
      }
    }

    return {
      reserve: Ref.modify(state, (s): [Slot | Overloaded, State] =>
        s.running + s.queued >= maxConcurrent + maxQueue
          ? [refusal(s), s]
          : [makeSlot(), { ...s, queued: s.queued + 1 }]
      ).pipe(Effect.flatMap((r) => (r instanceof Overloaded ? Effect.fail(r) : Effect.succeed(r)))),
      stats: Effect.map(Ref.get(state), (s) => ({ running: s.running, queued: s.queued, maxConcurrent, maxQueue }))
    }
  })
