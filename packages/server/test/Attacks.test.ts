/**
 * Attacks on `rlm serve`: every byte from a client and every byte of model
 * output treated as hostile. Each test asserts that the wall holds.
 */
import { readdirSync, readFileSync } from "node:fs"
import * as Net from "node:net"
import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import { Effect, Fiber, Redacted } from "effect"
import { assertOpenAiError, echoReply, http, parseSse, postJson, startServer, tokenMessages } from "./utils.js"

const TOKEN = "s3cret-T0ken-value"

/** A good request still works: the server was not harmed by what came before. */
const stillWorks = (url: string, i: number, headers: Record<string, string> = {}) =>
  Effect.gen(function* () {
    const res = yield* postJson(`${url}/v1/chat/completions`, { messages: tokenMessages(i) }, headers)
    assert.strictEqual(res.status, 200, res.text)
    assert.strictEqual(res.json().choices[0].message.content, `answer: token-${i}`)
  })

/** No stack trace, no path outside the given dirs, no token in an error body. */
const assertClean = (text: string, allowedDirs: ReadonlyArray<string> = []) => {
  assert.notInclude(text, TOKEN)
  assert.notMatch(text, /\n\s+at /, "a stack trace")
  assert.notMatch(text, /\.ts:\d+|\.js:\d+/, "a source location")
  let stripped = text
  for (const d of allowedDirs) stripped = stripped.split(d).join("")
  assert.notMatch(stripped, /\/(home|tmp|etc|work|usr|root|var)\//, `a file-system path in ${text}`)
}

/** Send raw bytes on a TCP socket; resolve with what came back when the server closes (or after `waitMs`). */
const rawHttp = (url: string, bytes: string | Buffer, options: { waitMs?: number; end?: boolean } = {}) =>
  Effect.promise(
    () =>
      new Promise<string>((resolve) => {
        const { hostname, port } = new URL(url)
        const socket = Net.connect(Number(port), hostname)
        const got: Array<Buffer> = []
        let done = false
        const finish = () => {
          if (done) return
          done = true
          socket.destroy()
          resolve(Buffer.concat(got).toString("latin1"))
        }
        socket.on("data", (d) => got.push(d))
        socket.on("close", finish)
        socket.on("error", finish)
        socket.on("connect", () => {
          socket.write(bytes)
          if (options.end === true) socket.end()
        })
        setTimeout(finish, options.waitMs ?? 3000)
      })
  )

describe("odd ids: no path traversal, a 404 in OpenAI's shape", () => {
  it.live("context, run and session ids that are paths, NULs, unicode, very long", () =>
    Effect.gen(function* () {
      const server = yield* startServer()
      const ids = [
        "..%2F..%2Fetc%2Fpasswd",
        "..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "ctx_..%2F..%2Fpasswd",
        "ctx_00000000000000000000000000000000%00",
        "%00",
        "%E2%80%AE%F0%9F%92%A9",
        "x".repeat(8000),
        "ctx_" + "0".repeat(32) + ".json",
        "__proto__",
        "constructor",
        "hasOwnProperty"
      ]
      for (const id of ids) {
        for (const [path, code] of [
          ["contexts", "context_not_found"],
          ["runs", "run_not_found"],
          ["sessions", "session_not_found"]
        ] as const) {
          for (const method of ["GET", "DELETE"]) {
            const res = yield* http(`${server.url}/v1/${path}/${id}`, { method })
            assert.strictEqual(res.status, 404, `${method} ${path}/${id.slice(0, 40)}: ${res.text.slice(0, 200)}`)
            // The router takes ids of at most 100 characters: a longer one names no endpoint.
            assertOpenAiError(res.text, id.length > 100 ? "unknown_endpoint" : code)
            // The id is echoed (as JSON) in the message; nothing else names a path.
            assertClean(JSON.parse(res.text).error.message.replace(JSON.stringify(decodeURIComponent(id)), "<id>"))
            assert.notInclude(res.text, "root:")
          }
        }
        const events = yield* http(`${server.url}/v1/runs/${id}/events`)
        assert.strictEqual(events.status, 404)
        assertOpenAiError(events.text, id.length > 100 ? "unknown_endpoint" : "run_not_found")
        const ask = yield* postJson(`${server.url}/v1/sessions/${id}/ask`, { query: "q" })
        assert.strictEqual(ask.status, 404)
        assertOpenAiError(ask.text, id.length > 100 ? "unknown_endpoint" : "session_not_found")
      }
      // A context_id naming another file (the JSON metadata of a real context, a trace, /etc/passwd).
      const up = (yield* http(`${server.url}/v1/contexts`, { method: "POST", body: "token-77" })).json()
      for (const contextId of [
        `${up.id}.json`,
        `${up.id}.txt`,
        `../contexts/${up.id}`,
        `${up.id}/../${up.id}`,
        "/etc/passwd",
        `${up.id}\u0000`,
        up.id.toUpperCase()
      ]) {
        const chat = yield* postJson(`${server.url}/v1/chat/completions`, {
          messages: [{ role: "user", content: "q" }],
          context_id: contextId
        })
        assert.strictEqual(chat.status, 404, chat.text)
        assertOpenAiError(chat.text, "context_not_found")
        const run = yield* postJson(`${server.url}/v1/runs`, { query: "q", context_id: contextId })
        assert.strictEqual(run.status, 404, run.text)
        const session = yield* postJson(`${server.url}/v1/sessions`, { context_id: contextId })
        assert.strictEqual(session.status, 404, session.text)
      }
      // The real one still works, and a DELETE of odd names removed nothing.
      const ok = yield* postJson(`${server.url}/v1/chat/completions`, {
        messages: [{ role: "user", content: "q" }],
        context_id: up.id
      })
      assert.strictEqual(ok.json().choices[0].message.content, "answer: token-77")
      yield* stillWorks(server.url, 1)
    }).pipe(Effect.scoped)
  )
})

describe("odd requests", () => {
  it.live("bad percent-escapes, odd methods, absolute-form targets, huge headers: a 4xx, never a 500 or a crash", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ token: Redacted.make(TOKEN) })
      const auth = `authorization: Bearer ${TOKEN}\r\n`
      for (const target of [
        "/v1/runs/%",
        "/v1/runs/%E0%A4%A",
        "/v1/contexts/%ZZ",
        "/v1/sessions/%C0%AF",
        "/%",
        "/v1/%00"
      ]) {
        const res = yield* rawHttp(server.url, `GET ${target} HTTP/1.1\r\nhost: x\r\n${auth}connection: close\r\n\r\n`)
        assert.match(res, /^HTTP\/1\.1 4\d\d/, `${target}: ${res.slice(0, 300)}`)
        const body = res.slice(res.indexOf("\r\n\r\n") + 4)
        if (body.length > 0) assertOpenAiError(body)
      }
      for (const method of ["PUT", "PATCH", "OPTIONS", "TRACE"]) {
        const res = yield* http(`${server.url}/v1/chat/completions`, {
          method,
          headers: { authorization: `Bearer ${TOKEN}` }
        }).pipe(Effect.catchAllDefect(() => Effect.succeed({ status: 400, text: "" })))
        assert.isTrue(res.status >= 400 && res.status < 500, `${method}: ${res.status}`)
        if (res.text.length > 0) assertOpenAiError(res.text)
      }
      // An absolute-form target does not skip the token.
      const absolute = yield* rawHttp(
        server.url,
        `GET ${server.url}/v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`
      )
      assert.match(absolute, /^HTTP\/1\.1 (401|404)/)
      const huge = yield* rawHttp(
        server.url,
        `GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ${"a".repeat(100_000)}\r\nconnection: close\r\n\r\n`
      )
      assert.match(huge, /^HTTP\/1\.1 431/)
      assert.strictEqual((yield* http(`${server.url}/healthz`)).status, 200)
    }).pipe(Effect.scoped)
  )
})

