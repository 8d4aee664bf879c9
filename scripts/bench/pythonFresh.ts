/**
 * A fresh interpreter's first blocks (session 6, docs/benchmarks.md): open a
 * session, run three first blocks of varied code (`real_first_ms`, wall),
 * then 300 blocks of `x = 1` in sets of 50 and 200 more, printing the CPU per
 * block of the session's interpreter process (Linux schedstat). POOL=1 takes
 * the interpreter from `PythonSandbox.layerPool({ size: 1 })` after IDLE_MS
 * (default 7000) of waiting (`idle_cpu_ms`: what it used meanwhile); else a
 * plain `PythonSandbox.layer()` start (`cold_ms`: open + `pass`).
 */
import { PythonSandbox, Sandbox } from "@rlm-runtime/sandbox"
import { Effect } from "effect"
import { cpuNs, descendants } from "./procCpu.js"

const host: Sandbox.HostFunctions = {
  llmQuery: (p) => Effect.succeed(p),
  rlmQuery: (p) => Effect.succeed(p),
  llmQueryBatched: (p) => Effect.succeed(p),
  rlmQueryBatched: (p) => Effect.succeed(p)
}
const pool = process.env.POOL === "1"
const idleMs = Number(process.env.IDLE_MS ?? (pool ? 7000 : 0))
const program = Effect.gen(function* () {
  const sandbox = yield* Sandbox.Sandbox
  if (idleMs > 0) yield* Effect.sleep(idleMs)
  const before = descendants(process.pid)
  const idleCpu = before.reduce((s, p) => s + cpuNs(p), 0) / 1e6
  const start = performance.now()
  const repl = yield* sandbox.open({ context: { text: "tiny context" }, host })
  yield* repl.exec("pass")
  const cold = performance.now() - start
  const real = [
    "import re, json\nwords = re.findall(r'\\w+', P * 50)\nc = {}\nfor w in words:\n    c[w] = c.get(w, 0) + 1\nprint(json.dumps(sorted(c.items())[:3]))",
    "text = ' '.join(f'{i:05d}' for i in range(2000)).upper().split()\nlen(text)",
    "try:\n    int('x')\nexcept ValueError as e:\n    msg = str(e)\nmsg"
  ]
  const realMs: Array<string> = []
  for (const code of real) {
    const t = performance.now()
    const r = yield* repl.exec(code)
    if (r.error) console.log(r.error)
    realMs.push((performance.now() - t).toFixed(1))
  }
  const kids = pool ? before : descendants(process.pid).filter((p) => !before.includes(p))
  const cpu = () => kids.reduce((s, p) => s + cpuNs(p), 0) / 1e6
  const startCpu = cpu()
  const sets: Array<string> = []
  let wall = performance.now()
  for (let set = 0; set < 6; set++) {
    const c0 = cpu()
    for (let i = 0; i < 50; i++) yield* repl.exec("x = 1")
    sets.push(((cpu() - c0) / 50).toFixed(2))
  }
  wall = (performance.now() - wall) / 300
  const c0 = cpu()
  for (let i = 0; i < 200; i++) yield* repl.exec("x = 1")
  const later = ((cpu() - c0) / 200).toFixed(2)
  console.log(
    `BENCH pythonFresh pool=${pool} cold_ms=${cold.toFixed(0)} real_first_ms=${realMs.join(",")} cpu_at_first_block_ms=${startCpu.toFixed(0)} idle_cpu_ms=${idleCpu.toFixed(0)} per50_cpu_ms=${sets.join(",")} wall_1_300_ms=${wall.toFixed(2)} later200=${later}`
  )
})
const layer = pool ? PythonSandbox.layerPool({ size: 1 }) : PythonSandbox.layer()
await Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(layer)))
