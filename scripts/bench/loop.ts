/**
 * The run loop's own cost: per root iteration (trivial code, zero-latency fake
 * model), a whole trivial run on a warm sandbox, and one `rlm_query` child
 * from start to answer. Sandbox: BENCH_SANDBOX=js (default) or python.
 *
 * A second line, `BENCH loop-steady`, measures the iteration again on one
 * interpreter kept for every run (a sandbox whose `open` hands out the same
 * session, opened from the non-pooled layer), so that no run pays a fresh
 * interpreter's first blocks: its wall time, and the CPU time per iteration
 * of this process (`host_cpu_ms`, `process.cpuUsage`) and of the interpreter's
 * processes (`child_cpu_ms`, Linux only: `/proc/<pid>/task/<tid>/schedstat`
 * of this process's descendants). CPU time is what a loaded machine inflates
 * least. BENCH_STEADY=0 skips it.
 *
 * A third line, `BENCH loop-core`, measures the iteration with no interpreter
 * at all (an in-memory `Repl` whose blocks succeed at once): the run loop's
 * own cost (the step, the model call through the fake, the trace, the spans),
 * wall and host CPU. BENCH_CORE=0 skips it.
 *
 * A fourth line, `BENCH loop-effects`, counts the Effect operations the
 * in-memory loop runs per step (a `Supervisor` told of each one under
 * `RuntimeFlags.OpSupervision`): `per_step` = (a 101-step run − a 1-step
 * run) / 100, `run_fixed` = the 1-step run's. A count, not a time: the same on
 * every machine and in every run, so a change to the loop's path shows in it
 * exactly, where the timed lines are noisy. BENCH_EFFECTS=0 skips it.
 */
import { FakeAdapter } from "@rlm-runtime/adapters"
import { Rlm } from "@rlm-runtime/core"
import { JavascriptSandbox, PythonSandbox, Sandbox } from "@rlm-runtime/sandbox"
import { Effect, Layer, Option, RuntimeFlags, RuntimeFlagsPatch, type Scope, Supervisor } from "effect"
import { cpuNs, descendants } from "./procCpu.js"

const sandboxName = process.env.BENCH_SANDBOX ?? "js"
const steps = Number(process.env.BENCH_STEPS ?? 300)
const repeats = sandboxName === "python" ? 3 : 5
// A pooled Python interpreter serves one session; give the pool time to start a replacement between runs, so that
// every run starts warm (otherwise this measures cold starts). BENCH_SETTLE_MS overrides.
const settleMs = Number(process.env.BENCH_SETTLE_MS ?? (sandboxName === "python" ? 6000 : 0))
const settle = settleMs > 0 ? Effect.sleep(settleMs) : Effect.void
const code = sandboxName === "python" ? "x = 1" : "var x = 1"
/** The timed block, in the sandbox's language. */
const block = `\`\`\`repl\n${code}\n\`\`\``
/** The in-memory sessions' block (they run nothing). */
const inMemoryBlock = "```repl\nx = 1\n```"
/** A root model's script: `n` replies of `reply`, then the answer. */
const script = (reply: string, n: number) => [...Array.from({ length: n }, () => reply), "FINAL(done)"]

const sandboxLayer: Layer.Layer<Sandbox.Sandbox, Sandbox.SandboxError> =
  sandboxName === "python" ? PythonSandbox.layerPool({ size: 2 }) : JavascriptSandbox.layer()

const timeRun = (script: ReadonlyArray<string>, policy: Record<string, number>, wait = settle) =>
  Effect.gen(function* () {
    yield* wait
    const start = performance.now()
    const result = yield* Rlm.run("bench", "ctx", { policy }).pipe(
      Effect.provide(FakeAdapter.layer({ script, rules: [{ match: "", reply: "ok" }] }))
    )
    return { ms: performance.now() - start, result }
  })

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number

