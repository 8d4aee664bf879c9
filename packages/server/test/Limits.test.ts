import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as FakeAdapter from "@rlm-runtime/adapters/FakeAdapter"
import * as JavascriptSandbox from "@rlm-runtime/sandbox/JavascriptSandbox"
import * as Server from "@rlm-runtime/server/Server"
import * as Trace from "@rlm-runtime/trace/Trace"
import { ConfigProvider, Context, Effect, Exit, Fiber, Layer, Redacted, Scope } from "effect"
import OpenAI from "openai"
import { assertOpenAiError, http, postJson, startServer, tempDir, tokenMessages } from "./utils.js"

const client = (url: string, apiKey = "unused") => new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0 })
const tick = "```repl\nconsole.log('tick')\n```"

/** A good request still works: the server was not harmed by what came before. */
const stillWorks = (url: string, i: number, headers: Record<string, string> = {}) =>
  Effect.gen(function* () {
    const res = yield* postJson(`${url}/v1/chat/completions`, { messages: tokenMessages(i) }, headers)
    assert.strictEqual(res.status, 200, res.text)
    assert.strictEqual(res.json().choices[0].message.content, `answer: token-${i}`)
  })

describe("bad input: a 4xx with OpenAI's error shape, the server unharmed", () => {
  it.live("malformed JSON, a missing query, bad shapes, an unknown context_id, an oversized body, unknown paths", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ maxBodyBytes: 4096 })
      const url = `${server.url}/v1/chat/completions`
      const raw = (body: string) => http(url, { method: "POST", headers: { "content-type": "application/json" }, body })

      const cases: ReadonlyArray<
        readonly [string, Effect.Effect<{ status: number; text: string }>, number, string, string | null]
      > = [
        ["malformed JSON", raw('{"messages": [{"role": "user", "content": "hi"'), 400, "invalid_json", null],
        ["not JSON at all", raw("hello"), 400, "invalid_json", null],
        ["no messages", postJson(url, { model: "rlm" }), 400, "invalid_request", "messages"],
        ["an empty message list", postJson(url, { messages: [] }), 400, "missing_query", "messages"],
        [
          "the last message is not the user's",
          postJson(url, {
            messages: [
              { role: "user", content: "q" },
              { role: "assistant", content: "a" }
            ]
          }),
          400,
          "missing_query",
          "messages"
        ],
        [
          "an empty query",
          postJson(url, { messages: [{ role: "user", content: "   " }] }),
          400,
          "missing_query",
          "messages"
        ],
        [
          "an unknown role",
          postJson(url, { messages: [{ role: "wizard", content: "q" }] }),
          400,
          "invalid_request",
          "messages.0.role"
        ],
        [
          "an image part",
          postJson(url, {
            messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }]
          }),
          400,
          "unsupported_content",
          "messages[0].content"
        ],
        [
          "an unknown context_id",
          postJson(url, {
            messages: [{ role: "user", content: "q" }],
            context_id: "ctx_00000000000000000000000000000000"
          }),
          404,
          "context_not_found",
          "context_id"
        ],
        [
          "a context_id that is a path",
          postJson(url, { messages: [{ role: "user", content: "q" }], context_id: "../../../etc/passwd" }),
          404,
          "context_not_found",
          "context_id"
        ],
        [
          "an oversized body",
          postJson(url, { messages: [{ role: "user", content: "x".repeat(5000) }] }),
          413,
          "body_too_large",
          null
        ],
        [
          "an oversized body without content-length",
          http(url, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: new ReadableStream<Uint8Array>({
              start(controller) {
                controller.enqueue(
                  new TextEncoder().encode(`{"messages": [{"role": "user", "content": "${"y".repeat(6000)}"}]}`)
                )
                controller.close()
              }
            }),
            duplex: "half"
          } as RequestInit),
          413,
          "body_too_large",
          null
        ],
        [
          "an unknown endpoint",
          http(`${server.url}/v1/embeddings`, { method: "POST", body: "{}" }),
          404,
          "unknown_endpoint",
          null
        ],
        ["an unknown run", http(`${server.url}/v1/runs/run_x`), 404, "run_not_found", "id"],
        [
          "a bad Last-Event-ID",
          Effect.flatMap(postJson(`${server.url}/v1/runs`, { query: "q", context: "token-1" }), (r) =>
            http(`${server.url}/v1/runs/${r.json().id}/events`, { headers: { "last-event-id": "abc" } })
          ),
          400,
          "bad_last_event_id",
          "Last-Event-ID"
        ],
        [
          "a run with both context and context_id",
          postJson(`${server.url}/v1/runs`, { query: "q", context: "a", context_id: "ctx_x" }),
          400,
          "conflicting_context",
          "context_id"
        ]
      ]
      let i = 0
      for (const [name, request, status, code, param] of cases) {
        const res = yield* request
        assert.strictEqual(res.status, status, `${name}: ${res.text}`)
        const e = assertOpenAiError(res.text, code)
        assert.strictEqual(e.param, param, name)
        assert.strictEqual(e.type, status === 404 ? "not_found_error" : "invalid_request_error", name)
        yield* stillWorks(server.url, i++)
      }
    }).pipe(Effect.scoped)
  )

  it.live("the SDK sees these as its typed errors (status, code, message)", () =>
    Effect.gen(function* () {
      const server = yield* startServer()
      const error = yield* Effect.promise(() =>
        client(server.url)
          .chat.completions.create({ model: "rlm", messages: [{ role: "assistant", content: "hi" }] })
          .then(
            () => undefined,
            (e: unknown) => e
          )
      )
      assert.instanceOf(error, OpenAI.BadRequestError)
      const e = error as InstanceType<typeof OpenAI.BadRequestError>
      assert.strictEqual(e.status, 400)
      assert.strictEqual(e.code, "missing_query")
      assert.include(e.message, "the last message must be the user's query")
    }).pipe(Effect.scoped)
  )

  it.live("a run that fails: 502 when the model fails, 422 on a budget limit", () =>
    Effect.gen(function* () {
      // An empty script: the root model call fails.
      const noModel = yield* startServer({ script: [] })
      const failed = yield* postJson(`${noModel.url}/v1/chat/completions`, { messages: tokenMessages(1) })
      assert.strictEqual(failed.status, 502)
      assert.strictEqual(assertOpenAiError(failed.text, "model_failed").type, "upstream_error")

      const tight = yield* startServer({ runOptions: { policy: { maxTotalTokens: 10 } } })
      const budget = yield* postJson(`${tight.url}/v1/chat/completions`, { messages: tokenMessages(1) })
      assert.strictEqual(budget.status, 422)
      const e = assertOpenAiError(budget.text, "maxTotalTokens")
      assert.strictEqual(e.type, "budget_exceeded_error")
    }).pipe(Effect.scoped)
  )
})

