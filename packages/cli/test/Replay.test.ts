import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import { Effect } from "effect"
import { runCli, SEED_CONTEXT, seedScript, spawnRlm, tempFiles } from "./utils.js"

/**
 * Run the real executable in a child process. `poll` is called every 25 ms
 * until it returns `true` (then the child is killed with SIGKILL) or the
 * child exits.
 */
const rlm = (args: ReadonlyArray<string>, poll?: () => boolean) =>
  spawnRlm(args, {
    poll: poll === undefined ? undefined : (child) => (poll() ? void child.kill("SIGKILL") : undefined)
  })

const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

/** Three steps, each model call taking 1 s: slow enough to kill the run between steps 2 and 3. */
const threeSteps = JSON.stringify({
  script: [repl("var a = llm_query('one')"), repl("var b = llm_query('two')"), "FINAL(three)"],
  rules: [{ match: "", reply: "ok" }],
  latencyMs: 1000
})

const countSteps = (path: string) => {
  if (!existsSync(path)) return 0
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((line) => line.includes('"_tag":"StepCompleted"')).length
}

const decode = (text: string) => Effect.orDie(Trace.decodeText(text))

describe("a trace that survives a crash", () => {
  const files = tempFiles({ "ctx.txt": SEED_CONTEXT, "three.json": threeSteps })
  const runArgs = (trace: string) => [
    "run",
    "--context",
    files.path("ctx.txt"),
    "--query",
    "Count.",
    "--fake",
    files.path("three.json"),
    "--sandbox",
    "js",
    "--trace",
    trace
  ]

  it.live(
    "--trace t.jsonl killed with SIGKILL after two of three steps leaves every event up to then",
    () =>
      Effect.gen(function* () {
        const path = files.path("killed.jsonl")
        const r = yield* rlm(runArgs(path), () => countSteps(path) >= 2)
        assert.strictEqual(r.signal, "SIGKILL", r.stderr)
        const trace = yield* Effect.orDie(Trace.decodeJsonl(readFileSync(path, "utf8")))
        const tags = trace.events.map((e) => e._tag)
        assert.strictEqual(tags[0], "RunInput")
        assert.strictEqual(tags[1], "RunStarted")
        assert.strictEqual(tags.filter((t) => t === "StepCompleted").length, 2)
        assert.strictEqual(tags.filter((t) => t === "SubCall").length, 2)
        assert.notInclude(tags, "RunFinished")
        assert.strictEqual(statSync(path).mode & 0o777, 0o600)
      }),
    60_000
  )

  it.live(
    "--trace t.json: the JSONL beside it holds the events mid-run; the document replaces it atomically at the end",
    () =>
      Effect.gen(function* () {
        const path = files.path("killed.json")
        const partial = `${path}.partial.jsonl`
        let documentSeenMidRun = false
        const r = yield* rlm(runArgs(path), () => {
          if (existsSync(path)) documentSeenMidRun = true
          return countSteps(partial) >= 2
        })
        assert.strictEqual(r.signal, "SIGKILL", r.stderr)
        assert.isFalse(documentSeenMidRun)
        assert.isFalse(existsSync(path))
        const left = yield* Effect.orDie(Trace.decodeJsonl(readFileSync(partial, "utf8")))
        assert.strictEqual(left.events.filter((e) => e._tag === "StepCompleted").length, 2)
        assert.strictEqual(statSync(partial).mode & 0o777, 0o600)

        // Run to the end: the document appears, whole, and the partial file is gone.
        const done = yield* rlm(runArgs(path))
        assert.strictEqual(done.code, 0, done.stderr)
        assert.strictEqual(done.stdout, "three\n")
        assert.isFalse(existsSync(partial))
        assert.strictEqual(statSync(path).mode & 0o777, 0o600)
        const trace = yield* Effect.orDie(Trace.decodeJson(readFileSync(path, "utf8")))
        assert.strictEqual(trace.events.at(-1)?._tag, "RunFinished")
        assert.strictEqual(trace.events.filter((e) => e._tag === "StepCompleted").length, 3)
        // No temporary file is left in the directory either.
        assert.deepStrictEqual(
          readdirSync(files.dir).filter(
            (name) => name.startsWith("killed.json") && !["killed.json", "killed.jsonl"].includes(name)
          ),
          []
        )
      }),
    60_000
  )
})

