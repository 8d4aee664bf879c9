import { Effect, Duration } from "effect"
import * as JS from "./src/JavascriptSandbox.js"
import * as Sandbox from "./src/Sandbox.js"
const makeFakeHost = () => ({ host: {
  llmQuery: (p: string) => Effect.succeed("llm:" + p),
  rlmQuery: (p: string) => Effect.succeed("rlm:" + p),
  llmQueryBatched: (ps: ReadonlyArray<string>) => Effect.succeed(ps.map((p) => "llm:" + p)),
  rlmQueryBatched: (ps: ReadonlyArray<string>) => Effect.succeed(ps.map((p) => "rlm:" + p)) } })
import { readFileSync } from "node:fs"
const codes: string[] = JSON.parse(readFileSync("/tmp/qjsx/codes.json", "utf8"))
const program = Effect.gen(function*() {
  const sb = yield* JS.make({ memoryMb: 64, maxStackSizeBytes: 98304 })
  const repl = yield* sb.open({ context: { text: "Hello needle world" }, host: makeFakeHost().host, execTimeout: "500 millis", outputLimit: 200 })
  for (const code of codes) {
    const t = performance.now()
    const r = yield* Effect.either(repl.exec(code))
    const ok = yield* Effect.either(repl.exec("peek(5) + llm_query('z')"))
    console.log("=== " + code.slice(0, 100) + `  [${(performance.now() - t).toFixed(0)}ms]`)
    console.log(JSON.stringify(r._tag === "Right" ? { stdout: r.right.stdout.slice(0, 300), stderr: r.right.stderr.slice(0,200), error: r.right.error?.slice(0, 300), final: r.right.final, truncated: r.right.truncated } : r.left))
    console.log("next:", ok._tag === "Right" ? JSON.stringify(ok.right.stdout) + (ok.right.error ?? "") : JSON.stringify(ok.left))
  }
}).pipe(Effect.scoped)
Effect.runPromise(program).catch((e) => console.error("FAILED", e))
