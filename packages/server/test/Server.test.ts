import { existsSync, readdirSync, readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import { Effect } from "effect"
import OpenAI from "openai"
import { assertOpenAiError, echoReply, http, parseSse, postJson, startServer, tokenMessages } from "./utils.js"

const client = (url: string, apiKey = "unused") => new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0 })

/** A block that prints and does not answer: a run of these goes on until interrupted or out of steps. */
const tick = "```repl\nconsole.log('tick')\n```"

describe("rlm serve through the official openai SDK", () => {
  it.live("a chat completion: the answer, stop, whole-tree usage, the model echoed", () =>
    Effect.gen(function* () {
      const server = yield* startServer()
      const completion = yield* Effect.promise(() =>
        client(server.url).chat.completions.create({ model: "my-model", messages: tokenMessages(7) })
      )
      assert.strictEqual(completion.object, "chat.completion")
      assert.strictEqual(completion.model, "my-model")
      assert.strictEqual(completion.choices[0]?.message.content, "answer: token-7")
      assert.strictEqual(completion.choices[0]?.finish_reason, "stop")
      const usage = completion.usage
      assert.isDefined(usage)
      assert.isAbove(usage!.prompt_tokens, 0)
      assert.isAbove(usage!.completion_tokens, 0)
      assert.strictEqual(usage!.total_tokens, usage!.prompt_tokens + usage!.completion_tokens)
      // The run behind it is listed, with the same totals.
      const runId = (completion as unknown as { rlm: { run_id: string } }).rlm.run_id
      const run = (yield* http(`${server.url}/v1/runs/${runId}`)).json()
      assert.strictEqual(run.status, "succeeded")
      assert.deepStrictEqual(run.usage, usage)
    }).pipe(Effect.scoped)
  )

  it.live("the usage counts sub-calls too (the whole run tree)", () =>
    Effect.gen(function* () {
      const subReply = "```repl\nanswer = llm_query('summarize ' + context)\n```\nFINAL_VAR(answer)"
      const server = yield* startServer({
        script: [echoReply, subReply],
        rules: [{ match: "summarize", reply: "a fairly long summary of the context, from the sub-model" }]
      })
      const sdk = client(server.url)
      const plain = yield* Effect.promise(() =>
        sdk.chat.completions.create({ model: "rlm", messages: tokenMessages(1) })
      )
      const withSub = yield* Effect.promise(() =>
        sdk.chat.completions.create({ model: "rlm", messages: tokenMessages(1) })
      )
      assert.strictEqual(
        withSub.choices[0]?.message.content,
        "a fairly long summary of the context, from the sub-model"
      )
      const summary = (withSub as unknown as { rlm: { sub_calls: number } }).rlm
      assert.strictEqual(summary.sub_calls, 1)
      // The sub-call's prompt (the whole context) and reply are counted on top of a root call like the first.
      assert.isAbove(withSub.usage!.total_tokens, plain.usage!.total_tokens)
    }).pipe(Effect.scoped)
  )

  it.live("streaming: the steps as reasoning_content, the answer as content, stop, usage, [DONE]", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: [tick, echoReply] })
      const stream = yield* Effect.promise(() =>
        client(server.url).chat.completions.create({
          model: "rlm",
          messages: tokenMessages(3),
          stream: true,
          stream_options: { include_usage: true }
        })
      )
      const chunks = yield* Effect.promise(async () => {
        const all: Array<OpenAI.Chat.Completions.ChatCompletionChunk> = []
        for await (const chunk of stream) all.push(chunk)
        return all
      })
      assert.isTrue(chunks.every((c) => c.object === "chat.completion.chunk" && c.model === "rlm"))
      assert.strictEqual(new Set(chunks.map((c) => c.id)).size, 1)
      const deltas = chunks.flatMap((c) =>
        c.choices.map((choice) => choice.delta as { content?: string; reasoning_content?: string })
      )
      const reasoning = deltas.map((d) => d.reasoning_content ?? "").join("")
      const content = deltas.map((d) => d.content ?? "").join("")
      assert.include(reasoning, "Step 1:")
      assert.include(reasoning, "console.log('tick')")
      assert.include(reasoning, "tick")
      assert.include(reasoning, "Step 2:")
      assert.strictEqual(content, "answer: token-3")
      // Reasoning first, then the answer, then the finish reason.
      const firstContent = deltas.findIndex((d) => (d.content ?? "").length > 0)
      const lastReasoning = deltas.map((d) => (d.reasoning_content ?? "").length > 0).lastIndexOf(true)
      assert.isBelow(lastReasoning, firstContent)
      const finishes = chunks.flatMap((c) => c.choices.map((choice) => choice.finish_reason)).filter((f) => f !== null)
      assert.deepStrictEqual(finishes, ["stop"])
      const usage = chunks.at(-1)?.usage
      assert.isDefined(usage)
      assert.isAbove(usage!.total_tokens, 0)
      assert.deepStrictEqual(chunks.at(-1)?.choices, [])
    }).pipe(Effect.scoped)
  )

  it.live("streaming on the wire ends with data: [DONE]; a failed run streams an OpenAI error before it", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: [echoReply] })
      const ok = yield* postJson(`${server.url}/v1/chat/completions`, { messages: tokenMessages(1), stream: true })
      assert.strictEqual(ok.status, 200)
      assert.strictEqual(ok.headers.get("content-type"), "text/event-stream")
      const events = parseSse(ok.text)
      assert.strictEqual(events.at(-1)?.data, "[DONE]")
      // The script is used up: the next run's model call fails.
      const failed = yield* postJson(`${server.url}/v1/chat/completions`, { messages: tokenMessages(2), stream: true })
      const data = parseSse(failed.text).map((e) => e.data)
      assert.strictEqual(data.at(-1), "[DONE]")
      assert.strictEqual(assertOpenAiError(data.at(-2)!, "model_failed").type, "upstream_error")
    }).pipe(Effect.scoped)
  )

  it.live("GET /v1/models lists the server's model; /healthz; /docs is the OpenAPI document", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ modelId: "rlm-test" })
      const models = yield* Effect.promise(() => client(server.url).models.list())
      assert.deepStrictEqual(
        models.data.map((m) => m.id),
        ["rlm-test"]
      )
      const health = yield* http(`${server.url}/healthz`)
      assert.strictEqual(health.status, 200)
      assert.deepStrictEqual(health.json(), {
        status: "ok",
        runs: { running: 0, queued: 0, max_concurrent: 4, max_queue: 64 }
      })
      for (const path of ["/docs", "/docs/openapi.json"]) {
        const doc = (yield* http(`${server.url}${path}`)).json()
        assert.strictEqual(doc.openapi, "3.1.0")
        for (const endpoint of [
          "/v1/chat/completions",
          "/v1/models",
          "/v1/contexts",
          "/v1/runs",
          "/v1/runs/{id}",
          "/v1/runs/{id}/events",
          "/v1/sessions",
          "/v1/sessions/{id}",
          "/v1/sessions/{id}/ask",
          "/healthz"
        ]) {
          assert.isDefined(doc.paths[endpoint], endpoint)
        }
      }
    }).pipe(Effect.scoped)
  )
})