describe("rlm replay", () => {
  const files = tempFiles({
    "ctx.txt": SEED_CONTEXT,
    "seed.js.json": seedScript("js"),
    "seed.python.json": seedScript("python"),
    "batch.json": JSON.stringify({
      script: [
        repl("var rs = llm_query_batched(['k0 a', 'k1 b', 'k2 c'])", "var kid = rlm_query('task: name it')"),
        "FINAL(kid answer)",
        repl("var last = llm_query('k1 again') + rs.join(',') + kid"),
        "FINAL_VAR(last)"
      ],
      rules: [
        { match: "k0", reply: "zero" },
        { match: "k1", reply: "one" },
        { match: "", reply: "other" }
      ]
    })
  })
  const record = (script: string, trace: string) =>
    rlm([
      "run",
      "--context",
      files.path("ctx.txt"),
      "--query",
      "Summarize the context.",
      "--fake",
      files.path(script),
      "--sandbox",
      "js",
      "--concurrency",
      "3",
      "--trace",
      trace
    ])

  it.live(
    "replays a recorded run offline (JSON and JSONL traces): the same answer, exit 0",
    () =>
      Effect.gen(function* () {
        for (const name of ["batch.trace.json", "batch.trace.jsonl"]) {
          const path = files.path(name)
          const original = yield* record("batch.json", path)
          assert.strictEqual(original.code, 0, original.stderr)
          const replayed = yield* runCli(["replay", path])
          assert.strictEqual(replayed.code, 0, replayed.stderr)
          assert.strictEqual(replayed.stdout, original.stdout)
          assert.strictEqual(replayed.stdout, "onezero,one,otherkid answer\n")
          assert.match(replayed.stderr, /^rlm: replay matches the trace \(\d+ model calls answered from it\)$/m)
        }
      }),
    120_000
  )

  it.live(
    "a reply changed in the trace exits 5 with the tampering message; a changed query exits 5 naming run and step",
    () =>
      Effect.gen(function* () {
        const path = files.path("seed.trace.json")
        const original = yield* record("seed.js.json", path)
        assert.strictEqual(original.code, 0, original.stderr)
        const trace = yield* decode(readFileSync(path, "utf8"))
        const input = trace.events[0]
        assert.strictEqual(input?._tag, "RunInput")
        if (input?._tag === "RunInput") {
          assert.strictEqual(input.query, "Summarize the context.")
          assert.strictEqual(input.context, SEED_CONTEXT)
          assert.strictEqual(input.language, "js")
          assert.deepStrictEqual(input.models, { root: "fake", sub: "fake" })
          assert.strictEqual((input.policy as { concurrency?: number }).concurrency, 3)
        }
        const edit = (name: string, f: (e: TraceEvent.TraceEvent) => TraceEvent.TraceEvent) => {
          writeFileSync(files.path(name), Trace.toJson(Trace.make(trace.events.map(f))))
          return files.path(name)
        }
        const tampered = edit("tampered.json", (e) =>
          e._tag === "SubCall" ? new TraceEvent.SubCall({ ...e, reply: "a \u001b[31mforged\u001b[0m summary" }) : e
        )
        const t = yield* runCli(["replay", tampered])
        assert.strictEqual(t.code, 5, t.stderr)
        assert.strictEqual(t.stdout, "")
        assert.match(
          t.stderr,
          /^rlm: The trace was changed after it was recorded: SubCall\.reply of run "run" at step 1/m
        )

        const requery = edit("requery.json", (e) =>
          e._tag === "RunInput" ? new TraceEvent.RunInput({ ...e, query: "Summarize it differently." }) : e
        )
        const d = yield* runCli(["replay", requery])
        assert.strictEqual(d.code, 5, d.stderr)
        assert.strictEqual(d.stdout, "")
        assert.match(d.stderr, /^rlm: run "run", step 1: the root request differs from the recorded one/m)
        assert.include(d.stderr, "the question differs")
        // Through the terminal sanitizer: no escape sequence reaches stderr.
        assert.notInclude(t.stderr + d.stderr, "\u001b")
      }),
    120_000
  )

  it.live(
    "replays a Python run: in the recorded language by default, and with --sandbox python",
    () =>
      Effect.gen(function* () {
        const path = files.path("seed.python.trace.jsonl")
        const original = yield* rlm([
          "run",
          "--context",
          files.path("ctx.txt"),
          "--query",
          "Summarize the context.",
          "--fake",
          files.path("seed.python.json"),
          "--sandbox",
          "python",
          "--trace",
          path
        ])
        assert.strictEqual(original.code, 0, original.stderr)
        assert.strictEqual(original.stdout, "fake summary\n")
        for (const extra of [[], ["--sandbox", "python"]]) {
          const replayed = yield* runCli(["replay", path, ...extra])
          assert.strictEqual(replayed.code, 0, replayed.stderr)
          assert.strictEqual(replayed.stdout, original.stdout)
          assert.match(replayed.stderr, /^rlm: replay matches the trace/m)
        }
        // The same trace under the other language runs Python code as JavaScript: it cannot match.
        const wrong = yield* runCli(["replay", path, "--sandbox", "js"])
        assert.strictEqual(wrong.code, 5, wrong.stderr)
        assert.strictEqual(wrong.stdout, "")
      }),
    120_000
  )

  it.live("a trace without a RunInput (or not a trace) is an input error, exit 2", () =>
    Effect.gen(function* () {
      const path = files.path("noinput.json")
      writeFileSync(path, Trace.toJson(Trace.empty))
      const r = yield* runCli(["replay", path])
      assert.strictEqual(r.code, 2)
      assert.include(r.stderr, "holds no RunInput event")
      writeFileSync(files.path("garbage.json"), "{ not json")
      const g = yield* runCli(["replay", files.path("garbage.json")])
      assert.strictEqual(g.code, 2)
      assert.include(g.stderr, "could not be decoded")
    })
  )
})