describe("limits", () => {
  it.live("past the concurrency bound requests queue; past the queue, 429 with Retry-After", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ maxConcurrentRuns: 1, maxQueue: 1, latencyMs: 1500 })
      const fibers = yield* Effect.forEach([1, 2, 3], (i) =>
        Effect.fork(postJson(`${server.url}/v1/chat/completions`, { messages: tokenMessages(i) }))
      )
      const results = yield* Effect.forEach(fibers, Fiber.join)
      const refused = results.filter((r) => r.status === 429)
      const answered = results.filter((r) => r.status === 200)
      assert.strictEqual(refused.length, 1, results.map((r) => r.text).join("\n"))
      assert.strictEqual(answered.length, 2)
      const e = assertOpenAiError(refused[0]!.text, "server_busy")
      assert.strictEqual(e.type, "rate_limit_error")
      const retryAfter = Number(refused[0]!.headers.get("retry-after"))
      assert.isTrue(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After: ${retryAfter}`)
      // The two admitted were answered, each with its own answer.
      assert.sameMembers(
        answered.map((r) => r.json().choices[0].message.content),
        results.flatMap((r, i) => (r.status === 200 ? [`answer: token-${i + 1}`] : []))
      )
      yield* stillWorks(server.url, 9)
    }).pipe(Effect.scoped)
  )

  it.live("with a token: required on every endpoint but /healthz; the right one (SDK apiKey) works", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ token: Redacted.make("s3cret-token") })
      const url = `${server.url}/v1/chat/completions`
      const missing = yield* postJson(url, { messages: tokenMessages(1) })
      assert.strictEqual(missing.status, 401)
      assert.strictEqual(assertOpenAiError(missing.text, "missing_token").type, "authentication_error")
      const wrong = yield* postJson(url, { messages: tokenMessages(1) }, { authorization: "Bearer s3cret-tokem" })
      assert.strictEqual(wrong.status, 401)
      assertOpenAiError(wrong.text, "invalid_token")
      const longer = yield* postJson(
        url,
        { messages: tokenMessages(1) },
        { authorization: "Bearer s3cret-token-and-more" }
      )
      assert.strictEqual(longer.status, 401)
      for (const path of ["/v1/models", "/v1/runs/run_x", "/docs"]) {
        assert.strictEqual((yield* http(`${server.url}${path}`)).status, 401, path)
      }
      assert.strictEqual((yield* http(`${server.url}/healthz`)).status, 200)
      const completion = yield* Effect.promise(() =>
        client(server.url, "s3cret-token").chat.completions.create({ model: "rlm", messages: tokenMessages(4) })
      )
      assert.strictEqual(completion.choices[0]?.message.content, "answer: token-4")
      const sdkError = yield* Effect.promise(() =>
        client(server.url, "nope")
          .models.list()
          .then(
            () => undefined,
            (e: unknown) => e
          )
      )
      assert.instanceOf(sdkError, OpenAI.AuthenticationError)
      yield* stillWorks(server.url, 5, { authorization: "Bearer s3cret-token" })
    }).pipe(Effect.scoped)
  )

  it.live("layerConfig reads RLM_SERVER_TOKEN", () =>
    Effect.gen(function* () {
      const dir = tempDir("cfg")
      const ctx = yield* Layer.build(
        Server.layerConfig({ port: 0, contextsDir: join(dir, "c"), tracesDir: join(dir, "t") }).pipe(
          Layer.provide(Layer.merge(FakeAdapter.layer({ script: [] }), JavascriptSandbox.layer()))
        )
      ).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["RLM_SERVER_TOKEN", "from-config"]]))))
      const server = Context.get(ctx, Server.Server)
      assert.isTrue(server.authenticated)
      assert.strictEqual((yield* http(`${server.url}/v1/models`)).status, 401)
      assert.strictEqual(
        (yield* http(`${server.url}/v1/models`, { headers: { authorization: "Bearer from-config" } })).status,
        200
      )
    }).pipe(Effect.scoped)
  )

  it.live("binding a non-loopback address without a token is refused; with one it serves", () =>
    Effect.gen(function* () {
      const refused = yield* Effect.exit(startServer({ host: "0.0.0.0" }))
      assert.isTrue(Exit.isFailure(refused))
      if (Exit.isFailure(refused)) {
        const e = refused.cause._tag === "Fail" ? refused.cause.error : undefined
        assert.strictEqual(e?.reason, "UnsafeBind")
        assert.include(e?.message, "RLM_SERVER_TOKEN")
      }
      const served = yield* startServer({ host: "0.0.0.0", token: Redacted.make("t") })
      // A port already taken: "Listen".
      const taken = yield* Effect.exit(startServer({ port: served.port, token: Redacted.make("t"), host: "0.0.0.0" }))
      assert.isTrue(Exit.isFailure(taken))
      const listen = Exit.isFailure(taken) && taken.cause._tag === "Fail" ? taken.cause.error : undefined
      assert.strictEqual(listen?.reason, "Listen")
      const health = yield* http(`http://127.0.0.1:${served.port}/healthz`)
      assert.strictEqual(health.status, 200)
    }).pipe(Effect.scoped)
  )
})