describe("contexts", () => {
  it.live("upload a large context once (streamed), reuse it by context_id in several requests", () =>
    Effect.gen(function* () {
      const server = yield* startServer()
      const filler = "lorem ipsum dolor sit amet ".repeat((1024 * 1024) / 27)
      const parts = [filler, filler, filler, filler, filler, filler, filler, filler, " the secret is token-42 "]
      const bytes = parts.reduce((n, p) => n + Buffer.byteLength(p), 0)
      // Sent chunk by chunk, without a content-length.
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          const next = parts.shift()
          if (next === undefined) controller.close()
          else controller.enqueue(new TextEncoder().encode(next))
        }
      })
      const upload = yield* http(`${server.url}/v1/contexts`, {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body,
        duplex: "half"
      } as RequestInit)
      assert.strictEqual(upload.status, 201, upload.text)
      const ctx = upload.json()
      assert.match(ctx.id, /^ctx_[0-9a-f]{32}$/)
      assert.strictEqual(ctx.bytes, bytes)
      assert.strictEqual((yield* http(`${server.url}/v1/contexts/${ctx.id}`)).json().bytes, bytes)

      const sdk = client(server.url)
      for (let i = 0; i < 2; i++) {
        const completion = yield* Effect.promise(() =>
          sdk.chat.completions.create({
            model: "rlm",
            messages: [{ role: "user", content: "What is the secret?" }],
            context_id: ctx.id
          } as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming)
        )
        assert.strictEqual(completion.choices[0]?.message.content, "answer: token-42")
        assert.isAbove(completion.usage!.prompt_tokens, 0)
      }
      // The same through /v1/runs.
      const run = (yield* postJson(`${server.url}/v1/runs`, { query: "the secret?", context_id: ctx.id })).json()
      const events = parseSse((yield* http(`${server.url}/v1/runs/${run.id}/events`)).text)
      assert.strictEqual(JSON.parse(events.at(-1)!.data).answer, "answer: token-42")

      const removed = yield* http(`${server.url}/v1/contexts/${ctx.id}`, { method: "DELETE" })
      assert.strictEqual(removed.status, 200)
      const gone = yield* postJson(`${server.url}/v1/chat/completions`, {
        messages: [{ role: "user", content: "q" }],
        context_id: ctx.id
      })
      assert.strictEqual(gone.status, 404)
    }).pipe(Effect.scoped)
  )

  it.live("a context past the limit is refused with 413 and leaves no file", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ maxContextBytes: 100_000 })
      const declared = yield* http(`${server.url}/v1/contexts`, { method: "POST", body: "x".repeat(100_001) })
      assert.strictEqual(declared.status, 413)
      assertOpenAiError(declared.text, "body_too_large")
      const chunks = ["x".repeat(60_000), "y".repeat(60_000)]
      const streamed = yield* http(`${server.url}/v1/contexts`, {
        method: "POST",
        body: new ReadableStream<Uint8Array>({
          pull(controller) {
            const next = chunks.shift()
            if (next === undefined) controller.close()
            else controller.enqueue(new TextEncoder().encode(next))
          }
        }),
        duplex: "half"
      } as RequestInit)
      assert.strictEqual(streamed.status, 413)
      assertOpenAiError(streamed.text, "body_too_large")
      assert.deepStrictEqual(readdirSync(server.store.dir), [])
      // Unharmed: an upload within the limit works.
      const ok = yield* http(`${server.url}/v1/contexts`, { method: "POST", body: "token-5" })
      assert.strictEqual(ok.status, 201)
    }).pipe(Effect.scoped)
  )
})

