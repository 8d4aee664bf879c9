/**
 * Sub-calls through `llm_query_batched` against a fake model with a fixed
 * latency.
 *
 * - `BENCH subcalls n=…`: 1,000 sub-calls at concurrency 32 (`BENCH_CONCURRENCY`);
 *   ideal = ceil(n / concurrency) × latency. The median of `BENCH_RUNS` batches
 *   (default 3) after a first one, whose wall time is printed as `cold_wall_ms`
 *   (it includes V8 compiling the path).
 * - `BENCH subcalls batch=…`: the same 1,000-prompt batch at the default policy
 *   against a fixed concurrency of 16 (the official implementation's), runs
 *   interleaved (`BENCH_BATCH_RUNS` each, default 3), medians compared:
 *   ratio = default / fixed 16 (≤ 1: the defaults are not slower).
 */
import { FakeAdapter } from "@rlm-runtime/adapters"
import { Policy, Rlm } from "@rlm-runtime/core"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { Effect, Layer } from "effect"

const n = Number(process.env.BENCH_N ?? 1000)
const latency = Number(process.env.BENCH_LATENCY_MS ?? 50)
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32)
/** A count from the environment: a whole number ≥ 1, or the bench stops with why. */
const countFrom = (name: string, fallback: number): number => {
  const raw = process.env[name]
  const value = raw === undefined || raw === "" ? fallback : Number(raw)
  if (!Number.isInteger(value) || value < 1)
    throw new Error(`${name} must be a whole number ≥ 1, got ${JSON.stringify(raw)}`)
  return value
}
const runsOfN = countFrom("BENCH_RUNS", 3)
const batchRuns = countFrom("BENCH_BATCH_RUNS", 3)
const OFFICIAL_CONCURRENCY = 16

/** One batch of `n` prompts under `policy`: the block's wall time and the fake's counters. */
const batch = (policy: ConstructorParameters<typeof Policy.Policy>[0]) =>
  Effect.gen(function* () {
    const stats = yield* FakeAdapter.FakeInstrumentation
    const result = yield* Rlm.run("bench", "ctx", { policy: { ...policy, maxSubCalls: n } })
    const step = result.trace.events.find((e) => e._tag === "StepCompleted")
    const wall = step?._tag === "StepCompleted" ? (step.blocks[0]?.durationMs ?? Number.NaN) : Number.NaN
    const s = yield* stats.stats
    if (s.calls.sub !== n) throw new Error(`expected ${n} sub-calls, saw ${s.calls.sub}`)
    return { wall, maxInFlight: s.maxInFlight }
  }).pipe(
    Effect.provide(
      Layer.merge(
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
    )
  )

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

const program = Effect.gen(function* () {
  // The process's first batch also pays for V8 compiling the whole path (~50 ms here, in a 100 ms batch of 32):
  // reported apart as `cold_wall_ms`, then the median of `BENCH_RUNS` batches (default 3) is the measure.
  const cold = yield* batch({ concurrency })
  const runs = yield* Effect.forEach(Array.from({ length: runsOfN }), () => batch({ concurrency }))
  const wall = median(runs.map((run) => run.wall))
  const ideal = Math.ceil(n / concurrency) * latency
  console.log(
    `BENCH subcalls n=${n} latency_ms=${latency} concurrency=${concurrency} wall_ms=${wall.toFixed(0)} ideal_ms=${ideal} ratio=${(wall / ideal).toFixed(3)} cold_wall_ms=${cold.wall.toFixed(0)} runs=${runs.map((run) => run.wall.toFixed(0)).join(",")}`
  )
  const maxInFlight = Math.max(cold.maxInFlight, ...runs.map((run) => run.maxInFlight))
  if (maxInFlight > concurrency) throw new Error(`max in flight ${maxInFlight} > ${concurrency}`)

  // Interleaved, so both see the same machine load.
  const pairs = yield* Effect.forEach(Array.from({ length: batchRuns }), () =>
    Effect.all([batch({}), batch({ concurrency: OFFICIAL_CONCURRENCY })])
  )
  const defaults = pairs.map(([d]) => d.wall)
  const fixed = pairs.map(([, f]) => f.wall)
  const d = median(defaults)
  const f = median(fixed)
  console.log(
    `BENCH subcalls batch=${n} latency_ms=${latency} default_concurrency=${Policy.defaults.concurrency} default_wall_ms=${d.toFixed(0)} fixed16_wall_ms=${f.toFixed(0)} ratio=${(d / f).toFixed(3)} runs=${batchRuns} (default ${defaults.map((x) => x.toFixed(0)).join(" ")}; fixed16 ${fixed.map((x) => x.toFixed(0)).join(" ")})`
  )
})

await Effect.runPromise(program)