describe("rlm run --cache DIR", () => {
  const script = (reply: string) =>
    JSON.stringify({
      script: [repl("var a = llm_query_batched(['k0', 'k1', 'k0']).join(',')"), "FINAL_VAR(a)"],
      rules: [{ match: "", reply }]
    })
  const files = tempFiles({ "ctx.txt": SEED_CONTEXT, "first.json": script("cached"), "second.json": script("fresh") })
  const run = (fake: string, trace: string) =>
    runCli([
      "run",
      "--context",
      files.path("ctx.txt"),
      "--query",
      "q",
      "--fake",
      files.path(fake),
      "--sandbox",
      "js",
      "--cache",
      files.path("cache"),
      "--trace",
      files.path(trace),
      "--quiet"
    ])

  it.live("a second run with the same prompts gets its sub-call replies from the cache, not the model", () =>
    Effect.gen(function* () {
      const first = yield* run("first.json", "first.trace.json")
      assert.strictEqual(first.code, 0, first.stderr)
      assert.strictEqual(first.stdout, "cached,cached,cached\n")
      // Two distinct prompts: two entries, in a private directory.
      assert.strictEqual(readdirSync(files.path("cache")).length, 2)
      assert.strictEqual(statSync(files.path("cache")).mode & 0o777, 0o700)
      // The second model would reply "fresh": the replies come from the cache.
      const second = yield* run("second.json", "second.trace.json")
      assert.strictEqual(second.code, 0, second.stderr)
      assert.strictEqual(second.stdout, "cached,cached,cached\n")
    })
  )
})
