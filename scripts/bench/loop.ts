/**
 * The run loop's own cost: per root iteration (trivial code, zero-latency fake
 * model), a whole trivial run on a warm sandbox, and one `rlm_query` child
 * from start to answer. Sandbox: BENCH_SANDBOX=js (default) or python.
 */
import { FakeAdapter } from "@rlm-runtime/adapters"
import { Rlm } from "@rlm-runtime/core"
import { JavascriptSandbox, PythonSandbox, type Sandbox } from "@rlm-runtime/sandbox"
import { Effect, type Layer } from "effect"

const sandboxName = process.env.BENCH_SANDBOX ?? "js"
const steps = Number(process.env.BENCH_STEPS ?? 300)
const repeats = sandboxName === "python" ? 3 : 5
// A pooled Python interpreter serves one session; give the pool time to start a replacement between runs, so that
// every run starts warm (otherwise this measures cold starts). BENCH_SETTLE_MS overrides.
const settleMs = Number(process.env.BENCH_SETTLE_MS ?? (sandboxName === "python" ? 6000 : 0))
const settle = settleMs > 0 ? Effect.sleep(settleMs) : Effect.void
const code = sandboxName === "python" ? "x = 1" : "var x = 1"

const sandboxLayer: Layer.Layer<Sandbox.Sandbox, Sandbox.SandboxError> =
  sandboxName === "python" ? PythonSandbox.layerPool({ size: 2 }) : JavascriptSandbox.layer()

const timeRun = (script: ReadonlyArray<string>, policy: Record<string, number>) =>
  Effect.gen(function* () {
    yield* settle
    const start = performance.now()
    const result = yield* Rlm.run("bench", "ctx", { policy }).pipe(
      Effect.provide(FakeAdapter.layer({ script, rules: [{ match: "", reply: "ok" }] }))
    )
    return { ms: performance.now() - start, result }
  })

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number

const program = Effect.gen(function* () {
  const block = `\`\`\`repl\n${code}\n\`\`\``
  // Warm up: the module, the interpreter pool, the JIT.
  yield* timeRun([block, "FINAL(done)"], {})
  const long: Array<number> = []
  const short: Array<number> = []
  for (let i = 0; i < repeats; i++) {
    long.push(
      (yield* timeRun([...Array.from({ length: steps }, () => block), "FINAL(done)"], { maxSteps: steps + 1 })).ms
    )
    short.push((yield* timeRun([block, "FINAL(done)"], {})).ms)
  }
  const perIteration = (median(long) - median(short)) / (steps - 1)
  const warmRun = median(short)
  const child: Array<number> = []
  for (let i = 0; i < repeats; i++) {
    const { result } = yield* timeRun(
      [
        `\`\`\`repl\nr = rlm_query('child')\n\`\`\``.replace("r =", sandboxName === "python" ? "r =" : "var r ="),
        "FINAL(child done)",
        "FINAL_VAR(r)"
      ],
      { maxDepth: 1 }
    )
    const sub = result.trace.events.find((e) => e._tag === "SubCall")
    child.push(sub?._tag === "SubCall" ? sub.durationMs : Number.NaN)
  }
  console.error(`# sandbox=${sandboxName} steps=${steps} repeats=${repeats} settle_ms=${settleMs}`)
  console.log(
    `BENCH loop per_iteration_ms=${perIteration.toFixed(3)} warm_run_ms=${warmRun.toFixed(1)} child_rlm_ms=${median(child).toFixed(1)}`
  )
})

await Effect.runPromise(Effect.scoped(program.pipe(Effect.provide(sandboxLayer))))