describe("runs", () => {
  it.live(
    "start returns at once; get shows status, answer and usage; events replay and resume with Last-Event-ID",
    () =>
      Effect.gen(function* () {
        const server = yield* startServer({ script: [tick, tick, echoReply], latencyMs: 100 })
        const started = yield* postJson(`${server.url}/v1/runs`, { query: "the secret?", context: "token-9" })
        assert.strictEqual(started.status, 202)
        const run = started.json()
        assert.match(run.id, /^run_/)
        assert.include(["queued", "running"], run.status)
        assert.isNull(run.answer)

        const all = parseSse((yield* http(`${server.url}/v1/runs/${run.id}/events`)).text)
        const end = all.at(-1)!
        assert.strictEqual(end.event, "end")
        const final = JSON.parse(end.data)
        assert.strictEqual(final.status, "succeeded")
        assert.strictEqual(final.answer, "answer: token-9")
        assert.strictEqual(final.steps, 3)
        const trace = all.slice(0, -1)
        assert.deepStrictEqual(
          trace.map((e) => e.id),
          trace.map((_, i) => String(i + 1))
        )
        assert.strictEqual(trace[0]?.event, "RunStarted")
        assert.strictEqual(trace.filter((e) => e.event === "StepCompleted").length, 3)
        assert.strictEqual(trace.at(-1)?.event, "RunFinished")
        for (const e of trace) assert.strictEqual(JSON.parse(e.data)._tag, e.event)

        const resumed = parseSse(
          (yield* http(`${server.url}/v1/runs/${run.id}/events`, { headers: { "last-event-id": "2" } })).text
        )
        assert.deepStrictEqual(
          resumed.map((e) => [e.id, e.event, e.data]),
          all.slice(2).map((e) => [e.id, e.event, e.data])
        )

        const got = (yield* http(`${server.url}/v1/runs/${run.id}`)).json()
        assert.strictEqual(got.status, "succeeded")
        assert.strictEqual(got.answer, "answer: token-9")
        assert.isAbove(got.usage.total_tokens, 0)
        assert.strictEqual(got.events, trace.length)
        // The trace file holds the same events, after the run's input (what `rlm replay` needs).
        const onDisk = yield* Trace.decodeJsonl(readFileSync(got.trace_file, "utf8"))
        assert.deepStrictEqual(
          onDisk.events.map((e) => e._tag),
          ["RunInput", ...trace.map((e) => e.event)]
        )
        const input = onDisk.events[0]
        assert.deepStrictEqual(input?._tag === "RunInput" ? [input.query, input.context, input.language] : [], [
          "the secret?",
          "token-9",
          "js"
        ])
      }).pipe(Effect.scoped)
  )

  it.live("events followed live, then resumed mid-run, miss and repeat nothing", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: [tick, tick, tick, tick, echoReply], latencyMs: 150 })
      const run = (yield* postJson(`${server.url}/v1/runs`, { query: "q", context: "token-1" })).json()
      // Read the first events live, then drop the connection.
      const firstPart = yield* Effect.promise(async () => {
        const res = await fetch(`${server.url}/v1/runs/${run.id}/events`)
        const reader = res.body!.getReader()
        let text = ""
        while (parseSse(text).filter((e) => e.event === "StepCompleted").length < 1) {
          const { done, value } = await reader.read()
          if (done) break
          text += new TextDecoder().decode(value)
        }
        await reader.cancel()
        return parseSse(text.slice(0, text.lastIndexOf("\n\n") + 2))
      })
      const lastId = firstPart.at(-1)!.id!
      const rest = parseSse(
        (yield* http(`${server.url}/v1/runs/${run.id}/events`, { headers: { "last-event-id": lastId } })).text
      )
      const ids = [...firstPart, ...rest].filter((e) => e.event !== "end").map((e) => Number(e.id))
      assert.deepStrictEqual(
        ids,
        ids.map((_, i) => i + 1)
      )
      assert.strictEqual(JSON.parse(rest.at(-1)!.data).answer, "answer: token-1")
    }).pipe(Effect.scoped)
  )

  it.live("DELETE interrupts the run; its partial trace is kept on disk", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: Array.from({ length: 15 }, () => tick), latencyMs: 200 })
      const run = (yield* postJson(`${server.url}/v1/runs`, { query: "q", context: "c" })).json()
      // Wait for a step to complete.
      yield* Effect.promise(async () => {
        for (;;) {
          const r = await (await fetch(`${server.url}/v1/runs/${run.id}`)).json()
          if (r.events >= 2) return
          await new Promise((resolve) => setTimeout(resolve, 50))
        }
      })
      const deleted = yield* http(`${server.url}/v1/runs/${run.id}`, { method: "DELETE" })
      assert.strictEqual(deleted.status, 200)
      const view = deleted.json()
      assert.strictEqual(view.status, "interrupted")
      assert.strictEqual(view.error.code, "interrupted")
      assert.isTrue(existsSync(view.trace_file))
      const trace = yield* Trace.decodeJsonl(readFileSync(view.trace_file, "utf8"))
      const tags = trace.events.map((e) => e._tag)
      assert.deepStrictEqual(tags.slice(0, 2), ["RunInput", "RunStarted"])
      assert.include(tags, "StepCompleted")
      const finished = trace.events.find((e) => e._tag === "RunFinished")
      assert.strictEqual(finished?._tag === "RunFinished" ? finished.status : undefined, "interrupted")
      // Its event stream ends with the interrupted state.
      const events = parseSse((yield* http(`${server.url}/v1/runs/${run.id}/events`)).text)
      assert.strictEqual(JSON.parse(events.at(-1)!.data).status, "interrupted")
      const unknown = yield* http(`${server.url}/v1/runs/run_nope`, { method: "DELETE" })
      assert.strictEqual(unknown.status, 404)
      assertOpenAiError(unknown.text, "run_not_found")
    }).pipe(Effect.scoped)
  )

  it.live("a chat client that goes away interrupts its run (non-streaming and streaming)", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: Array.from({ length: 40 }, () => tick), latencyMs: 200 })
      for (const stream of [false, true]) {
        const before = new Set(readdirSync(server.registry.tracesDir))
        const abort = new AbortController()
        const request = fetch(`${server.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ messages: tokenMessages(1), stream }),
          signal: abort.signal
        }).then(
          (r) => r.text(),
          () => "aborted"
        )
        const runId = yield* Effect.promise(async () => {
          for (;;) {
            const added = readdirSync(server.registry.tracesDir).filter((f) => !before.has(f))
            if (added.length > 0) {
              const id = added[0]!.replace(/\.jsonl$/, "")
              const r = await (await fetch(`${server.url}/v1/runs/${id}`)).json()
              if (r.events >= 2) return id
            }
            await new Promise((resolve) => setTimeout(resolve, 50))
          }
        })
        abort.abort()
        yield* Effect.promise(() => request.catch(() => "aborted"))
        const status = yield* Effect.promise(async () => {
          for (let i = 0; i < 100; i++) {
            const r = await (await fetch(`${server.url}/v1/runs/${runId}`)).json()
            if (r.status !== "running") return r.status
            await new Promise((resolve) => setTimeout(resolve, 50))
          }
          return "still running"
        })
        assert.strictEqual(status, "interrupted", `stream: ${stream}`)
      }
    }).pipe(Effect.scoped)
  )
})
