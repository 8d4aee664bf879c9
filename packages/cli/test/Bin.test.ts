import type { ChildProcessWithoutNullStreams } from "node:child_process"
import { readFileSync } from "node:fs"
import { createServer, type IncomingHttpHeaders } from "node:http"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import { Effect } from "effect"
import { SEED_CONTEXT, seedScript, spawnRlm, tempFiles } from "./utils.js"

/** Run the real executable in a child process (see `spawnRlm`). */
const rlm = (
  args: ReadonlyArray<string>,
  stdin?: string,
  env?: Record<string, string>,
  /** Called with each stderr chunk and the child, e.g. to send it a signal. */
  onStderr?: (text: string, child: ChildProcessWithoutNullStreams) => void
) => spawnRlm(args, { stdin, env, onStderr })

describe("rlm as a real subprocess", () => {
  const files = tempFiles({
    "ctx.txt": SEED_CONTEXT,
    "seed.json": seedScript("python"),
    "seed.js.json": seedScript("js"),
    "slow.json": JSON.stringify({ script: ["FINAL(too late)"], latencyMs: 120_000 })
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
        const started = trace.events.find((e) => e._tag === "RunStarted")
        assert.strictEqual(started?._tag === "RunStarted" ? started.context.totalChars : -1, SEED_CONTEXT.length)
      }),
    120_000
  )

  it.live(
    "--adapter openai-compat: root and sub models by role, key only from the environment, on a loopback server",
    () =>
      Effect.gen(function* () {
        const seen: Array<{ path: string; headers: IncomingHttpHeaders; body: any }> = []
        const server = createServer((req, res) => {
          let raw = ""
          req.setEncoding("utf8").on("data", (d: string) => (raw += d))
          req.on("end", () => {
            const body = JSON.parse(raw)
            seen.push({ path: req.url ?? "", headers: req.headers, body })
            const rootCalls = seen.filter((s) => s.body.model === "root-model").length
            const content =
              body.model === "sub-model"
                ? "fake summary"
                : rootCalls === 1
                  ? "```repl\nconst snippet = peek(80)\nconst answer = llm_query('Summarize: ' + snippet)\n```"
                  : "FINAL_VAR(answer)"
            res.setHeader("content-type", "application/json")
            res.end(
              JSON.stringify({
                model: body.model,
                choices: [{ message: { role: "assistant", content }, finish_reason: "stop" }],
                usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 }
              })
            )
          })
        })
        yield* Effect.acquireRelease(
          Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
          () => Effect.sync(() => server.close())
        )
        const port = (server.address() as AddressInfo).port
        const r = yield* rlm(
          [
            "run",
            "--context",
            files.path("ctx.txt"),
            "--query",
            "Summarize the context.",
            "--sandbox",
            "js",
            "--base-url",
            `http://127.0.0.1:${port}/v1`,
            "--model",
            "root-model",
            "--sub-model",
            "sub-model"
          ],
          undefined,
          { LLM_API_KEY: "test-key-from-env" }
        )
        assert.strictEqual(r.code, 0, r.stderr)
        assert.strictEqual(r.stdout, "fake summary\n")
        assert.deepStrictEqual(
          seen.map((s) => [s.path, s.body.model]),
          [
            ["/v1/chat/completions", "root-model"],
            ["/v1/chat/completions", "sub-model"],
            ["/v1/chat/completions", "root-model"]
          ]
        )
        for (const s of seen) assert.strictEqual(s.headers.authorization, "Bearer test-key-from-env")
        assert.notInclude(r.stderr, "test-key-from-env")
      }).pipe(Effect.scoped),
    120_000
  )

  it.live(
    "Ctrl-C (SIGINT) mid-run: exit 130, and the partial trace is written",
    () =>
      Effect.gen(function* () {
        const tracePath = files.path("interrupted.trace.json")
        let sent = false
        const r = yield* rlm(
          [
            "run",
            "--context",
            files.path("ctx.txt"),
            "--query",
            "Q",
            "--fake",
            files.path("slow.json"),
            "--sandbox",
            "js",
            "--trace",
            tracePath
          ],
          undefined,
          undefined,
          (text, child) => {
            if (!sent && text.includes("run started")) {
              sent = true
              child.kill("SIGINT")
            }
          }
        )
        assert.strictEqual(r.code, 130, r.stderr)
        assert.strictEqual(r.stdout, "")
        assert.match(r.stderr, /^rlm: interrupted$/m)
        const trace = yield* Effect.orDie(Trace.decodeJson(readFileSync(tracePath, "utf8")))
        const finished = trace.events.at(-1)
        assert.strictEqual(finished?._tag === "RunFinished" ? finished.status : undefined, "interrupted")
      }),
    120_000
  )
})
