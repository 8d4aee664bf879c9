/**
 * `rlm serve` under load, in-process on a free loopback port, fake model.
 *
 * - `BENCH serve concurrency=50 requests=… p50_ms=… p99_ms=… trivial_p50_ms=…`:
 *   `requests` chat completions (`BENCH_REQUESTS`, default 50), 50 in flight
 *   at a time (`BENCH_CONCURRENCY`), each a run whose one root call (fake
 *   latency `BENCH_LATENCY_MS`, default 200) runs a JavaScript block that finds
 *   the request's token in its context; every answer is checked to be its own.
 *   Each such run starts its own sandboxed interpreter (a child process), so on
 *   a small machine this measures mostly interpreter starts. p50/p99 are per
 *   request, send to answer. `trivial_p50_ms`: 50 requests one after the other
 *   whose run answers at once (`FINAL(ok)`, no latency, no code).
 * - `BENCH serve-baseline`: the same trivial run through `Rlm.run` in-process
 *   (same adapter and sandbox), measured interleaved with the HTTP ones
 *   (trivial_ratio = over HTTP / in-process); the same load of runs that answer
 *   without code (`FINAL(ok)` after the fake latency, no interpreter), whose
 *   p50 over the latency is the server's own overhead under 50 concurrent
 *   requests (1.0 is none); and the code load run through `Rlm.run`
 *   in-process at the same concurrency (load_ratio = over HTTP / in-process:
 *   what the server adds to runs that start interpreters).
 */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { Rlm } from "@rlm-runtime/core"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { LazySandbox, Server } from "@rlm-runtime/server"
import { Sandbox } from "@rlm-runtime/sandbox/Sandbox"
import { Context, Effect, Layer } from "effect"

const requests = Number(process.env.BENCH_REQUESTS ?? 50)
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 50)
const latency = Number(process.env.BENCH_LATENCY_MS ?? 200)
const trivialN = 50

const echo =
  "```repl\nvar m = String(context).match(/token-[0-9]+/); answer = 'answer: ' + (m ? m[0] : 'none')\n```\nFINAL_VAR(answer)"

const percentile = (xs: ReadonlyArray<number>, p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] as number
}

const serverOf = (script: ReadonlyArray<string>, latencyMs: number) =>
  Effect.gen(function* () {
    const dir = mkdtempSync(join(tmpdir(), "rlm-bench-serve-"))
    const ctx = yield* Layer.build(
      Server.layer({
        port: 0,
        maxConcurrentRuns: concurrency,
        maxQueue: requests,
        contextsDir: join(dir, "contexts"),
        tracesDir: join(dir, "traces")
      }).pipe(Layer.provide(Layer.merge(FakeAdapter.layer({ script, latencyMs }), JavascriptSandbox.layer())))
    )
    return Context.get(ctx, Server.Server)
  })

const ask = (url: string, i: number) =>
  Effect.promise(async () => {
    const start = performance.now()
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "rlm",
        messages: [
          { role: "system", content: `The secret is token-${i}.` },
          { role: "user", content: `What is secret ${i}?` }
        ]
      })
    })
    const body = (await res.json()) as { choices?: Array<{ message: { content: string } }> }
    const ms = performance.now() - start
    return { ms, status: res.status, answer: body.choices?.[0]?.message.content }
  })

const program = Effect.gen(function* () {
  // Load.
  const load = yield* serverOf(
    Array.from({ length: requests }, () => echo),
    latency
  )
  const results = yield* Effect.forEach(
    Array.from({ length: requests }, (_, i) => i),
    (i) => Effect.map(ask(load.url, i), (r) => ({ ...r, i })),
    { concurrency }
  )
  const wrong = results.filter((r) => r.status !== 200 || r.answer !== `answer: token-${r.i}`)
  if (wrong.length > 0)
    throw new Error(`${wrong.length} requests not answered with their own answer: ${JSON.stringify(wrong[0])}`)
  const times = results.map((r) => r.ms)

  // Trivial requests, one after the other, interleaved with the same run in-process.
  const trivialScript = Array.from({ length: 2 * trivialN + 10 }, () => "FINAL(ok)")
  const trivial = yield* serverOf(trivialScript, 0)
  const inProcessLayer = Layer.merge(
    FakeAdapter.layer({ script: trivialScript, latencyMs: 0 }),
    // The server's sandbox is lazy (an interpreter only at the first block): the baseline gets the same.
    Layer.map(JavascriptSandbox.layer(), (ctx) =>
      Context.add(ctx, Sandbox, LazySandbox.make(Context.get(ctx, Sandbox)))
    )
  )
  const inProcess = yield* Layer.build(inProcessLayer)
  const http: Array<number> = []
  const direct: Array<number> = []
  for (let i = 0; i < trivialN + 5; i++) {
    const r = yield* ask(trivial.url, i)
    if (r.answer !== "ok") throw new Error(`trivial request answered ${JSON.stringify(r)}`)
    const start = performance.now()
    const answered = yield* Rlm.run("What is the secret?", "The secret is token-1.").pipe(Effect.provide(inProcess))
    if (answered.answer !== "ok") throw new Error("baseline did not answer")
    // The first few of each warm up the JIT.
    if (i >= 5) {
      http.push(r.ms)
      direct.push(performance.now() - start)
    }
  }
  // The same load, runs answering without code: no interpreter starts.
  const light = yield* serverOf(
    Array.from({ length: requests }, () => "FINAL(ok)"),
    latency
  )
  const lightResults = yield* Effect.forEach(
    Array.from({ length: requests }, (_, i) => i),
    (i) => ask(light.url, i),
    { concurrency }
  )
  if (lightResults.some((r) => r.answer !== "ok")) throw new Error("a no-code request was not answered")
  const lightP50 = percentile(
    lightResults.map((r) => r.ms),
    50
  )
  // The code load again, in-process: the same runs without the server.
  const codeLayer = yield* Layer.build(
    Layer.merge(
      FakeAdapter.layer({ script: Array.from({ length: requests }, () => echo), latencyMs: latency }),
      JavascriptSandbox.layer()
    )
  )
  const inProcessLoad = yield* Effect.forEach(
    Array.from({ length: requests }, (_, i) => i),
    (i) =>
      Effect.gen(function* () {
        const start = performance.now()
        const r = yield* Rlm.run(`What is secret ${i}?`, `The secret is token-${i}.`).pipe(Effect.provide(codeLayer))
        if (r.answer !== `answer: token-${i}`) throw new Error(`in-process run ${i} answered ${r.answer}`)
        return performance.now() - start
      }),
    { concurrency }
  )
  const inProcessP50 = percentile(inProcessLoad, 50)
  const trivialP50 = percentile(http, 50)
  const directP50 = percentile(direct, 50)
  const p50 = percentile(times, 50)
  console.log(
    `BENCH serve concurrency=${concurrency} requests=${requests} p50_ms=${p50.toFixed(1)} p99_ms=${percentile(times, 99).toFixed(1)} trivial_p50_ms=${trivialP50.toFixed(1)}`
  )
  console.log(
    `BENCH serve-baseline trivial_inprocess_p50_ms=${directP50.toFixed(1)} trivial_ratio=${(trivialP50 / directP50).toFixed(3)} fake_latency_ms=${latency} nocode_load_p50_ms=${lightP50.toFixed(1)} nocode_load_ratio=${(lightP50 / latency).toFixed(3)} load_inprocess_p50_ms=${inProcessP50.toFixed(1)} load_ratio=${(p50 / inProcessP50).toFixed(3)}`
  )
}).pipe(Effect.scoped)

await Effect.runPromise(program)