describe("the token", () => {
  it.live("every route but /healthz needs `Authorization: Bearer <token>`, docs and SSE routes included", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ token: Redacted.make(TOKEN) })
      const run = (yield* postJson(
        `${server.url}/v1/runs`,
        { query: "q", context: "token-3" },
        { authorization: `Bearer ${TOKEN}` }
      )).json()
      assert.match(run.id, /^run_/)
      const routes: ReadonlyArray<readonly [string, string]> = [
        ["GET", "/docs"],
        ["GET", "/docs/openapi.json"],
        ["GET", "/v1/models"],
        ["POST", "/v1/chat/completions"],
        ["POST", "/v1/contexts"],
        ["GET", "/v1/contexts/ctx_00000000000000000000000000000000"],
        ["POST", "/v1/runs"],
        ["GET", `/v1/runs/${run.id}`],
        ["GET", `/v1/runs/${run.id}/events`],
        ["DELETE", `/v1/runs/${run.id}`],
        ["POST", "/v1/sessions"],
        ["GET", "/v1/nope"],
        ["GET", "/healthz/"],
        ["GET", "/HEALTHZ"],
        ["GET", "/healthz;x"],
        ["GET", "/healthz/../v1/models"],
        ["GET", "//healthz"]
      ]
      const badHeaders: ReadonlyArray<Record<string, string>> = [
        {},
        { authorization: TOKEN },
        { authorization: `Basic ${TOKEN}` },
        { authorization: `Bearer${TOKEN}` },
        { authorization: `Bearer ${TOKEN}x` },
        { authorization: `Bearer ${TOKEN.slice(0, -1)}` },
        { authorization: "Bearer " },
        { authorization: "Bearer" },
        { authorization: `bearer ${TOKEN.toLowerCase()}` },
        { authorization: `Bearer ${TOKEN} extra` },
        { "x-api-key": TOKEN },
        { cookie: `token=${TOKEN}` }
      ]
      for (const [method, path] of routes) {
        for (const headers of badHeaders) {
          const init: RequestInit = { method, headers: { "content-type": "application/json", ...headers } }
          if (method === "POST") init.body = JSON.stringify({ query: "q", messages: tokenMessages(1) })
          const res = yield* http(`${server.url}${path}?token=${TOKEN}&api_key=${TOKEN}`, init)
          assert.strictEqual(res.status, 401, `${method} ${path} ${JSON.stringify(headers)}: ${res.text.slice(0, 200)}`)
          const e = assertOpenAiError(res.text)
          assert.strictEqual(e.type, "authentication_error")
          assertClean(res.text)
        }
      }
      // The run was not deleted by any of those.
      const still = yield* http(`${server.url}/v1/runs/${run.id}`, { headers: { authorization: `Bearer ${TOKEN}` } })
      assert.notStrictEqual(still.json().status, "interrupted")
      // /healthz needs none; the good token (with surrounding whitespace too) works everywhere.
      assert.strictEqual((yield* http(`${server.url}/healthz`)).status, 200)
      assert.strictEqual((yield* http(`${server.url}/healthz?x=1`)).status, 200)
      const docs = yield* http(`${server.url}/docs`, { headers: { authorization: `Bearer   ${TOKEN}  ` } })
      assert.strictEqual(docs.status, 200)
      // The scheme is case-insensitive; a tab separates it as well as a space.
      for (const authorization of [`bearer ${TOKEN}`, `BEARER ${TOKEN}`, `Bearer\t${TOKEN}`]) {
        const res = yield* http(`${server.url}/v1/models`, { headers: { authorization } })
        assert.strictEqual(res.status, 200, authorization)
      }
      assert.notInclude(docs.text, TOKEN)
      yield* stillWorks(server.url, 4, { authorization: `Bearer ${TOKEN}` })
    }).pipe(Effect.scoped)
  )

  it.live("the token never appears in an error, even when sent wrongly or echoed in a path", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ token: Redacted.make(TOKEN) })
      const auth = { authorization: `Bearer ${TOKEN}` }
      for (const res of [
        yield* http(`${server.url}/v1/${TOKEN}?${TOKEN}`, { headers: auth }),
        yield* http(`${server.url}/v1/runs/${TOKEN}`, { headers: auth }),
        yield* http(`${server.url}/v1/contexts/${TOKEN}`, { headers: auth }),
        yield* postJson(`${server.url}/v1/runs`, { query: 7 }, auth),
        yield* http(`${server.url}/v1/chat/completions`, { method: "POST", headers: auth, body: "{" })
      ]) {
        assert.isAtLeast(res.status, 400)
        assertOpenAiError(res.text)
        assert.notInclude(res.text.replaceAll(`/v1/${TOKEN}`, "").replaceAll(`\\"${TOKEN}\\"`, ""), TOKEN)
      }
    }).pipe(Effect.scoped)
  )
})

