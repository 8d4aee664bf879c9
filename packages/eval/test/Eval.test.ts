import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { assert, describe, it } from "@effect/vitest"
import * as LlmAdapterModule from "@rlm-runtime/adapters/LlmAdapter"
import { LlmAdapter } from "@rlm-runtime/adapters/LlmAdapter"
import * as Policy from "@rlm-runtime/core/Policy"
import * as Rlm from "@rlm-runtime/core/Rlm"
import * as Result from "@rlm-runtime/eval/Result"
import * as Runner from "@rlm-runtime/eval/Runner"
import * as JavascriptSandbox from "@rlm-runtime/sandbox/JavascriptSandbox"
import * as Replay from "@rlm-runtime/trace/Replay"
import * as Trace from "@rlm-runtime/trace/Trace"
import type * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import * as TraceView from "@rlm-runtime/trace/TraceView"
import { Deferred, Effect, Fiber, Layer, Option, Schema } from "effect"
import * as Oracle from "./oracle.js"

const WINDOW = 2048
const config = (out: string): Runner.Config => ({
  kinds: ["sniah", "oolong"],
  sizes: [1024, 4096, 16_384],
  n: 2,
  seed: 1,
  methods: ["rlm", "direct", "rlm-no-subcalls"],
  window: WINDOW,
  concurrency: 4,
  out,
  options: { policy: { maxSteps: 4 } }
})
const UNITS = 2 * 3 * 2 * 3

const services = Layer.mergeAll(Oracle.layer, JavascriptSandbox.layer(), NodeContext.layer)
const tempDir = () => mkdtempSync(join(tmpdir(), "rlm-eval-"))
const encode = Schema.encodeSync(Result.ResultLine)
/** A result without its wall time: what a resumed run must reproduce. */
const comparable = (line: Result.ResultLine) => {
  const { timeMs: _, ...rest } = encode(line)
  return rest
}
const readLines = (dir: string) =>
  readFileSync(join(dir, "results.jsonl"), "utf8")
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => Schema.decodeUnknownSync(Schema.parseJson(Result.ResultLine))(l))

const mean = (xs: ReadonlyArray<number>) => xs.reduce((a, b) => a + b, 0) / xs.length

