import { FakeAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { it } from "@effect/vitest"
import { Effect, Exit, Layer, Cause } from "effect"
import { Rlm } from "../src/index.js"
import * as Random from "./utils/randomRuns.js"

it.live("scratch", () => Effect.gen(function* () {
  const script: Random.Script = {"replies":[{"_tag":"code","stmts":[{"_tag":"rlmBatch","size":2,"pad":0},{"_tag":"rlm","pad":0}],"guarded":false},{"_tag":"code","stmts":[{"_tag":"llm","key":0,"pad":0}],"guarded":false},{"_tag":"code","stmts":[{"_tag":"llm","key":0,"pad":0}],"guarded":false}],"ruleLengths":[142,0,0,0],"catchAll":false}
  const policy = {"maxSteps":1,"maxSubCalls":2,"concurrency":2,"maxDepth":1}
  const r = yield* Effect.gen(function* () {
    const exit = yield* Effect.exit(Rlm.run("q", "ctx", { policy }))
    return { exit, stats: yield* (yield* FakeAdapter.FakeInstrumentation).stats }
  }).pipe(Effect.provide(Layer.merge(FakeAdapter.layerInstrumented(Random.render(script)), JavascriptSandbox.layer())))
  const e: any = Exit.isFailure(r.exit) ? Cause.failureOption(r.exit.cause) : undefined
  const trace = Exit.isSuccess(r.exit) ? r.exit.value.trace : e.value.trace
  console.log(e?.value?.message)
  for (const ev of trace.events) console.log(ev._tag, ev.runId, (ev as any).status ?? "", (ev as any).error ?? "", JSON.stringify((ev as any).usage ?? ""))
  console.log(JSON.stringify({...r.stats, requests: r.stats.requests.length}))
}))
