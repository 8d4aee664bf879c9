import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { SEED_CONTEXT, seedScript, tempFiles } from "./utils.js"

const root = fileURLToPath(new URL("../../..", import.meta.url))
const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))

/** Run the real executable in a child process: `node --import tsx bin.ts <args>`. */
const rlm = (args: ReadonlyArray<string>, stdin?: string) =>
  Effect.async<{ code: number | null; stdout: string; stderr: string }>((resume) => {
    const child = spawn(process.execPath, ["--import", "tsx", "--conditions=@rlm-runtime/source", bin, ...args], {
      cwd: root,
      stdio: ["pipe", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    child.stdin.end(stdin ?? "")
    return Effect.sync(() => child.kill("SIGKILL"))
  })


describe("rlm as a real subprocess", () => {
  const files = tempFiles({
    "ctx.txt": SEED_CONTEXT,
    "seed.json": seedScript("python"),
    "seed.js.json": seedScript("js")
  })

  it.live(
    "the seed example (default Python sandbox): stdout is exactly the answer, exit 0, the trace decodes",
    () =>
      Effect.gen(function* () {
        const tracePath = files.path("trace.json")
        const r = yield* rlm([
          "run",
          "--context",
          files.path("ctx.txt"),
          "--query",
          "Summarize the context.",
          "--fake",
          files.path("seed.json"),
          "--trace",
          tracePath
        ])
        assert.strictEqual(r.code, 0, r.stderr)
        assert.strictEqual(r.stdout, "fake summary\n")
        assert.match(r.stderr, /^rlm: step 1: 1 block, 1 sub-call/m)
        const trace = yield* Effect.orDie(Trace.decodeJson(readFileSync(tracePath, "utf8")))
        assert.strictEqual(trace.events.at(-1)?._tag, "RunFinished")
      }),
    120_000
  )

  it.live(
    "--context - reads stdin; a budget hit exits 3 with one error line and still writes the trace",
    () =>
      Effect.gen(function* () {
        const tracePath = files.path("budget.trace.json")
        const r = yield* rlm(
          [
            "run",
            "--context",
            "-",
            "--query",
            "Summarize the context.",
            "--fake",
            files.path("seed.js.json"),
            "--sandbox",
            "js",
            "--max-subcalls",
            "0",
            "--trace",
            tracePath
          ],
          SEED_CONTEXT
        )
        assert.strictEqual(r.code, 3, r.stderr)
        assert.strictEqual(r.stdout, "")
        const errors = r.stderr.split("\n").filter((line) => line.startsWith("rlm: budget exceeded"))
        assert.strictEqual(errors.length, 1, r.stderr)
        assert.include(errors[0], "--max-subcalls")
        const trace = yield* Effect.orDie(Trace.decodeJson(readFileSync(tracePath, "utf8")))
        const started = trace.events[0]
        assert.strictEqual(started?._tag === "RunStarted" ? started.context.totalChars : -1, SEED_CONTEXT.length)
      }),
    120_000
  )
})
