/**
 * 1,000 sub-calls through `llm_query_batched` against a fake model with 50 ms
 * latency at concurrency 32. ideal = ceil(n / concurrency) × latency.
 */
import { FakeAdapter } from "@rlm-runtime/adapters"
import { Rlm } from "@rlm-runtime/core"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { Effect, Layer } from "effect"

const n = Number(process.env.BENCH_N ?? 1000)
const latency = Number(process.env.BENCH_LATENCY_MS ?? 50)
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32)

const program = Effect.gen(function* () {
  const stats = yield* FakeAdapter.FakeInstrumentation
  const result = yield* Rlm.run("bench", "ctx", {
    policy: { concurrency, maxSubCalls: n }
  })
  const step = result.trace.events.find((e) => e._tag === "StepCompleted")
  const wall = step?._tag === "StepCompleted" ? (step.blocks[0]?.durationMs ?? Number.NaN) : Number.NaN
  const s = yield* stats.stats
  const ideal = Math.ceil(n / concurrency) * latency
  console.log(
    `BENCH subcalls n=${n} latency_ms=${latency} concurrency=${concurrency} wall_ms=${wall.toFixed(0)} ideal_ms=${ideal} ratio=${(wall / ideal).toFixed(3)}`
  )
  if (s.calls.sub !== n) throw new Error(`expected ${n} sub-calls, saw ${s.calls.sub}`)
  if (s.maxInFlight > concurrency) throw new Error(`max in flight ${s.maxInFlight} > ${concurrency}`)
})

const layer = Layer.merge(
  FakeAdapter.layerInstrumented({
    script: [
      `\`\`\`repl\nvar rs = llm_query_batched(Array.from({ length: ${n} }, (_, i) => 'q' + i))\n\`\`\``,
      "FINAL(done)"
    ],
    rules: [{ match: "q", reply: "a" }],
    latencyMs: latency
  }),
  JavascriptSandbox.layer()
)

await Effect.runPromise(program.pipe(Effect.provide(layer)))
