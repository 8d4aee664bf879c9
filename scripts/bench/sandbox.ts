/**
 * Sandbox start, call and 100 MB figures, through the public API only
 * (`Sandbox.open` in a `Scope`, `Repl.exec`, the host functions passed in).
 * Prints one line per sandbox:
 *
 *   BENCH sandbox=<python|js> cold_start_ms=… warm_start_ms=… exec_overhead_us=…
 *     host_call_us=… load_100mb_ms=… peak_rss_mb=… find_100mb_ms=…
 *
 * Definitions (also in docs/benchmarks.md):
 * - cold_start_ms: the first `open` of a freshly built layer with a tiny
 *   context, up to the end of the first block (`pass` / `0`), as seen by the host.
 *   Python: `PythonSandbox.layer()` (spawns the interpreter process), in a
 *   fresh host process each time (`pythonCold.ts`): the median of
 *   BENCH_COLD_RUNS (default 7) runs, after one untimed run that builds the
 *   start-up snapshot if this machine has none cached yet.
 *   JS: `JavascriptSandbox.layer()`, first session of this process: spawns the
 *   interpreter's child process, which compiles the WebAssembly module.
 * - warm_start_ms: the same, when a warm interpreter is available; median.
 *   Python: `PythonSandbox.layerPool({ size: 1 })`, measured once the pool is
 *   full (its interpreter started and idle). JS: there is no pool; this is a
 *   later `open` in the same process (a fresh child process too) — NOT pooled.
 * - exec_overhead_us: median host-side time of `Repl.exec` of a trivial block
 *   (`pass` / `0`) on an open session.
 * - host_call_us: per-call time of `llm_query("x")` to a host function that
 *   answers at once, timed inside the REPL over 1,000 sequential calls
 *   (`time.perf_counter` in Python, `Date.now` in JS).
 * - load_100mb_ms: the time of an `open` (plus first trivial block) with a
 *   100 MiB ASCII context, minus warm_start_ms.
 * - peak_rss_mb: the interpreter's peak RSS while holding the 100 MiB context,
 *   after the load and the find runs. Python: VmHWM of the interpreter child
 *   process (`/proc/<pid>/status`; the child found as this process's only
 *   pooled child before the open). JS: VmHWM of the session's interpreter
 *   process (the largest of this process's descendants running
 *   `javascript-child.mjs`).
 * - find_100mb_ms: median of 5 `find(needle)` calls timed inside the REPL,
 *   the needle having 3 hits in the 100 MiB context.
 *
 * Python's exec overhead, host call and find are measured once the pool's
 * replacement interpreter has finished starting (on 2 cores it would otherwise
 * compete for the CPU); its warm start and 100 MiB load are not, since taking
 * an interpreter from the pool is what starts the replacement.
 *
 * BENCH_SANDBOX=python|js runs only one of them. Progress goes to stderr.
 */
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import * as os from "node:os"
import { fileURLToPath } from "node:url"
import { JavascriptSandbox, PythonSandbox, Sandbox } from "@rlm-runtime/sandbox"
import { Effect, type Layer } from "effect"

type Name = "python" | "js"

const only = process.env.BENCH_SANDBOX
const MiB = 1024 * 1024
const CONTEXT_MB = 100
const NEEDLE = "NEEDLE-7f3a9c"
const NEEDLE_HITS = 3
const EXEC_SAMPLES = 200
const HOST_CALLS = 1000
const WARM_SAMPLES_PY = 3
const WARM_SAMPLES_JS = 5

const log = (message: string) => process.stderr.write(`# ${message}\n`)
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number

const host: Sandbox.HostFunctions = {
  llmQuery: () => Effect.succeed("ok"),
  llmQueryBatched: (prompts) => Effect.succeed(prompts.map(() => "ok")),
  rlmQuery: () => Effect.succeed("ok"),
  rlmQueryBatched: (prompts) => Effect.succeed(prompts.map(() => "ok"))
}

