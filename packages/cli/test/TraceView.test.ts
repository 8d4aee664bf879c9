import { existsSync, readFileSync, statSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import { Effect } from "effect"
import { runCli, tempFiles } from "./utils.js"

const trace = Trace.make([
  new TraceEvent.RunStarted({
    runId: "run",
    depth: 0,
    query: "What is in the trace?",
    context: { type: "text", totalChars: 3, documentCount: 1, documentLengths: [3], preview: "abc" },
    model: "m",
    language: "python",
    isolation: "process",
    timestamp: 1_700_000_000_000
  }),
  new TraceEvent.StepCompleted({
    runId: "run",
    step: 1,
    reply: "FINAL(abc)",
    blocks: [],
    usage: {},
    model: "m",
    modelMs: 1,
    durationMs: 1
  }),
  new TraceEvent.RunFinished({ runId: "run", status: "answered", steps: 1, subCalls: 0, usage: {}, durationMs: 2 })
])

const dataOf = (html: string) =>
  JSON.parse(html.match(/<script type="application\/json" id="rlm-trace-data">(.*)<\/script>/)?.[1] ?? "null") as {
    roots: ReadonlyArray<string>
  }

describe("rlm trace view", () => {
  const files = tempFiles({
    "trace.json": Trace.toJson(trace),
    "trace.jsonl": Trace.toJsonl(trace),
    "bad.jsonl": `${Trace.toJsonl(trace)}{"_tag": "StepCompleted", "runId": "run"}\n`,
    "cut.json": Trace.toJson(trace).slice(0, 100),
    "v9.json": '{"version": 9, "events": []}'
  })

  it.live("writes a page from a JSON trace and from a JSONL trace, mode 0600", () =>
    Effect.gen(function* () {
      for (const name of ["trace.json", "trace.jsonl"]) {
        const out = files.path(`${name}.html`)
        const r = yield* runCli(["trace", "view", files.path(name), "--out", out])
        assert.strictEqual(r.code, 0, r.stderr)
        assert.strictEqual(r.stdout, "")
        assert.match(r.stderr, /^rlm: trace view written to .* \(1 run, 3 events\)$/m)
        const html = readFileSync(out, "utf8")
        assert.match(html, /^<!doctype html>/)
        assert.deepStrictEqual(dataOf(html).roots, ["run"])
        assert.strictEqual(statSync(out).mode & 0o777, 0o600)
      }
    })
  )

  it.live("--out defaults to trace.html in the working directory", () =>
    Effect.gen(function* () {
      const cwd = process.cwd()
      process.chdir(files.dir)
      const r = yield* runCli(["trace", "view", "trace.json", "--quiet"]).pipe(
        Effect.ensuring(Effect.sync(() => process.chdir(cwd)))
      )
      assert.strictEqual(r.code, 0, r.stderr)
      assert.strictEqual(r.stderr, "")
      assert.isTrue(existsSync(join(files.dir, "trace.html")))
    })
  )

  it.live("a malformed trace: exit 2, one line naming the file, the reason and the line; no page", () =>
    Effect.gen(function* () {
      const cases = [
        ["bad.jsonl", /"[^"]*bad\.jsonl" is not a readable trace \(SchemaMismatch, line 4\)/],
        ["cut.json", /"[^"]*cut\.json" is not a readable trace \(InvalidJson/],
        ["v9.json", /"[^"]*v9\.json" is not a readable trace \(UnsupportedVersion\): .*format version 9/]
      ] as const
      for (const [name, message] of cases) {
        const out = files.path(`${name}.html`)
        const r = yield* runCli(["trace", "view", files.path(name), "--out", out])
        assert.strictEqual(r.code, 2, name)
        assert.strictEqual(r.stdout, "")
        const lines = r.stderr.trim().split("\n")
        assert.strictEqual(lines.length, 1, r.stderr)
        assert.match(lines[0] ?? "", message)
        assert.isFalse(existsSync(out))
      }
    })
  )

  it.live("a missing trace file or --out directory: exit 2 naming it", () =>
    Effect.gen(function* () {
      const missing = yield* runCli(["trace", "view", files.path("nope.json"), "--out", files.path("x.html")])
      assert.strictEqual(missing.code, 2)
      assert.match(missing.stderr, /could not read the trace ".*nope\.json"/)
      const noDir = yield* runCli(["trace", "view", files.path("trace.json"), "--out", files.path("no/such/x.html")])
      assert.strictEqual(noDir.code, 2)
      assert.match(noDir.stderr, /the --out directory ".*no\/such" does not exist/)
    })
  )

  it.live("without a TRACE argument, or without view: a usage error (exit 2)", () =>
    Effect.gen(function* () {
      const r = yield* runCli(["trace", "view"])
      assert.strictEqual(r.code, 2)
      const bare = yield* runCli(["trace"])
      assert.strictEqual(bare.code, 2)
      assert.match(bare.stderr, /rlm trace view --help/)
    })
  )
})
