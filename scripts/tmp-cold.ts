import { PythonSandbox, Sandbox } from "@rlm-runtime/sandbox"
import { Effect } from "effect"
const host = {
  llmQuery: (p: string) => Effect.succeed(`echo:${p}`),
  llmQueryBatched: (p: ReadonlyArray<string>) => Effect.succeed(p.map(() => "x")),
  rlmQuery: () => Effect.succeed("x"),
  rlmQueryBatched: (p: ReadonlyArray<string>) => Effect.succeed(p.map(() => "x"))
} as any
const main = Effect.gen(function* () {
  const sandbox = yield* Sandbox.Sandbox
  const t0 = performance.now()
  const repl = yield* sandbox.open({ context: { text: "tiny" }, host })
  const r = yield* repl.exec("pass")
  const ms = performance.now() - t0
  const r2 = yield* repl.exec("print(P, 6*7, llm_query('hi'))")
  console.log(`cold ${ms.toFixed(0)} ${JSON.stringify(r.error ?? "")} ${r2.stdout.trim()} ${r2.error ?? ""}`)
  console.log(ms.toFixed(0))
})
Effect.runPromise(main.pipe(Effect.scoped, Effect.provide(PythonSandbox.layer()))).catch((e) => {
  console.error(e)
  process.exit(1)
})