/**
 * A flat, one-byte 100 MiB ASCII string with the needle at 3 places, built
 * without a 100 MB temporary buffer.
 */
const bigContext = (): string => {
  const line = "The quick brown fox jumps over the lazy dog; lorem ipsum dolor sit amet 0123456789.\n"
  const block = line.repeat(Math.ceil(MiB / line.length)).slice(0, MiB)
  const part = Math.floor(CONTEXT_MB / (NEEDLE_HITS + 1))
  let text = ""
  for (let i = 0; i < NEEDLE_HITS; i++) text += block.repeat(part) + NEEDLE
  text += block.repeat(CONTEXT_MB - part * NEEDLE_HITS)
  text = text.slice(0, CONTEXT_MB * MiB)
  text.indexOf("\u0001") // flattens the rope
  return text
}

const trivial = (name: Name) => (name === "python" ? "pass" : "0")

/** Open a session and run the first trivial block; the session stays open in the caller's scope. */
const openTimed = (name: Name, text: string) =>
  Effect.gen(function* () {
    const sandbox = yield* Sandbox.Sandbox
    const start = performance.now()
    const repl = yield* sandbox.open({ context: { text }, host })
    const first = yield* repl.exec(trivial(name))
    const ms = performance.now() - start
    if (first.error !== undefined) return yield* Effect.dieMessage(`first block failed: ${first.error}`)
    return { repl, ms }
  })

/** Run a block that prints one line of numbers; return them. */
const execNumbers = (repl: Sandbox.Repl, code: string) =>
  Effect.gen(function* () {
    const result = yield* repl.exec(code)
    if (result.error !== undefined) return yield* Effect.dieMessage(`bench block failed: ${result.error}`)
    const numbers = result.stdout.trim().split(/\s+/).map(Number)
    if (numbers.some(Number.isNaN)) return yield* Effect.dieMessage(`unexpected output: ${result.stdout}`)
    return numbers
  })

const execOverheadUs = (name: Name, repl: Sandbox.Repl) =>
  Effect.gen(function* () {
    const samples: Array<number> = []
    for (let i = 0; i < EXEC_SAMPLES; i++) {
      const start = performance.now()
      yield* repl.exec(trivial(name))
      samples.push((performance.now() - start) * 1000)
    }
    return median(samples)
  })

const hostCallCode = (name: Name) =>
  name === "python"
    ? [
        "import time as _bt",
        "_b0 = _bt.perf_counter()",
        `for _bi in range(${HOST_CALLS}):`,
        '    llm_query("x")',
        `print((_bt.perf_counter() - _b0) * 1e6 / ${HOST_CALLS})`
      ].join("\n")
    : [
        "var _b0 = Date.now()",
        `for (var _bi = 0; _bi < ${HOST_CALLS}; _bi++) llm_query("x")`,
        `print((Date.now() - _b0) * 1000 / ${HOST_CALLS})`
      ].join("\n")

const findCode = (name: Name) =>
  name === "python"
    ? [
        "import time as _bt",
        "_bd = []",
        "for _bk in range(5):",
        "    _b0 = _bt.perf_counter()",
        `    _bh = find(${JSON.stringify(NEEDLE)})`,
        "    _bd.append((_bt.perf_counter() - _b0) * 1000)",
        "_bd.sort()",
        "print(_bd[2], len(_bh), lenP(), *_bd)"
      ].join("\n")
    : [
        "var _bd = []",
        "var _bh",
        "for (var _bk = 0; _bk < 5; _bk++) {",
        "  var _b0 = Date.now()",
        `  _bh = find(${JSON.stringify(NEEDLE)})`,
        "  _bd.push(Date.now() - _b0)",
        "}",
        "_bd.sort(function (a, b) { return a - b })",
        "print(_bd[2], _bh.length, lenP(), _bd.join(' '))"
      ].join("\n")

// --- Child processes of this process (the Python interpreters) -------------

interface Child {
  readonly pid: number
  readonly ticks: number
}