describe("load", () => {
  it.live(
    "50 concurrent chat completions (fake model, 200 ms a call): every one answered exactly once, with its own answer",
    () =>
      Effect.gen(function* () {
        const server = yield* startServer({ maxConcurrentRuns: 16, maxQueue: 64, latencyMs: 200 })
        const sdk = client(server.url)
        const n = 50
        const completions = yield* Effect.forEach(
          Array.from({ length: n }, (_, i) => i),
          (i) =>
            Effect.promise(() => sdk.chat.completions.create({ model: "rlm", messages: tokenMessages(i) })).pipe(
              Effect.map((c) => ({ i, c }))
            ),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(completions.length, n)
        for (const { c, i } of completions) assert.strictEqual(c.choices[0]?.message.content, `answer: token-${i}`)
        const runIds = completions.map(({ c }) => (c as unknown as { rlm: { run_id: string } }).rlm.run_id)
        assert.strictEqual(new Set(runIds).size, n)
        // Exactly n runs were made, each answered once: one trace per run, one FinalAnswer in each.
        const traces = readdirSync(server.registry.tracesDir)
        assert.strictEqual(traces.length, n)
        for (const file of traces) {
          const trace = yield* Trace.decodeJsonl(readFileSync(join(server.registry.tracesDir, file), "utf8"))
          assert.strictEqual(trace.events.filter((e) => e._tag === "FinalAnswer").length, 1)
        }
        const stats = yield* server.admission.stats
        assert.deepStrictEqual([stats.running, stats.queued], [0, 0])
      }).pipe(Effect.scoped),
    120_000
  )
})

describe("graceful shutdown", () => {
  it.live("a run in flight finishes within the grace period and its request is answered", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const server = yield* startServer({ latencyMs: 800, shutdownGrace: "20 seconds" }).pipe(Scope.extend(scope))
      const request = yield* Effect.fork(postJson(`${server.url}/v1/chat/completions`, { messages: tokenMessages(6) }))
      yield* Effect.promise(async () => {
        while ((await (await fetch(`${server.url}/healthz`)).json()).runs.running === 0) {
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
      })
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      // While it drains, new runs are refused with 503 and /healthz says so.
      yield* Effect.promise(async () => {
        while ((await (await fetch(`${server.url}/healthz`)).json()).status !== "draining") {
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
      })
      const refused = yield* postJson(`${server.url}/v1/chat/completions`, { messages: tokenMessages(7) })
      assert.strictEqual(refused.status, 503)
      assert.strictEqual(assertOpenAiError(refused.text, "shutting_down").type, "server_error")
      assert.isNotNull(refused.headers.get("retry-after"))
      const res = yield* Fiber.join(request)
      assert.strictEqual(res.status, 200, res.text)
      assert.strictEqual(res.json().choices[0].message.content, "answer: token-6")
      yield* Fiber.join(closing)
    })
  )

  it.live("past the grace period runs are interrupted, their traces written", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const server = yield* startServer({
        script: Array.from({ length: 20 }, () => tick),
        latencyMs: 200,
        shutdownGrace: "300 millis"
      }).pipe(Scope.extend(scope))
      const run = (yield* postJson(`${server.url}/v1/runs`, { query: "q", context: "c" })).json()
      yield* Effect.sleep("500 millis")
      yield* Scope.close(scope, Exit.void)
      const trace = yield* Trace.decodeJsonl(readFileSync(run.trace_file, "utf8"))
      const finished = trace.events.filter((e) => e._tag === "RunFinished")
      assert.strictEqual(finished.length, 1, JSON.stringify(finished))
      assert.strictEqual(
        finished[0]?._tag === "RunFinished" ? finished[0].status : undefined,
        "interrupted",
        JSON.stringify(finished[0])
      )
      // The port is closed.
      const after = yield* Effect.promise(() =>
        fetch(`${server.url}/healthz`).then(
          () => "open",
          () => "closed"
        )
      )
      assert.strictEqual(after, "closed")
    })
  )
})

describe("Python", () => {
  it.live(
    "a Python run behind a warm pool",
    () =>
      Effect.gen(function* () {
        const { layerPool } = yield* Effect.promise(() => import("@rlm-runtime/sandbox/PythonSandbox"))
        const pyEcho =
          "```repl\nimport re\nm = re.search(r'token-[0-9]+', context)\nanswer = 'answer: ' + (m.group(0) if m else 'none')\nprint(answer)\n```\nFINAL_VAR(answer)"
        const dir = tempDir("py")
        const ctx = yield* Layer.build(
          Server.layer({ port: 0, contextsDir: join(dir, "c"), tracesDir: join(dir, "t") }).pipe(
            Layer.provide(Layer.merge(FakeAdapter.layer({ script: [pyEcho, pyEcho] }), layerPool({ size: 1 })))
          )
        )
        const server = ctx.unsafeMap.get(Server.Server.key) as Server.Server.Service
        for (const i of [11, 12]) {
          const completion = yield* Effect.promise(() =>
            client(server.url).chat.completions.create({ model: "rlm", messages: tokenMessages(i) })
          )
          assert.strictEqual(completion.choices[0]?.message.content, `answer: token-${i}`)
        }
      }).pipe(Effect.scoped),
    120_000
  )
})
