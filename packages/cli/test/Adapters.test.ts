import { readFileSync } from "node:fs"
import { createServer, type IncomingHttpHeaders } from "node:http"
import type { AddressInfo } from "node:net"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import { ConfigProvider, Effect } from "effect"
import { runCli, SEED_CONTEXT, tempFiles } from "./utils.js"

interface Seen {
  readonly path: string
  readonly headers: IncomingHttpHeaders
  readonly body: any
}

/** A loopback server answering every request with `reply(request, seenSoFar)`. */
const server = (reply: (seen: ReadonlyArray<Seen>) => { readonly status: number; readonly body: unknown }) =>
  Effect.acquireRelease(
    Effect.async<{ readonly url: string; readonly seen: Array<Seen>; readonly close: () => void }>((resume) => {
      const seen: Array<Seen> = []
      const s = createServer((req, res) => {
        let raw = ""
        req.setEncoding("utf8").on("data", (d: string) => (raw += d))
        req.on("end", () => {
          seen.push({ path: req.url ?? "", headers: req.headers, body: JSON.parse(raw) })
          const { body, status } = reply(seen)
          res.statusCode = status
          res.setHeader("content-type", "application/json")
          res.end(JSON.stringify(body))
        })
      })
      s.listen(0, "127.0.0.1", () =>
        resume(
          Effect.succeed({
            url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`,
            seen,
            close: () => s.close()
          })
        )
      )
    }),
    (s) => Effect.sync(s.close)
  )

const ollama = (seen: ReadonlyArray<Seen>) => {
  const last = seen.at(-1) as Seen
  const rootCalls = seen.filter((s) => s.body.model === "root-model").length
  const content =
    last.body.model === "small-model"
      ? "fake summary"
      : rootCalls === 1
        ? "```repl\nconst answer = llm_query('Summarize: ' + peek(80))\n```"
        : "FINAL_VAR(answer)"
  return {
    status: 200,
    body: { model: last.body.model, message: { role: "assistant", content }, done: true, eval_count: 3 }
  }
}

const files = tempFiles({ "ctx.txt": SEED_CONTEXT })

const args = (url: string) => [
  "run",
  "--context",
  files.path("ctx.txt"),
  "--query",
  "Summarize the context.",
  "--sandbox",
  "js",
  "--adapter",
  "generic",
  "--generic-preset",
  "ollama",
  "--base-url",
  url,
  "--model",
  "root-model",
  "--sub-model",
  "small-model"
]

const env = (vars: Record<string, string>) =>
  Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(vars))))

describe("rlm run with a real adapter (in-process, loopback HTTP)", () => {
  it.live("--adapter generic --generic-preset ollama: root and sub models by role, the key from the environment", () =>
    Effect.gen(function* () {
      const s = yield* server(ollama)
      const r = yield* runCli(args(s.url)).pipe(env({ LLM_API_KEY: "key-from-env" }))
      assert.strictEqual(r.code, 0, r.stderr)
      assert.strictEqual(r.stdout, "fake summary\n")
      assert.deepStrictEqual(
        s.seen.map((x) => [x.path, x.body.model, x.body.stream]),
        [
          ["/api/chat", "root-model", false],
          ["/api/chat", "small-model", false],
          ["/api/chat", "root-model", false]
        ]
      )
      for (const x of s.seen) assert.strictEqual(x.headers.authorization, "Bearer key-from-env")
      assert.match(r.stderr, /^rlm: run started: model root-model, javascript sandbox/m)
    }).pipe(Effect.scoped)
  )

  it.live("without a key in the environment no Authorization header is sent", () =>
    Effect.gen(function* () {
      const s = yield* server(ollama)
      const r = yield* runCli(args(s.url)).pipe(env({}))
      assert.strictEqual(r.code, 0, r.stderr)
      for (const x of s.seen) assert.isUndefined(x.headers.authorization)
    }).pipe(Effect.scoped)
  )

  it.live("a provider error (401) ends the run with exit 1 and the adapter's advice, including the server's text", () =>
    Effect.gen(function* () {
      const s = yield* server(() => ({ status: 401, body: { error: "invalid key xyz" } }))
      const r = yield* runCli(args(s.url)).pipe(env({ LLM_API_KEY: "sekret-123" }))
      assert.strictEqual(r.code, 1)
      assert.strictEqual(r.stdout, "")
      assert.strictEqual(s.seen.length, 1, "401 is never retried")
      const error = r.stderr.split("\n").find((line) => line.startsWith("rlm: ") && line.includes("401"))
      assert.isDefined(error, r.stderr)
      assert.include(error, "invalid key xyz")
      assert.notInclude(r.stderr, "sekret-123", "the key is never printed")
    }).pipe(Effect.scoped)
  )

  it.live("--protocol tools over openai-compat: the tools are sent, run_code runs, final_answer answers", () =>
    Effect.gen(function* () {
      // A chat-completions server that answers with tool_calls, as llama-server / vLLM / OpenAI do.
      const toolCall = (id: string, name: string, args: unknown) => ({
        id,
        type: "function",
        function: { name, arguments: typeof args === "string" ? args : JSON.stringify(args) }
      })
      const replies = [
        [toolCall("call_a", "run_code", "{code: broken")],
        [toolCall("call_b", "run_code", { code: "const n = P.length; console.log(n)" })],
        [toolCall("call_c", "final_answer", { variable: "n" })]
      ]
      const s = yield* server((seen) => ({
        status: 200,
        body: {
          model: "tool-model",
          choices: [
            {
              index: 0,
              message: { role: "assistant", content: null, tool_calls: replies[seen.length - 1] },
              finish_reason: "tool_calls"
            }
          ],
          usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 }
        }
      }))
      const r = yield* runCli([
        "run",
        "--context",
        files.path("ctx.txt"),
        "--query",
        "How long is the context?",
        "--sandbox",
        "js",
        "--protocol",
        "tools",
        "--base-url",
        `${s.url}/v1`,
        "--model",
        "tool-model"
      ]).pipe(env({}))
      assert.strictEqual(r.code, 0, r.stderr)
      assert.strictEqual(r.stdout, `${SEED_CONTEXT.length}\n`)
      assert.strictEqual(s.seen.length, 3)
      for (const x of s.seen) {
        assert.strictEqual(x.path, "/v1/chat/completions")
        assert.deepStrictEqual(
          x.body.tools.map((t: { type: string; function: { name: string } }) => [t.type, t.function.name]),
          [
            ["function", "run_code"],
            ["function", "final_answer"]
          ]
        )
      }
      // The broken call is answered under its id, and the run went on.
      const second = s.seen[1]?.body.messages as ReadonlyArray<Record<string, unknown>>
      assert.deepStrictEqual(second.at(-2), {
        role: "assistant",
        content: null,
        tool_calls: [toolCall("call_a", "run_code", "{code: broken")]
      })
      const result = second.at(-1) as { role: string; tool_call_id: string; content: string }
      assert.strictEqual(result.role, "tool")
      assert.strictEqual(result.tool_call_id, "call_a")
      assert.include(result.content, "not JSON")
      const third = s.seen[2]?.body.messages as ReadonlyArray<Record<string, unknown>>
      assert.deepStrictEqual(third.at(-1), {
        role: "tool",
        tool_call_id: "call_b",
        content: `REPL output:\n${SEED_CONTEXT.length}`
      })
    }).pipe(Effect.scoped)
  )

  it.live(
    "--fake examples/seed.fake.tools.json --protocol tools: the documented example, its tool calls in the trace",
    () =>
      Effect.gen(function* () {
        const example = fileURLToPath(new URL("../../../examples/seed.fake.tools.json", import.meta.url))
        const trace = files.path("tools-trace.json")
        const r = yield* runCli([
          "run",
          "--context",
          files.path("ctx.txt"),
          "--query",
          "Summarize the context.",
          "--fake",
          example,
          "--protocol",
          "tools",
          "--trace",
          trace
        ])
        assert.strictEqual(r.code, 0, r.stderr)
        assert.strictEqual(r.stdout, "fake summary\n")
        const written = JSON.parse(readFileSync(trace, "utf8"))
        assert.strictEqual(written.version, 3)
        assert.deepStrictEqual(
          written.events
            .filter((e: { _tag: string }) => e._tag === "StepCompleted")
            .map((e: { toolCalls: ReadonlyArray<{ name: string }> }) => e.toolCalls.map((c) => c.name)),
          [["run_code"], ["final_answer"]]
        )
      })
  )

  it.live("--protocol accepts only fenced or tools", () =>
    Effect.gen(function* () {
      const r = yield* runCli(["run", "--context", files.path("ctx.txt"), "--query", "Q", "--protocol", "xml"])
      assert.strictEqual(r.code, 2)
      assert.include(r.stderr, "fenced")
    })
  )

  it.live("--adapter generic without --model is a usage error before anything is sent", () =>
    Effect.gen(function* () {
      const r = yield* runCli([
        "run",
        "--context",
        files.path("ctx.txt"),
        "--query",
        "Q",
        "--adapter",
        "generic",
        "--generic-preset",
        "anthropic"
      ])
      assert.strictEqual(r.code, 2)
      assert.match(r.stderr, /^rlm: --adapter generic needs --model NAME/m)
    })
  )

  it.live(
    "--adapter openai-compat without --model (llama-server): no model is sent, a 429 is retried in sight, the trace keeps the server's model and finish reason",
    () =>
      Effect.gen(function* () {
        const gguf = "qwen2.5-0.5b-instruct-q4_k_m.gguf"
        const reply = (content: string) => ({
          status: 200,
          body: {
            model: gguf,
            choices: [{ message: { role: "assistant", content }, finish_reason: "stop" }],
            usage: { prompt_tokens: 11, completion_tokens: 4, total_tokens: 15 }
          }
        })
        const s = yield* server((seen) =>
          seen.length === 1
            ? { status: 429, body: { error: { message: "slots busy", type: "unavailable_error" } } }
            : seen.length === 2
              ? reply("```repl\nconst head = peek(10)\n```")
              : reply("**FINAL(done)**")
        )
        const tracePath = files.path("llama.trace.json")
        const r = yield* runCli([
          "run",
          "--context",
          files.path("ctx.txt"),
          "--query",
          "Q",
          "--sandbox",
          "js",
          "--base-url",
          `${s.url}/v1`,
          "--trace",
          tracePath
        ]).pipe(env({}))
        assert.strictEqual(r.code, 0, r.stderr)
        assert.strictEqual(r.stdout, "done\n")
        assert.strictEqual(s.seen.length, 3)
        for (const x of s.seen) {
          assert.strictEqual(x.path, "/v1/chat/completions")
          assert.isFalse("model" in x.body, "no model field is sent")
        }
        assert.match(
          r.stderr,
          /^rlm: step 1: root model call to server-default failed \(RateLimited 429, attempt 1\): .*rate limiting.* — retrying in \d+ ms$/m
        )
        const trace = yield* Trace.decodeJson(readFileSync(tracePath, "utf8"))
        const steps = trace.events.filter((e) => e._tag === "StepCompleted")
        assert.deepStrictEqual(
          steps.map((e) => [e.model, e.finishReason]),
          [
            [gguf, "stop"],
            [gguf, "stop"]
          ]
        )
        const retried = trace.events.filter((e) => e._tag === "ModelCallRetried")
        assert.deepStrictEqual(
          retried.map((e) => [e.runId, e.step, e.role, e.attempt, e.reason, e.status]),
          [["run", 1, "root", 1, "RateLimited", 429]]
        )
      }).pipe(Effect.scoped)
  )
})
