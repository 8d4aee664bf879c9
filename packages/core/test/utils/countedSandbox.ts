import { Sandbox } from "@rlm-runtime/sandbox"
import { Effect, Layer } from "effect"

/** Live REPL sessions of a counted sandbox: `open` now, `opened` ever. */
export interface Sessions {
  open: number
  opened: number
}

/**
 * The given sandbox, with every session's lifetime counted. The counter is
 * acquired before the session and released after it closes (finalizers run in
 * reverse order), so `open` reaches 0 only when every session is gone.
 */
export const counted = <E>(sessions: Sessions, inner: Layer.Layer<Sandbox.Sandbox, E>) =>
  Layer.effect(
    Sandbox.Sandbox,
    Effect.map(Sandbox.Sandbox, (sandbox) => ({
      language: sandbox.language,
      isolation: sandbox.isolation,
      open: <E2>(options: Sandbox.OpenOptions<E2>) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            sessions.open++
            sessions.opened++
          }),
          () =>
            Effect.sync(() => {
              sessions.open--
            })
        ).pipe(Effect.zipRight(sandbox.open(options)))
    }))
  ).pipe(Layer.provide(inner))
