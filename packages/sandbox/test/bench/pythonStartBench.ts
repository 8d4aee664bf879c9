/**
 * Start-up figures of the Python sandbox (not a test). Run from the repo root:
 *   npx tsx --conditions=@rlm-runtime/source packages/sandbox/test/bench/pythonStartBench.ts [snapshotDir|memory|off]
 * Prints cold opens (a fresh `make()` each: spawn + load + context + first
 * `pass`), warm opens (the same from a `makePool({ size: 1 })` once it is
 * full), the time closing a session's scope takes (kill and reap), and the time
 * of two pooled sessions in a row (the second waits for the refill).
 */
import { Duration, Effect, Exit, Scope } from "effect"
import * as PythonSandbox from "../../src/PythonSandbox.js"
import type * as Sandbox from "../../src/Sandbox.js"

const host: Sandbox.HostFunctions = {
  llmQuery: (p) => Effect.succeed(p),
  rlmQuery: (p) => Effect.succeed(p),
  llmQueryBatched: (ps) => Effect.succeed(ps),
  rlmQueryBatched: (ps) => Effect.succeed(ps)
}
const mode = process.argv[2]
const options: PythonSandbox.Options =
  mode === "off" ? { snapshot: false } : mode === "memory" ? { snapshotDir: false } : mode ? { snapshotDir: mode } : {}

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const started = performance.now()
    yield* effect
    return Math.round(performance.now() - started)
  })
const openRun = (sandbox: Sandbox.Sandbox.Service) =>
  Effect.scoped(Effect.flatMap(sandbox.open({ context: { text: "hello" }, host }), (repl) => repl.exec("pass")))

/** open + first block, and then the scope's close, timed separately. */
const openAndClose = (sandbox: Sandbox.Sandbox.Service) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const open = yield* timed(
      Effect.flatMap(sandbox.open({ context: { text: "hello" }, host }), (repl) => repl.exec("pass")).pipe(
        Scope.extend(scope)
      )
    )
    const close = yield* timed(Scope.close(scope, Exit.void))
    return { open, close }
  })

const main = Effect.gen(function* () {
  const cold: Array<number> = []
  for (let i = 0; i < 3; i++) cold.push((yield* openAndClose(yield* PythonSandbox.make(options))).open)
  const wait = Duration.seconds(mode === "off" ? 6 : 2.5)
  const pool = yield* PythonSandbox.makePool({ ...options, size: 1 })
  yield* Effect.sleep(wait)
  const warm: Array<number> = []
  const close: Array<number> = []
  for (let i = 0; i < 5; i++) {
    const run = yield* openAndClose(pool)
    warm.push(run.open)
    close.push(run.close)
    yield* Effect.sleep(wait)
  }
  const twoInARow = yield* timed(Effect.zipRight(openRun(pool), openRun(pool)))
  console.log(
    `cold_ms=${cold.join(",")} warm_ms=${warm.join(",")} close_ms=${close.join(",")} two_in_a_row_ms=${twoInARow}`
  )
}).pipe(Effect.scoped)

Effect.runPromise(main).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