describe("bodies", () => {
  it.live("a content-length that lies, chunked bodies past the limit: 4xx or a closed socket, server unharmed", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ maxBodyBytes: 4096, maxContextBytes: 8192 })
      const body = JSON.stringify({ messages: tokenMessages(2) })
      // Smaller than the body: the rest is a second (garbage) request, never a second run.
      const smaller = yield* rawHttp(
        server.url,
        `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10\r\nconnection: close\r\n\r\n${body}`
      )
      assert.match(smaller, /^HTTP\/1\.1 400/)
      // Larger than the body: the server waits, the client gives up; nothing is run.
      const larger = yield* rawHttp(
        server.url,
        `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 3000\r\n\r\n${body}`,
        { waitMs: 500 }
      )
      assert.strictEqual(larger, "")
      // Declared past the limit: refused before reading.
      const declared = yield* rawHttp(
        server.url,
        `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999999\r\n\r\n`,
        { waitMs: 2000 }
      )
      assert.match(declared, /^HTTP\/1\.1 413/)
      // Garbage and negative content-length.
      for (const cl of ["-1", "abc", "1e3", "0x10"]) {
        const res = yield* rawHttp(
          server.url,
          `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: ${cl}\r\nconnection: close\r\n\r\n{}`,
          { end: true }
        )
        assert.match(res, /^HTTP\/1\.1 4\d\d/, `content-length ${cl}: ${res.slice(0, 100)}`)
      }
      // Chunked, past the limit, with no content-length.
      const chunk = "z".repeat(1000)
      const chunks = Array.from({ length: 10 }, () => `${(1000).toString(16)}\r\n${chunk}\r\n`).join("")
      const chunked = yield* rawHttp(
        server.url,
        `POST /v1/runs HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n${chunks}0\r\n\r\n`
      )
      assert.match(chunked, /^HTTP\/1\.1 413/)
      assert.include(chunked, "body_too_large")
      const chunkedUpload = yield* rawHttp(
        server.url,
        `POST /v1/contexts HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n${chunks}0\r\n\r\n`
      )
      assert.match(chunkedUpload, /^HTTP\/1\.1 413/)
      assert.deepStrictEqual(
        readdirSync(server.store.dir).filter((f) => f.endsWith(".part") || f.endsWith(".txt")),
        []
      )
      // Both content-length and chunked (a smuggling attempt): refused by the parser.
      const both = yield* rawHttp(
        server.url,
        `POST /v1/runs HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n0\r\n\r\n`
      )
      assert.match(both, /^HTTP\/1\.1 400/)
      yield* stillWorks(server.url, 2)
      assert.strictEqual((yield* server.admission.stats).running, 0)
    }).pipe(Effect.scoped)
  )

  it.live("JSON nested 100k deep, a huge number of messages, messages not an array, odd shapes", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ maxBodyBytes: 8 * 1024 * 1024, maxSessions: 5 })
      const url = `${server.url}/v1/chat/completions`
      const raw = (path: string, body: string) =>
        http(`${server.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body })
      const deep = "[".repeat(100_000) + "]".repeat(100_000)
      const deepObj = '{"a":'.repeat(100_000) + "1" + "}".repeat(100_000)
      for (const [path, body] of [
        ["/v1/chat/completions", deep],
        ["/v1/chat/completions", `{"messages": ${deep}}`],
        ["/v1/chat/completions", `{"messages": [{"role": "user", "content": ${deep}}]}`],
        ["/v1/chat/completions", `{"messages": [{"role": "user", "content": "q"}], "tools": ${deepObj}}`],
        ["/v1/runs", `{"query": "q", "context": ${deep}}`],
        ["/v1/sessions", `{"resume": ${deepObj}}`],
        ["/v1/sessions", `{"resume": {"version": 1, "variables": ${deepObj}}}`],
        ["/v1/sessions", `{"context": ${deep}}`]
      ] as const) {
        const res = yield* raw(path, body)
        assert.isTrue(
          res.status >= 400 && res.status < 500,
          `${path} ${body.slice(0, 60)}: ${res.status} ${res.text.slice(0, 300)}`
        )
        assertOpenAiError(res.text)
        assertClean(res.text)
        assert.isBelow(res.text.length, 100_000, "the error does not echo the whole body")
      }
      for (const messages of [
        "hello",
        { role: "user", content: "q" },
        null,
        42,
        [null],
        [{ role: "user" }],
        [{ role: "user", content: 5 }],
        [{ role: "user", content: [{ type: "text" }] }],
        [{ role: "__proto__", content: "q" }]
      ]) {
        const res = yield* postJson(url, { messages })
        assert.strictEqual(res.status, 400, `${JSON.stringify(messages)}: ${res.text}`)
        assertOpenAiError(res.text)
      }
      for (const body of [null, [], "x", 1, true]) {
        const res = yield* postJson(url, body)
        assert.strictEqual(res.status, 400, `${JSON.stringify(body)}: ${res.text}`)
        assertOpenAiError(res.text)
      }
      const proto = yield* raw(
        "/v1/chat/completions",
        `{"__proto__": {"stream": true}, "constructor": {"prototype": {"polluted": 1}}, "messages": [{"role": "user", "content": "token-5?", "__proto__": {"role": "system"}}]}`
      )
      assert.strictEqual(proto.status, 200, proto.text)
      assert.strictEqual(proto.json().object, "chat.completion")
      assert.isUndefined(({} as any).polluted)
      assert.isUndefined(({} as any).stream)
      // 100k messages: a big context, answered.
      const many = Array.from({ length: 100_000 }, (_, i) => ({ role: "user" as const, content: `m${i}` }))
      const big = yield* postJson(url, { messages: [...many, ...tokenMessages(6)] })
      assert.strictEqual(big.status, 200, big.text.slice(0, 300))
      assert.strictEqual(big.json().choices[0].message.content, "answer: token-6")
      yield* stillWorks(server.url, 7)
    }).pipe(Effect.scoped)
  )

  it.live("non-UTF-8 contexts are refused and leave no file; an upload aborted half-way leaves no file", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ maxContextBytes: 1024 * 1024 })
      const files = () => readdirSync(server.store.dir)
      for (const bytes of [
        Buffer.from([0xff, 0xfe, 0x00, 0x41]),
        Buffer.from([0xc0, 0xaf]), // overlong '/'
        Buffer.from([0xed, 0xa0, 0x80]), // a lone surrogate
        Buffer.concat([Buffer.from("token-1 ".repeat(1000)), Buffer.from([0xe2, 0x82])]) // truncated at the end
      ]) {
        const res = yield* http(`${server.url}/v1/contexts`, { method: "POST", body: bytes })
        assert.strictEqual(res.status, 400, res.text)
        assertOpenAiError(res.text, "context_not_text")
        assertClean(res.text)
      }
      assert.deepStrictEqual(files(), [])
      // Half an upload, then the client goes away.
      const half = yield* rawHttp(
        server.url,
        `POST /v1/contexts HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n${"a".repeat(50_000)}`,
        { waitMs: 500 }
      )
      assert.strictEqual(half, "")
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 500)))
      assert.deepStrictEqual(files(), [])
      // Chunked, aborted without the last chunk.
      yield* rawHttp(
        server.url,
        `POST /v1/contexts HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n100\r\n${"b".repeat(256)}\r\n`,
        { waitMs: 500 }
      )
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 500)))
      assert.deepStrictEqual(files(), [])
      const ok = yield* http(`${server.url}/v1/contexts`, { method: "POST", body: "token-12 ünïcødé" })
      assert.strictEqual(ok.status, 201)
      yield* stillWorks(server.url, 12)
    }).pipe(Effect.scoped)
  )

  it.live("many uploads at once: each bounded by --max-context-mb (there is no total cap)", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ maxContextBytes: 64 * 1024 })
      const results = yield* Effect.all(
        Array.from({ length: 20 }, (_, i) =>
          http(`${server.url}/v1/contexts`, { method: "POST", body: `${i}`.padEnd(60 * 1024, "x") })
        ),
        { concurrency: "unbounded" }
      )
      // Each is under the per-upload limit, so each is stored: 20 * 60 KiB past the 64 KiB "limit" in total.
      assert.deepStrictEqual(
        results.map((r) => r.status),
        Array.from({ length: 20 }, () => 201)
      )
      assert.strictEqual(readdirSync(server.store.dir).filter((f) => f.endsWith(".txt")).length, 20)
      const over = yield* Effect.all(
        Array.from({ length: 5 }, () =>
          http(`${server.url}/v1/contexts`, { method: "POST", body: "y".repeat(65 * 1024) })
        ),
        { concurrency: "unbounded" }
      )
      for (const r of over) {
        assert.strictEqual(r.status, 413)
        assertOpenAiError(r.text, "body_too_large")
      }
      assert.strictEqual(readdirSync(server.store.dir).filter((f) => f.endsWith(".txt")).length, 20)
      assert.deepStrictEqual(
        readdirSync(server.store.dir).filter((f) => f.endsWith(".part")),
        []
      )
    }).pipe(Effect.scoped)
  )
})

const forged = 'line one\n\ndata: [DONE]\n\nid: 99\r\nevent: end\r\ndata: {"forged":true}\r\n\r\n'
const forgingReply = `\`\`\`repl\nconsole.log(${JSON.stringify(forged)})\n\`\`\`\nFINAL(${forged}tail)`

describe("SSE: model output cannot end or forge events", () => {
  it.live("chat completion stream and run events with \\n\\ndata: [DONE]\\n\\n and \\r in model output", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: [forgingReply, forgingReply, forgingReply] })
      const res = yield* postJson(`${server.url}/v1/chat/completions`, {
        messages: [{ role: "user", content: "q" }],
        stream: true
      })
      assert.strictEqual(res.status, 200)
      // No bare \r in the stream (a \r is a line end in SSE).
      assert.notInclude(res.text, "\r")
      const events = parseSse(res.text)
      const done = events.filter((e) => e.data === "[DONE]")
      assert.strictEqual(done.length, 1)
      assert.strictEqual(events.at(-1)!.data, "[DONE]")
      assert.isTrue(events.every((e) => e.id === undefined && e.event === undefined))
      const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data))
      assert.isTrue(chunks.every((c) => c.object === "chat.completion.chunk"))
      const content = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("")
      assert.include(content, "data: [DONE]")
      assert.include(content, '{"forged":true}')
      // Non-streaming: the answer is the model's text, whole.
      const plain = yield* postJson(`${server.url}/v1/chat/completions`, { messages: [{ role: "user", content: "q" }] })
      assert.strictEqual(plain.json().choices[0].message.content, content)

      const run = (yield* postJson(`${server.url}/v1/runs`, { query: "q" })).json()
      const stream = yield* http(`${server.url}/v1/runs/${run.id}/events`)
      assert.notInclude(stream.text, "\r")
      const runEvents = parseSse(stream.text)
      const ends = runEvents.filter((e) => e.event === "end")
      assert.strictEqual(ends.length, 1)
      assert.strictEqual(runEvents.at(-1)!.event, "end")
      assert.isTrue(runEvents.every((e) => e.data !== '{"forged":true}' && e.id !== "99"))
      assert.deepStrictEqual(
        runEvents.map((e) => Number(e.id)),
        runEvents.map((_, i) => i + 1)
      )
      for (const e of runEvents.slice(0, -1)) {
        assert.strictEqual(JSON.parse(e.data)._tag, e.event)
      }
    }).pipe(Effect.scoped)
  )

  it.live("Last-Event-ID garbage: 400 bad_last_event_id; huge: only the end", () =>
    Effect.gen(function* () {
      const server = yield* startServer()
      const run = (yield* postJson(`${server.url}/v1/runs`, { query: "q", context: "token-2" })).json()
      yield* http(`${server.url}/v1/runs/${run.id}`)
      for (const bad of ["-1", "abc", "1.5", "NaN", "Infinity", "1e400", "--", "-0.5", "0x10", "1e2", "+3", "3 4"]) {
        const res = yield* http(`${server.url}/v1/runs/${run.id}/events`, { headers: { "last-event-id": bad } })
        assert.strictEqual(res.status, 400, `${bad}: ${res.text}`)
        const e = assertOpenAiError(res.text, "bad_last_event_id")
        assert.strictEqual(e.param, "Last-Event-ID")
      }
      for (const huge of ["999999999", "99999999999999999999999"]) {
        const res = yield* http(`${server.url}/v1/runs/${run.id}/events`, { headers: { "last-event-id": huge } })
        assert.strictEqual(res.status, 200)
        const events = parseSse(res.text)
        assert.deepStrictEqual(
          events.map((e) => e.event),
          ["end"]
        )
      }
    }).pipe(Effect.scoped)
  )

  it.live(
    "many SSE connections to a run, live then finished; clients that never read: the runs finish, their traces are written",
    () =>
      Effect.gen(function* () {
        const server = yield* startServer({
          script: [
            ...Array.from({ length: 4 }, () => "```repl\nconsole.log('x'.repeat(20000))\n```"),
            "FINAL(done)",
            ...Array.from({ length: 5 }, () => echoReply)
          ],
          // Slow enough that the readers below connect while the run still runs.
          latencyMs: 150
        })
        const finished = (yield* postJson(`${server.url}/v1/runs`, { query: "q", context: "token-1" })).json()
        // A stalled reader: the headers are read, the body never.
        const stalled = yield* rawHttp(server.url, `GET /v1/runs/${finished.id}/events HTTP/1.1\r\nhost: x\r\n\r\n`, {
          waitMs: 50
        }).pipe(Effect.fork)
        const sockets: Array<Net.Socket> = []
        yield* Effect.promise(
          () =>
            new Promise<void>((resolve) => {
              const { hostname, port } = new URL(server.url)
              for (let i = 0; i < 20; i++) {
                const s = Net.connect(Number(port), hostname, () => {
                  s.write(`GET /v1/runs/${finished.id}/events HTTP/1.1\r\nhost: x\r\n\r\n`)
                  s.pause()
                  if (sockets.push(s) === 20) resolve()
                })
              }
            })
        )
        // The run ends (budget) though nobody reads its streams, and its trace is on disk.
        const view = yield* Effect.promise(async () => {
          for (;;) {
            const v = await (await fetch(`${server.url}/v1/runs/${finished.id}`)).json()
            if (v.status !== "queued" && v.status !== "running") return v
            await new Promise((r) => setTimeout(r, 50))
          }
        })
        assert.strictEqual(view.status, "succeeded", JSON.stringify(view))
        assert.strictEqual(view.answer, "done")
        const trace = yield* Trace.decodeJsonl(readFileSync(view.trace_file, "utf8"))
        assert.isTrue(trace.events.some((e) => e._tag === "RunFinished"))
        // A chat stream whose client never reads: the run finishes, its trace is written.
        const chatSocket = Net.connect(Number(new URL(server.url).port), "127.0.0.1")
        const chatBody = JSON.stringify({ messages: tokenMessages(8), stream: true })
        chatSocket.write(
          `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(chatBody)}\r\n\r\n${chatBody}`
        )
        chatSocket.pause()
        const chatTrace = yield* Effect.promise(async () => {
          for (;;) {
            for (const f of readdirSync(server.registry.tracesDir)) {
              const text = readFileSync(`${server.registry.tracesDir}/${f}`, "utf8")
              if (text.includes("token-8") && text.includes('"RunFinished"')) return text
            }
            await new Promise((r) => setTimeout(r, 50))
          }
        })
        const chatRun = yield* Trace.decodeJsonl(chatTrace)
        assert.isTrue(chatRun.events.some((e) => e._tag === "FinalAnswer"))
        chatSocket.destroy()
        // 50 readers of the finished run each get the whole stream and its end.
        const all = yield* Effect.all(
          Array.from({ length: 50 }, () => http(`${server.url}/v1/runs/${finished.id}/events`)),
          { concurrency: "unbounded" }
        )
        for (const r of all) assert.strictEqual(parseSse(r.text).at(-1)!.event, "end")
        for (const s of sockets) s.destroy()
        yield* stalled.await
        yield* stillWorks(server.url, 3)
      }).pipe(Effect.scoped)
  )
})