const program = Effect.gen(function* () {
  // Warm up: the module, the interpreter pool, the JIT.
  yield* timeRun(script(block, 1), {})
  const long: Array<number> = []
  const short: Array<number> = []
  for (let i = 0; i < repeats; i++) {
    long.push((yield* timeRun(script(block, steps), { maxSteps: steps + 1 })).ms)
    short.push((yield* timeRun(script(block, 1), {})).ms)
  }
  console.error(
    `# runs long_ms ${long.map((x) => x.toFixed(0)).join(" ")} short_ms ${short.map((x) => x.toFixed(0)).join(" ")}`
  )
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

const steady = Effect.gen(function* () {
  const sandbox = yield* Sandbox.Sandbox
  const session = yield* sandbox.open({
    context: { text: "ctx" },
    host: {
      llmQuery: () => Effect.succeed("ok"),
      llmQueryBatched: (prompts) => Effect.succeed(prompts.map(() => "ok")),
      rlmQuery: () => Effect.succeed("ok"),
      rlmQueryBatched: (prompts) => Effect.succeed(prompts.map(() => "ok"))
    }
  })
  const children = descendants(process.pid)
  const same = Layer.succeed(
    Sandbox.Sandbox,
    Sandbox.Sandbox.of({
      ...sandbox,
      open: (): Effect.Effect<Sandbox.Repl, never, Scope.Scope> => Effect.succeed(session)
    })
  )
  const measured = (n: number) =>
    Effect.gen(function* () {
      const host = process.cpuUsage()
      const child = children.reduce((sum, pid) => sum + cpuNs(pid), 0)
      const { ms } = yield* timeRun(script(block, n), { maxSteps: n + 1 }, Effect.void).pipe(Effect.provide(same))
      const used = process.cpuUsage(host)
      return {
        ms,
        hostMs: (used.user + used.system) / 1000,
        childMs: (children.reduce((sum, pid) => sum + cpuNs(pid), 0) - child) / 1e6
      }
    })
  // Warm up this process's JIT and the interpreter, as a long session would have.
  for (let i = 0; i < 3; i++) yield* measured(steps)
  const rows: Array<{ ms: number; hostMs: number; childMs: number }> = []
  for (let i = 0; i < 5; i++) {
    const long = yield* measured(steps)
    const short = yield* measured(1)
    rows.push({
      ms: (long.ms - short.ms) / (steps - 1),
      hostMs: (long.hostMs - short.hostMs) / (steps - 1),
      childMs: (long.childMs - short.childMs) / (steps - 1)
    })
  }
  const of = (pick: (row: (typeof rows)[number]) => number) => median(rows.map(pick)).toFixed(3)
  console.error(`# steady per_iteration_ms runs ${rows.map((row) => row.ms.toFixed(3)).join(" ")}`)
  console.log(
    `BENCH loop-steady per_iteration_ms=${of((row) => row.ms)} host_cpu_ms=${of((row) => row.hostMs)} child_cpu_ms=${children.length > 0 ? of((row) => row.childMs) : "n/a"}`
  )
})

await Effect.runPromise(Effect.scoped(program.pipe(Effect.provide(sandboxLayer))))
if (process.env.BENCH_STEADY !== "0") {
  const single: Layer.Layer<Sandbox.Sandbox, Sandbox.SandboxError> =
    sandboxName === "python" ? PythonSandbox.layer() : JavascriptSandbox.layer()
  await Effect.runPromise(Effect.scoped(steady.pipe(Effect.provide(single))))
}

/** A Sandbox whose sessions run nothing: every block succeeds at once with no output. */
const inMemory = (() => {
  const done = new Sandbox.ExecResult({ stdout: "", stderr: "", truncated: false, durationMs: 0 })
  const repl: Sandbox.Repl = {
    language: "python",
    exec: () => Effect.succeed(done),
    getVar: () => Effect.succeed(Option.none()),
    listVars: Effect.succeed([])
  }
  return Layer.succeed(
    Sandbox.Sandbox,
    Sandbox.Sandbox.of({ language: "python", isolation: "process", open: () => Effect.succeed(repl) })
  )
})()

const core = Effect.gen(function* () {
  const measured = (n: number) =>
    Effect.gen(function* () {
      const host = process.cpuUsage()
      const { ms } = yield* timeRun(script(inMemoryBlock, n), { maxSteps: n + 1 }, Effect.void).pipe(
        Effect.provide(inMemory)
      )
      const used = process.cpuUsage(host)
      return { ms, hostMs: (used.user + used.system) / 1000 }
    })
  for (let i = 0; i < 3; i++) yield* measured(steps)
  const rows: Array<{ ms: number; hostMs: number }> = []
  for (let i = 0; i < 5; i++) {
    const long = yield* measured(steps)
    const short = yield* measured(1)
    rows.push({ ms: (long.ms - short.ms) / (steps - 1), hostMs: (long.hostMs - short.hostMs) / (steps - 1) })
  }
  const of = (pick: (row: (typeof rows)[number]) => number) => median(rows.map(pick)).toFixed(3)
  console.log(`BENCH loop-core per_iteration_ms=${of((row) => row.ms)} host_cpu_ms=${of((row) => row.hostMs)}`)
})

if (process.env.BENCH_CORE !== "0") await Effect.runPromise(core)

/** Counts the Effect operations run by the fibers it supervises (with `OpSupervision` on). */
class OpCounter extends Supervisor.AbstractSupervisor<void> {
  count = 0
  readonly value = Effect.void
  override onEffect(): void {
    this.count++
  }
}

const effects = Effect.gen(function* () {
  const counted = (n: number) =>
    Effect.gen(function* () {
      const counter = new OpCounter()
      yield* timeRun(script(inMemoryBlock, n), { maxSteps: n + 1 }, Effect.void).pipe(
        Effect.provide(inMemory),
        Effect.supervised(counter),
        Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision))
      )
      return counter.count
    })
  yield* counted(1)
  const one = yield* counted(1)
  const many = yield* counted(101)
  console.log(`BENCH loop-effects per_step=${((many - one) / 100).toFixed(1)} run_fixed=${one}`)
})

if (process.env.BENCH_EFFECTS !== "0") await Effect.runPromise(effects)
