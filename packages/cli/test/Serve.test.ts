import { spawn } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import { Effect, Option } from "effect"
import { runCli, tempFiles } from "./utils.js"

const launcher = fileURLToPath(new URL("../bin/rlm.mjs", import.meta.url))

const listening = /rlm: serving on (http:\/\/127\.0\.0\.1:(\d+)) \(/

describe("rlm serve (the built launcher, a real process)", () => {
  it.live(
    "--port 0: the listening line names the port; a question is answered; SIGTERM shuts it down cleanly",
    () =>
      Effect.gen(function* () {
        const files = tempFiles({
          "fake.json": JSON.stringify({ script: ["FINAL(served answer)"], latencyMs: 10 })
        })
        const result = yield* Effect.async<{
          code: number | null
          signal: NodeJS.Signals | null
          stderr: string
          answer: unknown
          port: number
        }>((resume) => {
          const child = spawn(
            process.execPath,
            [launcher, "serve", "--port", "0", "--sandbox", "js", "--fake", files.path("fake.json")],
            {
              cwd: files.dir,
              stdio: ["ignore", "pipe", "pipe"],
              env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "" }
            }
          )
          let stderr = ""
          let asked = false
          let answer: unknown
          let port = 0
          child.stderr.setEncoding("utf8").on("data", (d: string) => {
            stderr += d
            const m = stderr.match(listening)
            if (m === null || asked) return
            asked = true
            port = Number(m[2])
            fetch(`${m[1]}/v1/chat/completions`, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ model: "rlm", messages: [{ role: "user", content: "hello?" }] })
            })
              .then((r) => r.json())
              .then(
                (json) => {
                  answer = json
                },
                (e) => {
                  answer = String(e)
                }
              )
              .finally(() => child.kill("SIGTERM"))
          })
          child.on("close", (code, signal) => resume(Effect.succeed({ code, signal, stderr, answer, port })))
          return Effect.sync(() => child.kill("SIGKILL"))
        }).pipe(Effect.timeout("60 seconds"))

        assert.isAbove(result.port, 0, result.stderr)
        const answer = result.answer as { choices: Array<{ message: { content: string } }> }
        assert.strictEqual(answer.choices[0]?.message.content, "served answer", JSON.stringify(result.answer))
        // It exited by itself after its shutdown, with the code of an interrupted rlm (130), not killed by the signal.
        assert.isNull(result.signal)
        assert.strictEqual(result.code, 130, result.stderr)
        assert.include(result.stderr, "rlm: shutting down: finishing the runs in flight")
        assert.include(result.stderr, "rlm: server stopped")
        assert.notInclude(result.stderr, "internal error")
        // The run's trace is in the default --traces-dir.
        const traces = join(files.dir, ".rlm-serve", "traces")
        const written = readdirSync(traces)
        assert.strictEqual(written.length, 1)
        const trace = yield* Trace.decodeJsonl(readFileSync(join(traces, written[0]!), "utf8"))
        assert.strictEqual(Option.getOrUndefined(Trace.finalAnswer(trace, "run"))?.answer, "served answer")
        // It starts with the run's input: `rlm replay` runs it again offline.
        const replayed = yield* runCli(["replay", join(traces, written[0]!)])
        assert.strictEqual(replayed.code, 0, replayed.stderr)
        assert.strictEqual(replayed.stdout, "served answer\n")
      }),
    90_000
  )

  it.live("without RLM_SERVER_TOKEN a non-loopback --host is refused (exit 2)", () =>
    Effect.gen(function* () {
      const files = tempFiles({ "fake.json": JSON.stringify({ script: ["FINAL(x)"] }) })
      const r = yield* Effect.async<{ code: number | null; stderr: string }>((resume) => {
        const child = spawn(
          process.execPath,
          [launcher, "serve", "--host", "0.0.0.0", "--port", "0", "--sandbox", "js", "--fake", files.path("fake.json")],
          { cwd: files.dir, stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "" } }
        )
        let stderr = ""
        child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
        child.on("close", (code) => resume(Effect.succeed({ code, stderr })))
        return Effect.sync(() => child.kill("SIGKILL"))
      })
      assert.strictEqual(r.code, 2, r.stderr)
      assert.include(r.stderr, "refusing to serve on 0.0.0.0 without a token")
    })
  )
})