describe("rlm eval, end to end with the oracle", () => {
  const full = tempDir()
  const outcome = Runner.run(config(full)).pipe(Effect.provide(services), Effect.cached, Effect.runSync)

  it.live(
    "one line per task × method, traces for each, RLM ahead of direct past the window, in summary, table and report",
    () =>
      Effect.gen(function* () {
        const { markdown, results, summary } = yield* outcome
        const lines = readLines(full)
        assert.strictEqual(lines.length, UNITS)
        assert.strictEqual(new Set(lines.map(Result.keyOf)).size, UNITS)
        assert.strictEqual(results.length, UNITS)
        const traces = readdirSync(join(full, "traces"))
        for (const line of lines) assert.include(traces, line.trace.replace("traces/", ""))

        const of = (method: string, past: boolean) =>
          results.filter((r) => r.method === method && (past ? r.size > WINDOW : r.size <= WINDOW))
        // The oracle RLM solves every task, through sub-calls; its ablation solves them with plain code.
        for (const r of of("rlm", true).concat(of("rlm", false))) {
          assert.strictEqual(r.score, 1, r.taskId)
          assert.isAbove(r.subCalls, 0, r.taskId)
        }
        for (const r of results.filter((r) => r.method === "rlm-no-subcalls")) assert.strictEqual(r.subCalls, 0)
        // Within the window direct sees everything and is right; past it, it is behind.
        for (const r of of("direct", false)) assert.strictEqual(r.score, 1, r.taskId)
        const directPast = mean(of("direct", true).map((r) => r.score))
        assert.isBelow(directPast, 1)
        assert.isBelow(directPast, mean(of("rlm", true).map((r) => r.score)))

        // summary.json agrees, row by row.
        const written = Schema.decodeUnknownSync(Schema.parseJson(Result.Summary))(
          readFileSync(join(full, "summary.json"), "utf8")
        )
        assert.deepStrictEqual(written, summary)
        const row = (kind: string, size: number, method: string) =>
          summary.rows.find((r) => r.kind === kind && r.size === size && r.method === method)
        assert.strictEqual(row("sniah", 16_384, "rlm")?.score, 1)
        assert.isBelow(row("sniah", 16_384, "direct")?.score ?? 1, 1)
        assert.include(markdown, "| sniah | 16k | rlm | 2 | 100.0 |")
        assert.include(markdown, "| sniah | 1k | direct | 2 | 100.0 |")

        const html = readFileSync(join(full, "report.html"), "utf8")
        for (const kind of ["sniah", "oolong"]) assert.include(html, `${kind}: score % by context size`)
        assert.include(html, "cost per task (USD)")
        assert.include(html, "time per task")
        assert.include(html, "window 2k")
        // One line per method in each score chart; no script anywhere.
        assert.strictEqual(html.match(/<polyline/g)?.length, 2 * 3)
        assert.notInclude(html, "<script")
        // The report's table: RLM at 100 past the window, direct below it.
        const htmlScore = (kind: string, size: string, method: string) =>
          Number(
            new RegExp(
              `<td class="l">${kind}</td><td>${size}</td><td class="l">${method}</td><td>\\d+</td><td>([\\d.]+)</td>`
            ).exec(html)?.[1]
          )
        assert.strictEqual(htmlScore("sniah", "16k", "rlm"), 100)
        assert.isBelow(htmlScore("sniah", "16k", "direct"), 100)
        assert.strictEqual(htmlScore("sniah", "1k", "direct"), 100)
      }),
    120_000
  )

  it.live(
    "an interrupted eval resumes from results.jsonl (a half-written last line dropped) and equals the uninterrupted one",
    () =>
      Effect.gen(function* () {
        const uninterrupted = yield* outcome
        const dir = tempDir()
        const enough = yield* Deferred.make<void>()
        const first = yield* Runner.run(config(dir), {
          onProgress: (p) => (p.done >= 10 ? Deferred.succeed(enough, undefined) : Effect.void)
        }).pipe(Effect.provide(services), Effect.fork)
        yield* Deferred.await(enough)
        yield* Fiber.interrupt(first)
        const partial = readLines(dir).length
        assert.isAtLeast(partial, 10)
        assert.isBelow(partial, UNITS)
        // A kill in the middle of a write.
        writeFileSync(join(dir, "results.jsonl"), '{"taskId":"sniah-1k-s1-0', { flag: "a" })

        const resumed = yield* Runner.run(config(dir)).pipe(Effect.provide(services))
        assert.strictEqual(resumed.resumed, partial)
        assert.strictEqual(readLines(dir).length, UNITS)
        assert.deepStrictEqual(resumed.results.map(comparable), uninterrupted.results.map(comparable))
        assert.deepStrictEqual(
          resumed.summary.rows.map((r) => [r.kind, r.size, r.method, r.n, r.score, r.meanTokens]),
          uninterrupted.summary.rows.map((r) => [r.kind, r.size, r.method, r.n, r.score, r.meanTokens])
        )

        // Run again: nothing left to do.
        const again = yield* Runner.run(config(dir)).pipe(Effect.provide(services))
        assert.strictEqual(again.resumed, UNITS)
      }),
    120_000
  )

  it.live(
    "a result's trace replays offline to the same answer (rlm and rlm-no-subcalls) and renders in the trace view",
    () =>
      Effect.gen(function* () {
        const { results } = yield* outcome
        for (const method of ["rlm", "rlm-no-subcalls"] as const) {
          const result = results.find((r) => r.method === method && r.kind === "oolong" && r.size === 16_384)
          assert.isDefined(result)
          if (result === undefined) continue
          const trace = yield* Trace.decodeText(readFileSync(join(full, result.trace), "utf8"))
          const input = trace.events.find((e): e is TraceEvent.RunInput => e._tag === "RunInput")
          assert.isDefined(input)
          if (input === undefined) continue
          assert.strictEqual(input.subCalls, method === "rlm" ? undefined : false)
          const replay = yield* Replay.make(trace)
          const replayed = yield* Rlm.run(input.query, input.context, {
            policy: Schema.decodeUnknownSync(Policy.Policy)(input.policy),
            ...(input.systemPrompt !== undefined ? { systemPrompt: input.systemPrompt } : {}),
            ...(input.subCalls === false ? { subCalls: false } : {})
          }).pipe(Effect.provideService(LlmAdapter, replay.adapter), Effect.provide(JavascriptSandbox.layer()))
          yield* replay.check
          yield* Replay.checkAnswer(trace, replayed.answer)
          assert.strictEqual(replayed.answer, result.answer)
          assert.include(TraceView.render(trace), "FINAL_VAR")
        }
        const direct = results.find((r) => r.method === "direct")
        assert.isDefined(direct)
        const directTrace = yield* Trace.decodeText(readFileSync(join(full, direct?.trace ?? ""), "utf8"))
        assert.strictEqual(Option.getOrUndefined(Trace.finalAnswer(directTrace, "run"))?.answer, direct?.answer)
        assert.include(TraceView.render(directTrace), "direct")
      }),
    120_000
  )

  it.live(
    "runs that failed on the provider are results (score 0, failure Model), and run again when the eval resumes",
    () =>
      Effect.gen(function* () {
        const dir = tempDir()
        const down = Layer.succeed(
          LlmAdapter,
          LlmAdapterModule.make({
            model: () => "down",
            chat: () =>
              Effect.fail(new LlmAdapterModule.LlmError({ reason: "ServerError", message: "503 from the server" }))
          })
        )
        const small: Runner.Config = { ...config(dir), kinds: ["sniah"], sizes: [1024], n: 2 }
        const failed = yield* Runner.run(small).pipe(
          Effect.provide(Layer.mergeAll(down, JavascriptSandbox.layer(), NodeContext.layer))
        )
        assert.strictEqual(failed.results.length, 6)
        for (const r of failed.results) {
          assert.strictEqual(r.status, "failed")
          assert.strictEqual(r.failure, "Model")
          assert.strictEqual(r.score, 0)
          assert.include(r.error ?? "", "503")
        }
        const again = yield* Runner.run(small).pipe(Effect.provide(services))
        assert.strictEqual(again.resumed, 0)
        for (const r of again.results) assert.strictEqual(r.score, 1, `${r.taskId} ${r.method}`)
        // Still one line per task × method.
        assert.strictEqual(readLines(dir).length, 6)
      }),
    120_000
  )

  it.live(
    "every kind runs through the harness and its scorer: the oracle RLM solves pairs, multidoc and codeqa through a sub-call",
    () =>
      Effect.gen(function* () {
        const dir = tempDir()
        const all: Runner.Config = {
          ...config(dir),
          kinds: ["sniah", "oolong", "pairs", "multidoc", "codeqa"],
          sizes: [1024, 4096],
          n: 1
        }
        const { results, summary } = yield* Runner.run(all).pipe(Effect.provide(services))
        assert.strictEqual(results.length, 5 * 2 * 3)
        for (const r of results.filter((r) => r.method === "rlm")) assert.strictEqual(r.score, 1, r.taskId)
        for (const r of results.filter((r) => r.method === "direct" && r.size <= WINDOW)) {
          assert.strictEqual(r.score, 1, r.taskId)
        }
        // Without sub-calls the oracle solves only sniah and oolong (with code); it has no code for the others.
        for (const r of results.filter((r) => r.method === "rlm-no-subcalls")) {
          assert.strictEqual(r.score, r.kind === "sniah" || r.kind === "oolong" ? 1 : 0, r.taskId)
        }
        assert.deepStrictEqual(summary.kinds, all.kinds)
        assert.strictEqual(summary.rows.length, 5 * 2 * 3)
      }),
    120_000
  )
})
