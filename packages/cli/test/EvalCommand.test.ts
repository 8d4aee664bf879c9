import { execFile, spawn } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import * as EvalCommand from "@rlm-runtime/cli/EvalCommand"
import * as Tasks from "@rlm-runtime/eval/Tasks"
import { Effect } from "effect"
import { runCli, tempFiles } from "./utils.js"

const root = fileURLToPath(new URL("../../..", import.meta.url))
const launcher = fileURLToPath(new URL("../bin/rlm.mjs", import.meta.url))

/** The `rlm` bin as installed: `node packages/cli/bin/rlm.mjs <args>`. */
const rlm = (args: ReadonlyArray<string>) =>
  Effect.async<{ code: number | null; stdout: string; stderr: string }>((resume) => {
    const child = execFile(process.execPath, [launcher, ...args], { cwd: root }, (error, stdout, stderr) =>
      resume(Effect.succeed({ code: error === null ? 0 : (error.code as number | null), stdout, stderr }))
    )
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** `rlm <args>` through the launcher, sent SIGINT once its stderr contains `marker`. */
const rlmInterrupted = (args: ReadonlyArray<string>, marker: string) =>
  Effect.async<{ code: number | null; stderr: string }>((resume) => {
    const child = spawn(process.execPath, [launcher, ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
    let stderr = ""
    let sent = false
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d
      if (!sent && stderr.includes(marker)) {
        sent = true
        child.kill("SIGINT")
      }
    })
    child.on("close", (code) => resume(Effect.succeed({ code, stderr })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const resultsOf = (out: string) =>
  readFileSync(join(out, "results.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => {
      const { timeMs: _, ...rest } = JSON.parse(l) as Record<string, unknown>
      return rest
    })
    .sort((a, b) => `${a.taskId} ${a.method}`.localeCompare(`${b.taskId} ${b.method}`))

/** A fake root model whose script solves any sniah task with plain code (no sub-call), then answers. */
const SNIAH_SCRIPT = JSON.stringify({
  script: [
    "```repl\nconst m = P.match(/special magic number for [a-z]+-[a-z]+ is (\\d+)/)\nvar answer = m ? m[1] : 'none'\nconsole.log(answer)\n```",
    "FINAL_VAR(answer)"
  ]
})

describe("rlm eval", () => {
  it.live(
    "through the built launcher: results, summary, report, traces and the markdown table; a trace replays; a second run resumes everything",
    () =>
      Effect.gen(function* () {
        const files = tempFiles({ "fake.json": SNIAH_SCRIPT })
        const out = files.path("out")
        const args = [
          "eval",
          "--task",
          "sniah",
          "--sizes",
          "1k,4k",
          "--n",
          "2",
          "--seed",
          "3",
          "--methods",
          "rlm,direct,rlm-no-subcalls",
          "--window",
          "512",
          "--concurrency",
          "3",
          "--out",
          out,
          "--fake",
          files.path("fake.json"),
          "--sandbox",
          "js"
        ]
        const r = yield* rlm(args)
        assert.strictEqual(r.code, 0, r.stderr)
        assert.isTrue(r.stdout.startsWith("| task | size | method | n | score % |"), r.stdout)
        // The script solves sniah in the REPL with or without sub-calls; as the direct model it only writes code.
        assert.include(r.stdout, "| sniah | 4k | rlm | 2 | 100.0 | 0 |")
        assert.include(r.stdout, "| sniah | 4k | rlm-no-subcalls | 2 | 100.0 | 0 |")
        assert.include(r.stdout, "| sniah | 4k | direct | 2 | 0.0 | 0 |")
        assert.include(r.stderr, "rlm eval: 12/12 tasks done")
        const lines = readFileSync(join(out, "results.jsonl"), "utf8").trim().split("\n")
        assert.strictEqual(lines.length, 12)
        assert.strictEqual(readdirSync(join(out, "traces")).length, 12)
        assert.include(readFileSync(join(out, "report.html"), "utf8"), "<svg")
        assert.include(readFileSync(join(out, "summary.json"), "utf8"), '"rows"')

        const task = Tasks.generate("sniah", { seed: 3, size: 4096, index: 1 })
        const replay = yield* rlm(["replay", join(out, "traces", `${task.id}.rlm.jsonl`), "--quiet"])
        assert.strictEqual(replay.code, 0, replay.stderr)
        assert.strictEqual(replay.stdout, `${task.truth}\n`)
        const view = yield* rlm([
          "trace",
          "view",
          join(out, "traces", `${task.id}.direct.jsonl`),
          "--out",
          files.path("d.html")
        ])
        assert.strictEqual(view.code, 0, view.stderr)

        const again = yield* rlm(args)
        assert.strictEqual(again.code, 0, again.stderr)
        assert.include(again.stderr, "12 results (12 resumed)")
        assert.strictEqual(readFileSync(join(out, "results.jsonl"), "utf8").trim().split("\n").length, 12)
      }),
    120_000
  )

  it.live(
    "killed mid-way (SIGINT: exit 130), the same command resumes and ends with the results of an uninterrupted eval",
    () =>
      Effect.gen(function* () {
        const files = tempFiles({
          "slow.json": JSON.stringify({ ...JSON.parse(SNIAH_SCRIPT), latencyMs: 250 })
        })
        const args = (out: string) => [
          "eval",
          "--task",
          "sniah",
          "--sizes",
          "1k,2k",
          "--n",
          "3",
          "--methods",
          "rlm,direct",
          "--window",
          "300",
          "--concurrency",
          "2",
          "--out",
          out,
          "--fake",
          files.path("slow.json"),
          "--sandbox",
          "js"
        ]
        const whole = yield* rlm(args(files.path("whole")))
        assert.strictEqual(whole.code, 0, whole.stderr)
        const killed = yield* rlmInterrupted(args(files.path("resumed")), "rlm eval: 4/12 tasks done")
        assert.strictEqual(killed.code, 130, killed.stderr)
        const partial = readFileSync(join(files.path("resumed"), "results.jsonl"), "utf8")
          .trim()
          .split("\n").length
        assert.isAtLeast(partial, 4)
        assert.isBelow(partial, 12)
        const resumed = yield* rlm(args(files.path("resumed")))
        assert.strictEqual(resumed.code, 0, resumed.stderr)
        assert.include(resumed.stderr, `12 results (${partial} resumed)`)
        assert.deepStrictEqual(resultsOf(files.path("resumed")), resultsOf(files.path("whole")))
      }),
    120_000
  )

  it.effect("bad flags exit 2 with a message that says what to fix", () =>
    Effect.gen(function* () {
      const files = tempFiles({ "fake.json": SNIAH_SCRIPT })
      const base = ["eval", "--out", files.path("out"), "--fake", files.path("fake.json"), "--sandbox", "js"]
      for (const [extra, message] of [
        [["--task", "sniah,nope"], "--task must be a comma-separated list of sniah, oolong, pairs, multidoc, codeqa"],
        [["--sizes", "8q"], "--sizes:"],
        [["--methods", "rlm,best"], "--methods must be"],
        [["--window", "lots"], "--window:"],
        [["--n", "0"], "--n must be an integer >= 1"],
        [["--concurrency", "0"], "--concurrency must be an integer >= 1"]
      ] as const) {
        const r = yield* runCli([...base, ...extra])
        assert.strictEqual(r.code, 2, `${extra.join(" ")}: ${r.stderr}`)
        assert.include(r.stderr, message)
      }
      const missing = yield* runCli(["eval", "--task", "sniah"])
      assert.strictEqual(missing.code, 2)
    })
  )

  it.effect(
    "when every run fails on the model provider the eval exits 1 and says so (the table is still printed)",
    () =>
      Effect.gen(function* () {
        const files = tempFiles({ "empty.json": JSON.stringify({ script: [] }) })
        const r = yield* runCli([
          "eval",
          "--task",
          "sniah",
          "--sizes",
          "1k",
          "--n",
          "1",
          "--methods",
          "direct",
          "--out",
          files.path("out"),
          "--fake",
          files.path("empty.json"),
          "--sandbox",
          "js",
          "--quiet"
        ])
        assert.strictEqual(r.code, 1, r.stderr)
        assert.include(r.stderr, "every run failed on the model provider (1 runs")
        assert.include(r.stdout, "| sniah | 1k | direct | 1 | 0.0 | 1 |")
      })
  )

  it("--n is read as @effect/cli's -n only for rlm eval", () => {
    assert.deepStrictEqual(EvalCommand.argv(["eval", "--n", "20", "--n=3"]), ["eval", "-n", "20", "-n=3"])
    assert.deepStrictEqual(EvalCommand.argv(["run", "--n", "20"]), ["run", "--n", "20"])
  })

  it("the progress line: a bar on a terminal, the finished run on a plain line; tasks, score, tokens and cost so far", () => {
    const p = { done: 3, total: 12, resumed: 1, meanScore: 0.5, tokens: 4200, costUsd: 0.0123 }
    const tty = EvalCommand.progressLine(p, true)
    assert.include(tty, "[#####---------------] 3/12 tasks done (1 resumed)")
    assert.include(tty, "score so far 50.0% · 4200 tokens · $0.0123")
    assert.notInclude(EvalCommand.progressLine(p, false), "[#")
  })
})
