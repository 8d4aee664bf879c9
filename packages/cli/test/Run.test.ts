import { existsSync, readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import { Effect } from "effect"
import { runCli, SEED_CONTEXT, seedScript, tempFiles } from "./utils.js"

const readTrace = (path: string) => Effect.orDie(Trace.decodeJson(readFileSync(path, "utf8")))

/**
 * The sandboxes the end-to-end runs go through. A Python session pays a
 * Pyodide cold start (seconds), so Python runs the seed example and one
 * budget hit; JavaScript runs every case.
 */
const sandboxes = ["python", "js"] as const

for (const sandbox of sandboxes) {
  describe(`rlm run end to end (in-process, --sandbox ${sandbox})`, () => {
    const files = tempFiles({
      "ctx.txt": SEED_CONTEXT,
      "seed.json": seedScript(sandbox),
      "bad.json": '{"script": ["FINAL(x)"], "rules": [{"match": 1}]}',
      "never.json": JSON.stringify({
        script: [sandbox === "python" ? "x = llm_query('Summarize: more')" : "const x = llm_query('Summarize: more')"],
        rules: [{ match: "Summarize", reply: "fake summary" }]
      }),
      "forced.json": JSON.stringify({ script: ["x = 1", "FINAL(forced answer)"] }),
      "short.json": JSON.stringify({ script: ["x = 1"] }),
      "loop.json": JSON.stringify({ script: ["while (true) {}", "FINAL(after the timeout)"] }),
      "slow.json": JSON.stringify({ script: ["FINAL(too late)"], latencyMs: 60_000 })
    })
    const run = (...args: Array<string>) =>
      runCli([
        "run",
        "--context",
        files.path("ctx.txt"),
        "--query",
        "Summarize the context.",
        "--sandbox",
        sandbox,
        ...args
      ])

    it.live("the seed example prints exactly the answer and writes a trace that decodes", () =>
      Effect.gen(function* () {
        const tracePath = files.path("seed.trace.json")
        const r = yield* run("--fake", files.path("seed.json"), "--trace", tracePath)
        assert.strictEqual(r.code, 0, r.stderr)
        assert.strictEqual(r.stdout, "fake summary\n")
        assert.match(r.stderr, /^rlm: run started: model fake/m)
        assert.match(r.stderr, /^rlm: step 1: 1 block, 1 sub-call/m)
        assert.match(r.stderr, /^rlm: step 2: (0 blocks, 0 sub-calls, .* — )?final answer \(FINAL_VAR, 12 chars\)$/m)
        const trace = yield* readTrace(tracePath)
        const tags = trace.events.map((e) => e._tag)
        assert.deepStrictEqual([...tags].sort(), [
          "FinalAnswer",
          "RunFinished",
          "RunInput",
          "RunStarted",
          "StepCompleted",
          "StepCompleted",
          "SubCall"
        ])
        assert.strictEqual(tags[0], "RunInput")
        assert.strictEqual(tags[1], "RunStarted")
        assert.strictEqual(tags.at(-1), "RunFinished")
        const sub = trace.events.find((e) => e._tag === "SubCall")
        assert.strictEqual(sub?._tag === "SubCall" ? sub.reply : undefined, "fake summary")
        assert.isTrue(sub?._tag === "SubCall" && sub.prompt.startsWith(`Summarize: ${SEED_CONTEXT}`))
        const final = trace.events.find((e) => e._tag === "FinalAnswer")
        assert.strictEqual(final?._tag === "FinalAnswer" ? final.answer : undefined, "fake summary")
      })
    )

    it.live("a bad --fake file: exit 2, one clear line, nothing on stdout, no trace", () =>
      Effect.gen(function* () {
        const tracePath = files.path("bad.trace.json")
        const r = yield* run("--fake", files.path("bad.json"), "--trace", tracePath)
        assert.strictEqual(r.code, 2)
        assert.strictEqual(r.stdout, "")
        const lines = r.stderr.trimEnd().split("\n")
        assert.strictEqual(lines.length, 1, r.stderr)
        assert.match(
          lines[0] as string,
          /^rlm: bad --fake file ".*bad\.json": The fake script does not have the expected shape/
        )
        assert.include(lines[0], '["match"]')
        assert.isFalse(existsSync(tracePath))
      })
    )

    it.live("--max-subcalls 0: exit 3 naming the limit and the flag; the partial trace is written", () =>
      Effect.gen(function* () {
        const tracePath = files.path("subcalls.trace.json")
        const r = yield* run("--fake", files.path("seed.json"), "--max-subcalls", "0", "--trace", tracePath)
        assert.strictEqual(r.code, 3)
        assert.strictEqual(r.stdout, "")
        assert.match(r.stderr, /^rlm: budget exceeded: maxSubCalls \(--max-subcalls\): .*\b0\b.*\b1\b/m)
        const trace = yield* readTrace(tracePath)
        const finished = trace.events.at(-1)
        assert.strictEqual(finished?._tag, "RunFinished")
        assert.strictEqual(finished?._tag === "RunFinished" ? finished.status : undefined, "budget_exceeded")
        assert.isTrue(trace.events.some((e) => e._tag === "SubCall" && e.error !== undefined))
      })
    )

    if (sandbox === "python") return

    it.live("--quiet prints nothing on stderr", () =>
      Effect.gen(function* () {
        const r = yield* run("--fake", files.path("seed.json"), "--quiet")
        assert.strictEqual(r.code, 0)
        assert.strictEqual(r.stdout, "fake summary\n")
        assert.strictEqual(r.stderr, "")
      })
    )

    it.live("--max-tokens too small: exit 3 naming maxTotalTokens", () =>
      Effect.gen(function* () {
        const tracePath = files.path("tokens.trace.json")
        const r = yield* run("--fake", files.path("seed.json"), "--max-tokens", "10", "--trace", tracePath)
        assert.strictEqual(r.code, 3)
        assert.match(r.stderr, /^rlm: budget exceeded: maxTotalTokens \(--max-tokens\): .*\b10\b/m)
        const trace = yield* readTrace(tracePath)
        // The run's input first (what `rlm replay` needs), then the run.
        assert.strictEqual(trace.events[0]?._tag, "RunInput")
        assert.strictEqual(trace.events[1]?._tag, "RunStarted")
      })
    )

    it.live("--max-steps 1 with a script that never answers: the one forced answer is printed", () =>
      Effect.gen(function* () {
        const tracePath = files.path("forced.trace.json")
        const r = yield* run("--fake", files.path("forced.json"), "--max-steps", "1", "--trace", tracePath)
        assert.strictEqual(r.code, 0, r.stderr)
        assert.strictEqual(r.stdout, "forced answer\n")
        const trace = yield* readTrace(tracePath)
        const final = trace.events.find((e) => e._tag === "FinalAnswer")
        assert.strictEqual(final?._tag === "FinalAnswer" ? final.source : undefined, "forced")
      })
    )

    it.live("a model failure (script exhausted): exit 1 with the adapter's advice; trace still written", () =>
      Effect.gen(function* () {
        const tracePath = files.path("exhausted.trace.json")
        const r = yield* run("--fake", files.path("short.json"), "--trace", tracePath)
        assert.strictEqual(r.code, 1)
        assert.strictEqual(r.stdout, "")
        assert.match(
          r.stderr,
          /^rlm: (The root model call failed \(ScriptExhausted\)|the model call failed): .*Add more entries to "script"/m
        )
        const trace = yield* readTrace(tracePath)
        const finished = trace.events.at(-1)
        assert.strictEqual(finished?._tag === "RunFinished" ? finished.status : undefined, "failed")
      })
    )

    it.live("a sub-call with no matching rule is shown to the model, not a crash", () =>
      Effect.gen(function* () {
        const r = yield* run("--fake", files.path("never.json"), "--max-steps", "1")
        // The forced answer request finds the script exhausted: a model failure.
        assert.strictEqual(r.code, 1)
        assert.match(r.stderr, /^rlm: step 1: 1 block, 1 sub-call/m)
      })
    )

    if (sandbox !== "js") return

    it.live("--exec-timeout stops a runaway block; the model sees the error and the run goes on", () =>
      Effect.gen(function* () {
        const tracePath = files.path("loop.trace.json")
        const r = yield* run("--fake", files.path("loop.json"), "--exec-timeout", "0.3", "--trace", tracePath)
        assert.strictEqual(r.code, 0, r.stderr)
        assert.strictEqual(r.stdout, "after the timeout\n")
        assert.match(r.stderr, /^rlm: step 1: 1 block \(1 failed\)/m)
        const trace = yield* readTrace(tracePath)
        const step = trace.events.find((e) => e._tag === "StepCompleted")
        assert.isDefined(step?._tag === "StepCompleted" ? step.blocks[0]?.error : undefined)
      })
    )

    it.live("--timeout ends a slow run with exit 3 naming timeoutMs and --timeout", () =>
      Effect.gen(function* () {
        const tracePath = files.path("slow.trace.json")
        const r = yield* run("--fake", files.path("slow.json"), "--timeout", "0.5", "--trace", tracePath)
        assert.strictEqual(r.code, 3, r.stderr)
        assert.match(r.stderr, /^rlm: budget exceeded: timeoutMs \(--timeout\): .*\b500\b/m)
        const trace = yield* readTrace(tracePath)
        const finished = trace.events.at(-1)
        assert.strictEqual(finished?._tag === "RunFinished" ? finished.status : undefined, "budget_exceeded")
      })
    )

    it.live("a --trace path that cannot be written: the answer is printed, then exit 1 naming the file", () =>
      Effect.gen(function* () {
        // The temporary directory itself: it exists, but is not a writable file.
        const r = yield* run("--fake", files.path("seed.json"), "--trace", files.dir)
        assert.strictEqual(r.code, 1)
        assert.strictEqual(r.stdout, "fake summary\n")
        assert.match(r.stderr, /^rlm: could not write the --trace file ".*"/m)
      })
    )
  })
}