describe("sessions", () => {
  const remember = "```repl\nremembered = String(context).match(/token-[0-9]+/)[0]\n```\nFINAL_VAR(remembered)"

  it.live("forged resume states are 400 invalid_state; an ask on a deleted session is 404", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: Array.from({ length: 20 }, () => remember) })
      const s = (yield* postJson(`${server.url}/v1/sessions`, { context: "token-4" })).json()
      const asked = yield* postJson(`${server.url}/v1/sessions/${s.id}/ask`, { query: "q" })
      assert.strictEqual(asked.status, 200, asked.text)
      const state = (yield* http(`${server.url}/v1/sessions/${s.id}`, { method: "DELETE" })).json().state
      assert.strictEqual(state.version, 1)
      const gone = yield* postJson(`${server.url}/v1/sessions/${s.id}/ask`, { query: "q" })
      assert.strictEqual(gone.status, 404)
      assertOpenAiError(gone.text, "session_not_found")
      const again = yield* http(`${server.url}/v1/sessions/${s.id}`, { method: "DELETE" })
      assert.strictEqual(again.status, 404)
      const forgeries: ReadonlyArray<unknown> = [
        null,
        "state",
        [],
        { ...state, version: 2 },
        { ...state, language: "python" },
        { ...state, protocol: "nonsense" },
        { ...state, turns: "many" },
        { ...state, variables: { __proto__: { x: 1 } } },
        { ...state, variables: JSON.parse('{"__proto__": {"polluted": 1}}') },
        { ...state, variables: { context: "overwrite the context" } }
      ]
      for (const resume of forgeries) {
        const res = yield* postJson(`${server.url}/v1/sessions`, { resume })
        if (res.status === 201) {
          // Accepted: then it must be a legitimate state, and the server still works.
          assert.isUndefined(({} as any).polluted)
          yield* http(`${server.url}/v1/sessions/${res.json().id}`, { method: "DELETE" })
        } else {
          assert.strictEqual(res.status, 400, `${JSON.stringify(resume).slice(0, 100)}: ${res.text}`)
          assertOpenAiError(res.text, "invalid_state")
          assertClean(res.text)
        }
      }
      assert.isUndefined(({} as any).polluted)
      assert.strictEqual(yield* server.sessions.count, 0)
    }).pipe(Effect.scoped)
  )

  it.live("two concurrent asks on one session: distinct turns, distinct trace files", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: Array.from({ length: 20 }, () => remember), latencyMs: 100 })
      const s = (yield* postJson(`${server.url}/v1/sessions`, { context: "token-9" })).json()
      const [a, b] = yield* Effect.all(
        [
          postJson(`${server.url}/v1/sessions/${s.id}/ask`, { query: "first" }),
          postJson(`${server.url}/v1/sessions/${s.id}/ask`, { query: "second" })
        ],
        { concurrency: 2 }
      )
      assert.strictEqual(a.status, 200, a.text)
      assert.strictEqual(b.status, 200, b.text)
      assert.deepStrictEqual([a.json().turn, b.json().turn].sort(), [1, 2])
      assert.notStrictEqual(a.json().trace_file, b.json().trace_file)
      for (const r of [a, b]) {
        const trace = yield* Trace.decodeJsonl(readFileSync(r.json().trace_file, "utf8"))
        assert.strictEqual(trace.events.filter((e) => e._tag === "FinalAnswer").length, 1)
      }
      assert.strictEqual((yield* http(`${server.url}/v1/sessions/${s.id}`)).json().turns, 2)
    }).pipe(Effect.scoped)
  )

  it.live("a DELETE while a turn runs and another waits: the waiting ask is 404, the server unharmed", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: Array.from({ length: 20 }, () => remember), latencyMs: 400 })
      const s = (yield* postJson(`${server.url}/v1/sessions`, { context: "token-5" })).json()
      const running = yield* Effect.fork(postJson(`${server.url}/v1/sessions/${s.id}/ask`, { query: "first" }))
      yield* Effect.sleep("100 millis")
      const waiting = yield* Effect.fork(postJson(`${server.url}/v1/sessions/${s.id}/ask`, { query: "second" }))
      yield* Effect.sleep("100 millis")
      const deleted = yield* http(`${server.url}/v1/sessions/${s.id}`, { method: "DELETE" })
      assert.strictEqual(deleted.status, 200, deleted.text)
      const first = yield* Fiber.join(running)
      if (first.status !== 200) assertOpenAiError(first.text)
      const second = yield* Fiber.join(waiting)
      assert.strictEqual(second.status, 404, second.text)
      assertOpenAiError(second.text, "session_not_found")
      assert.strictEqual(yield* server.sessions.count, 0)
      const stats = yield* server.admission.stats
      assert.strictEqual(stats.running + stats.queued, 0)
      const after = yield* postJson(`${server.url}/v1/chat/completions`, { messages: tokenMessages(5) })
      assert.strictEqual(after.status, 200, after.text)
      assert.strictEqual(after.json().choices[0].message.content, "token-5")
    }).pipe(Effect.scoped)
  )
})
