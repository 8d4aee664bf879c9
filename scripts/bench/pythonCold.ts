/**
 * One Python cold start in a fresh process (run by `sandbox.ts`, not alone):
 * build `PythonSandbox.layer()`, open a session with a tiny context and run
 * `pass`. Prints `COLD <ms>`, timed as `sandbox.ts` times an open. Argument:
 * `process` for the process wall only, else the strongest wall (`auto`).
 */
import { PythonSandbox, Sandbox } from "@rlm-runtime/sandbox"
import { Effect } from "effect"

const host: Sandbox.HostFunctions = {
  llmQuery: (prompt) => Effect.succeed(prompt),
  rlmQuery: (prompt) => Effect.succeed(prompt),
  llmQueryBatched: (prompts) => Effect.succeed(prompts),
  rlmQueryBatched: (prompts) => Effect.succeed(prompts)
}

const program = Effect.gen(function* () {
  const sandbox = yield* Sandbox.Sandbox
  const start = performance.now()
  const repl = yield* sandbox.open({ context: { text: "tiny context" }, host })
  const first = yield* repl.exec("pass")
  const ms = performance.now() - start
  if (first.error !== undefined) return yield* Effect.dieMessage(`first block failed: ${first.error}`)
  console.log(`COLD ${ms.toFixed(1)}`)
})

const isolation = process.argv[2] === "process" ? "process" : "auto"

Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(PythonSandbox.layer({ isolation })))).catch((error) => {
  console.error(error)
  process.exit(1)
})
