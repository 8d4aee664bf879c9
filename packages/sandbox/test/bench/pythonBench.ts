/**
 * Measurements of the Python sandbox (not a test). Run from the repo root:
 *   npx tsx --conditions=@rlm-runtime/source packages/sandbox/test/bench/pythonBench.ts
 * It prints one line:
 *   BENCH sandbox=python cold_start_ms=… warm_start_ms=… exec_overhead_us=… host_call_us=…
 *     load_100mb_ms=… peak_rss_mb=… find_100mb_ms=…
 * `benchPython` is the reusable part (a `scripts/bench/` runner can import it).
 */
import { readdirSync, readFileSync } from "node:fs"
import { pathToFileURL } from "node:url"
import { Duration, Effect, Exit, Scope } from "effect"
import * as PythonSandbox from "../../src/PythonSandbox.js"
import type * as Sandbox from "../../src/Sandbox.js"

export interface PythonBench {
  readonly cold_start_ms: number
  readonly warm_start_ms: number
  readonly exec_overhead_us: number
  readonly host_call_us: number
  readonly load_100mb_ms: number
  readonly peak_rss_mb: number
  readonly find_100mb_ms: number
}

const host: Sandbox.HostFunctions = {
  llmQuery: (p) => Effect.succeed(p),
  rlmQuery: (p) => Effect.succeed(p),
  llmQueryBatched: (ps) => Effect.succeed(ps),
  rlmQueryBatched: (ps) => Effect.succeed(ps)
}

const childPids = (): Array<number> =>
  readdirSync("/proc")
    .filter((e) => /^\d+$/.test(e))
    .flatMap((e) => {
      try {
        const stat = readFileSync(`/proc/${e}/stat`, "utf8")
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
        return ppid === process.pid && readFileSync(`/proc/${e}/cmdline`, "utf8").includes("python-child.mjs")
          ? [Number(e)]
          : []
      } catch {
        return []
      }
    })

const peakRssMb = (pid: number): number => {
  const match = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  return match?.[1] === undefined ? Number.NaN : Math.round(Number(match[1]) / 1024)
}

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const started = performance.now()
    const value = yield* effect
    return { value, ms: performance.now() - started }
  })

/** A 100 MB ASCII context with a needle near the end. */
export const context100mb = (): string => {
  const line = `${"lorem ipsum dolor sit amet ".repeat(37)}\n`
  return `${line.repeat(Math.ceil(100_000_000 / line.length)).slice(0, 100_000_000 - 12)}NEEDLE_HERE.`
}

export const benchPython = (options?: PythonSandbox.Options): Effect.Effect<PythonBench, Sandbox.SandboxError> =>
  Effect.gen(function* () {
    // Cold start: a fresh interpreter process for one session.
    const cold = yield* PythonSandbox.make(options)
    const coldScope = yield* Scope.make()
    const coldOpen = yield* timed(cold.open({ context: { text: "hello" }, host }).pipe(Scope.extend(coldScope)))
    const repl = coldOpen.value
    // Exec overhead: a block doing nothing, round trip host -> child -> worker -> back.
    for (let i = 0; i < 20; i++) yield* repl.exec("pass")
    const execs = 200
    const execRun = yield* timed(Effect.repeatN(repl.exec("pass"), execs - 1))
    // Host call latency: many llm_query calls in one block, minus an empty loop.
    const calls = 2000
    const callRun = yield* repl.exec(
      `import time\nt = time.perf_counter()\nfor i in range(${calls}):\n    llm_query("x")\nt1 = time.perf_counter()\nfor i in range(${calls}):\n    str("x")\nt2 = time.perf_counter()\nprint(((t1 - t) - (t2 - t1)) / ${calls} * 1e6)`
    )
    yield* Scope.close(coldScope, Exit.void)

    // Warm start and the 100 MB context: from a pool, so the cold start is not counted.
    const pooled = yield* PythonSandbox.makePool({ ...options, size: 1 })
    yield* Effect.sleep(Duration.millis(Math.max(2000, coldOpen.ms * 1.5)))
    const warm = yield* timed(Effect.scoped(pooled.open({ context: { text: "hello" }, host })))
    yield* Effect.sleep(Duration.millis(Math.max(2000, coldOpen.ms * 1.5)))
    const text = context100mb()
    const big = yield* Effect.scoped(
      Effect.gen(function* () {
        const load = yield* timed(pooled.open({ context: { text }, host }))
        const pids = childPids()
        const find = yield* load.value.exec(
          `import time\nt = time.perf_counter()\nhits = find("NEEDLE_HERE")\nprint((time.perf_counter() - t) * 1000, len(hits))`
        )
        const rss = Math.max(...pids.map(peakRssMb).filter((n) => !Number.isNaN(n)))
        return { loadMs: load.ms, findMs: Number(find.stdout.split(" ")[0]), rss }
      })
    )
    return {
      cold_start_ms: Math.round(coldOpen.ms),
      warm_start_ms: Math.round(warm.ms),
      exec_overhead_us: Math.round((execRun.ms / execs) * 1000),
      host_call_us: Math.round(Number(callRun.stdout.trim())),
      load_100mb_ms: Math.round(big.loadMs),
      peak_rss_mb: big.rss,
      find_100mb_ms: Math.round(big.findMs * 10) / 10
    }
  }).pipe(Effect.scoped)

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  Effect.runPromise(benchPython()).then(
    (r) =>
      console.log(
        `BENCH sandbox=python ${Object.entries(r)
          .map(([k, v]) => `${k}=${v}`)
          .join(" ")}`
      ),
    (e) => {
      console.error(e)
      process.exit(1)
    }
  )
}