/** `pid` and its descendants (the spawned child may be the OS wall's launcher, the interpreter under it). */
const tree = (pid: number, depth = 0): Array<number> => {
  if (depth > 6) return []
  let kids: Array<number> = []
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      kids = kids.concat(
        readFileSync(`/proc/${pid}/task/${task}/children`, "utf8")
          .trim()
          .split(/\s+/)
          .filter((x) => x !== "")
          .map(Number)
      )
    }
  } catch {
    return []
  }
  return [pid, ...kids.flatMap((kid) => tree(kid, depth + 1))]
}

const ticksOf = (pid: number): number => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return Number(fields[11]) + Number(fields[12])
  } catch {
    return 0
  }
}

/**
 * Live (non-zombie) Python interpreter children of this process with the CPU
 * ticks of their process trees so far (tsx's own esbuild child is not counted).
 */
const children = (): Array<Child> => {
  const out: Array<Child> = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      // fields[0] is field 3 (state), fields[1] field 4 (ppid)
      if (Number(fields[1]) !== process.pid || fields[0] === "Z") continue
      if (!readFileSync(`/proc/${entry}/cmdline`, "utf8").includes("python-child.mjs")) continue
      const pid = Number(entry)
      out.push({ pid, ticks: tree(pid).reduce((sum, p) => sum + ticksOf(p), 0) })
    } catch {
      // exited meanwhile
    }
  }
  return out
}

/** This process's descendants running the JavaScript interpreter's child script. */
const jsChildren = (): Array<number> => {
  const found: Array<number> = []
  const walk = (pid: number) => {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      let text = ""
      try {
        text = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim()
      } catch {
        continue
      }
      for (const child of text === "" ? [] : text.split(/\s+/).map(Number)) {
        try {
          if (readFileSync(`/proc/${child}/cmdline`, "utf8").includes("javascript-child.mjs")) found.push(child)
          walk(child)
        } catch {
          // exited meanwhile
        }
      }
    }
  }
  walk(process.pid)
  return found
}

