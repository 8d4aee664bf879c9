/**
 * A `Sandbox` whose sessions start their interpreter at first use: `open`
 * returns at once, and the wrapped sandbox's session is opened (in the same
 * scope, with the same options) by the first `exec`, `getVar` or `listVars`.
 * A run that answers without running code (a trivial request) never starts
 * an interpreter; a run that does pays the start at its first block instead
 * of before its first model call. Errors of the start (`SandboxError`
 * "StartFailed") come from that first call, which the run loop treats as
 * fatal, as it does a failed `open`.
 *
 * The server wraps its sandbox with it (`Server.Options.lazySandbox`, on by
 * default): the JavaScript sandbox has no pool of started interpreters, and a
 * child process start costs ~150–250 ms on this machine.
 *
 * @since 0.1.0
 */
import type { OpenOptions, Repl, Sandbox, SandboxError } from "@rlm-runtime/sandbox/Sandbox"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"

/**
 * Wrap a sandbox service.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = (inner: Sandbox.Service): Sandbox.Service => ({
  language: inner.language,
  isolation: inner.isolation,
  open: <E>(options: OpenOptions<E>): Effect.Effect<Repl<E>, SandboxError, Scope.Scope> =>
    Effect.gen(function* () {
      const scope = yield* Effect.scope
      // Opened once, by whichever call comes first; its finalizers join the caller's scope.
      const session = yield* Effect.cached(Scope.extend(inner.open(options), scope))
      return {
        language: inner.language,
        exec: (code: string) => Effect.flatMap(session, (repl) => repl.exec(code)),
        getVar: (name: string) => Effect.flatMap(session, (repl) => repl.getVar(name)),
        listVars: Effect.flatMap(session, (repl) => repl.listVars)
      }
    })
})