/** The peak RSS of the interpreter: the largest VmHWM in the child's process tree. */
const vmHwmMb = (pid: number): number | undefined => {
  let best: number | undefined
  for (const member of tree(pid)) {
    try {
      const match = /VmHWM:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${member}/status`, "utf8"))
      if (match?.[1] !== undefined) best = Math.max(best ?? 0, Number(match[1]) / 1024)
    } catch {}
  }
  return best
}

/**
 * Wait until at least `count` children exist and none used CPU for ~450 ms:
 * the pool's interpreters have started and are waiting.
 */
const waitIdleChildren = (count: number) =>
  Effect.gen(function* () {
    const start = performance.now()
    let last = -1
    let quiet = 0
    while (performance.now() - start < 60_000) {
      yield* Effect.sleep("150 millis")
      const live = children()
      const ticks = live.reduce((sum, c) => sum + c.ticks, 0)
      quiet = live.length >= count && ticks === last ? quiet + 1 : 0
      last = ticks
      if (quiet >= 3) return live
    }
    return yield* Effect.dieMessage(`the pool's interpreters did not become idle within 60 s`)
  })

// --- The benches ------------------------------------------------------------

interface Figures {
  readonly isolation: Sandbox.Isolation
  readonly cold: number
  readonly warm: number
  readonly execUs: number
  readonly hostUs: number
  readonly load: number
  readonly rss: number
  readonly find: number
}

const print = (name: Name, f: Figures) =>
  console.log(
    `BENCH sandbox=${name} cold_start_ms=${f.cold.toFixed(0)} warm_start_ms=${f.warm.toFixed(1)} exec_overhead_us=${f.execUs.toFixed(0)} host_call_us=${f.hostUs.toFixed(0)} load_100mb_ms=${f.load.toFixed(0)} peak_rss_mb=${f.rss.toFixed(0)} find_100mb_ms=${f.find.toFixed(1)} isolation=${f.isolation}`
  )

const checkFind = (name: Name, numbers: ReadonlyArray<number>) => {
  if (numbers[1] !== NEEDLE_HITS || numbers[2] !== CONTEXT_MB * MiB) {
    return Effect.dieMessage(`find saw ${numbers[1]} hits in ${numbers[2]} characters`)
  }
  log(
    `${name} find runs ${numbers
      .slice(3)
      .map((n) => n.toFixed(1))
      .join(" ")} ms`
  )
  return Effect.succeed(numbers[0] as number)
}

const loadavg = () =>
  os
    .loadavg()
    .map((n) => n.toFixed(2))
    .join(" ")

const withLayer = <A, E, LE>(layer: Layer.Layer<Sandbox.Sandbox, LE>, effect: Effect.Effect<A, E, Sandbox.Sandbox>) =>
  Effect.scoped(Effect.provide(effect, layer))

const javascript = (text: string) =>
  Effect.gen(function* () {
    const layer = JavascriptSandbox.layer()
    const cold = yield* withLayer(layer, Effect.scoped(openTimed("js", "tiny context")))
    log(`js cold start ${cold.ms.toFixed(1)} ms`)
    const warms: Array<number> = []
    for (let i = 0; i < WARM_SAMPLES_JS; i++) {
      warms.push((yield* withLayer(layer, Effect.scoped(openTimed("js", "tiny context")))).ms)
    }
    const warm = median(warms)
    log(`js warm starts (not pooled) ${warms.map((w) => w.toFixed(1)).join(" ")} ms`)
    const { execUs, hostUs } = yield* withLayer(
      layer,
      Effect.scoped(
        Effect.gen(function* () {
          const { repl } = yield* openTimed("js", "tiny context")
          const execUs = yield* execOverheadUs("js", repl)
          const [hostUs] = yield* execNumbers(repl, hostCallCode("js"))
          return { execUs, hostUs: hostUs as number }
        })
      )
    )
    log(`js exec overhead ${execUs.toFixed(0)} us, host call ${hostUs.toFixed(0)} us`)
    const baseline = process.memoryUsage().rss
    const big = yield* withLayer(
      layer,
      Effect.scoped(
        Effect.gen(function* () {
          const { repl, ms } = yield* openTimed("js", text)
          log(`js open with 100 MiB context ${ms.toFixed(0)} ms`)
          const find = yield* Effect.flatMap(execNumbers(repl, findCode("js")), (n) => checkFind("js", n))
          const rss = Math.max(0, ...jsChildren().map((pid) => vmHwmMb(pid) ?? 0))
          return { ms, find, rss }
        })
      )
    )
    log(`js host RSS ${(baseline / MiB).toFixed(0)} MB, interpreter process peak ${big.rss.toFixed(0)} MB`)
    const isolation = yield* withLayer(
      layer,
      Effect.map(Sandbox.Sandbox, (sandbox) => sandbox.isolation)
    )
    print("js", { isolation, cold: cold.ms, warm, execUs, hostUs, load: big.ms - warm, rss: big.rss, find: big.find })
  })

/** One cold start in a fresh host process (`pythonCold.ts`), in ms. */
const pythonColdRun = (isolation: "auto" | "process" = "auto"): number => {
  const script = fileURLToPath(new URL("./pythonCold.ts", import.meta.url))
  const output = execFileSync(process.execPath, [...process.execArgv, script, isolation], { encoding: "utf8" })
  const match = /^COLD ([\d.]+)$/m.exec(output)
  if (match?.[1] === undefined) throw new Error(`unexpected output of pythonCold.ts: ${output}`)
  return Number(match[1])
}

const pythonColdStart = (): { readonly walled: number; readonly bare: number } => {
  const runs = Math.max(1, Number(process.env.BENCH_COLD_RUNS ?? 7))
  log("python first start in a fresh process (builds the start-up snapshot if none is cached) ...")
  log(`python first start ${pythonColdRun().toFixed(0)} ms`)
  // Interleaved with the same starts behind the process wall only, so that
  // the OS wall's cost is a ratio of figures taken in the same minutes.
  const walled: Array<number> = []
  const bare: Array<number> = []
  for (let i = 0; i < runs; i++) {
    walled.push(pythonColdRun("auto"))
    bare.push(pythonColdRun("process"))
  }
  log(`python cold starts, each in a fresh process: ${walled.map((ms) => ms.toFixed(0)).join(" ")} ms`)
  log(`python cold starts, process wall only: ${bare.map((ms) => ms.toFixed(0)).join(" ")} ms`)
  return { walled: median(walled), bare: median(bare) }
}

const python = (text: string) =>
  Effect.gen(function* () {
    const starts = pythonColdStart()
    const cold = { ms: starts.walled }
    const pooled = Effect.gen(function* () {
      log("python pool: waiting for the first interpreter ...")
      yield* waitIdleChildren(1)
      const warms: Array<number> = []
      let execUs = 0
      let hostUs = 0
      for (let i = 0; i < WARM_SAMPLES_PY; i++) {
        yield* waitIdleChildren(1)
        yield* Effect.scoped(
          Effect.gen(function* () {
            const { repl, ms } = yield* openTimed("python", "tiny context")
            warms.push(ms)
            log(`python warm start ${ms.toFixed(1)} ms`)
            if (i === 0) {
              // Measure on an idle machine: let the pool's replacement finish starting.
              yield* waitIdleChildren(2)
              execUs = yield* execOverheadUs("python", repl)
              hostUs = (yield* execNumbers(repl, hostCallCode("python")))[0] as number
              log(`python exec overhead ${execUs.toFixed(0)} us, host call ${hostUs.toFixed(0)} us`)
            }
          })
        )
      }
      const warm = median(warms)
      const before = yield* waitIdleChildren(1)
      log(`python idle pooled interpreter VmHWM ${before.map((c) => (vmHwmMb(c.pid) ?? 0).toFixed(0)).join(" ")} MB`)
      const big = yield* Effect.scoped(
        Effect.gen(function* () {
          const { repl, ms } = yield* openTimed("python", text)
          log(`python open with 100 MiB context ${ms.toFixed(0)} ms`)
          // As for exec overhead: time find, not the pool's replacement starting beside it.
          yield* waitIdleChildren(2)
          const find = yield* Effect.flatMap(execNumbers(repl, findCode("python")), (n) => checkFind("python", n))
          const rss = Math.max(...before.map((c) => vmHwmMb(c.pid) ?? 0))
          return { ms, find, rss }
        })
      )
      const isolation = (yield* Sandbox.Sandbox).isolation
      console.log(
        `BENCH sandbox=python-wall isolation=${isolation} cold_start_ms=${starts.walled.toFixed(0)} cold_start_process_wall_ms=${starts.bare.toFixed(0)} ratio=${(starts.walled / starts.bare).toFixed(3)}`
      )
      print("python", {
        isolation,
        cold: cold.ms,
        warm,
        execUs,
        hostUs,
        load: big.ms - warm,
        rss: big.rss,
        find: big.find
      })
    })
    yield* withLayer(PythonSandbox.layerPool({ size: 1 }), pooled)
  })

const program = Effect.gen(function* () {
  const started = performance.now()
  log(`load average at start: ${loadavg()} (${os.cpus().length} cores)`)
  const text = bigContext()
  log(`context: ${(text.length / MiB).toFixed(0)} MiB ASCII, needle ${NEEDLE} x${NEEDLE_HITS}`)
  // JS first: its peak RSS is read from this process's high-water mark.
  if (only === undefined || only === "js") yield* javascript(text)
  if (only === undefined || only === "python") yield* python(text)
  log(`done in ${((performance.now() - started) / 1000).toFixed(1)} s; load average at end: ${loadavg()}`)
})

await Effect.runPromise(program)
