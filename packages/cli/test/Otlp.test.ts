/**
 * `rlm run --otlp URL` end to end: a loopback HTTP server stands in for an
 * OpenTelemetry collector, receives the OTLP/HTTP JSON the exporter sends,
 * and the tests decode it: span names, parent links, attributes, statuses,
 * after a run that answers, one that fails, and one stopped with Ctrl-C.
 */
import { createServer, type IncomingHttpHeaders, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { runCli, SEED_CONTEXT, seedScript, spawnRlm, tempFiles } from "./utils.js"

interface OtlpValue {
  readonly stringValue?: string
  readonly intValue?: number | string
  readonly doubleValue?: number
  readonly boolValue?: boolean
}
interface OtlpKeyValue {
  readonly key: string
  readonly value: OtlpValue
}
interface OtlpSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly attributes: ReadonlyArray<OtlpKeyValue>
  readonly status: { readonly code: number; readonly message?: string }
}
interface Received {
  readonly path: string
  readonly headers: IncomingHttpHeaders
  readonly service: ReadonlyArray<string>
  readonly spans: ReadonlyArray<OtlpSpan>
}

/** A collector on 127.0.0.1: every POST body decoded as OTLP/HTTP JSON traces. */
const collector = Effect.acquireRelease(
  Effect.async<{ readonly url: string; readonly received: Array<Received>; readonly server: Server }>((resume) => {
    const received: Array<Received> = []
    const server = createServer((req, res) => {
      let raw = ""
      req.setEncoding("utf8").on("data", (d: string) => (raw += d))
      req.on("end", () => {
        const body = JSON.parse(raw) as {
          resourceSpans: ReadonlyArray<{
            resource: { attributes: ReadonlyArray<OtlpKeyValue> }
            scopeSpans: ReadonlyArray<{ spans: ReadonlyArray<OtlpSpan> }>
          }>
        }
        received.push({
          path: req.url ?? "",
          headers: req.headers,
          service: body.resourceSpans.flatMap((r) =>
            r.resource.attributes.filter((a) => a.key === "service.name").map((a) => a.value.stringValue ?? "")
          ),
          spans: body.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans))
        })
        res.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo
      resume(Effect.succeed({ url: `http://127.0.0.1:${port}`, received, server }))
    })
  }),
  ({ server }) =>
    Effect.async<void>((resume) => {
      server.closeAllConnections()
      server.close(() => resume(Effect.void))
    })
)

const value = (v: OtlpValue | undefined): unknown =>
  v === undefined
    ? undefined
    : (v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : undefined) ?? v.doubleValue ?? v.boolValue)

const attr = (span: OtlpSpan, key: string) => value(span.attributes.find((a) => a.key === key)?.value)

const named = (spans: ReadonlyArray<OtlpSpan>, name: string) => spans.filter((s) => s.name === name)

const one = (spans: ReadonlyArray<OtlpSpan>, name: string) => {
  const found = named(spans, name)
  assert.strictEqual(found.length, 1, `expected one ${name}, got ${found.length}`)
  return found[0] as OtlpSpan
}

const parentOf = (spans: ReadonlyArray<OtlpSpan>, span: OtlpSpan) => spans.find((s) => s.spanId === span.parentSpanId)

describe("rlm run --otlp", () => {
  const files = tempFiles({
    "ctx.txt": SEED_CONTEXT,
    "seed.js.json": seedScript("js"),
    "fails.json": JSON.stringify({ script: ["```repl\nconst x = llm_query('Summarize: it')\n```"], rules: [] }),
    // Step 1 runs a block; step 2's block keeps the run busy until it is interrupted.
    "busy.json": JSON.stringify({
      script: [
        "```repl\nvar a = 1\n```",
        "```repl\nvar t = Date.now()\nwhile (Date.now() - t < 60000) {}\n```",
        "FINAL(too late)"
      ]
    })
  })

  it.live(
    "exports the run's spans to the collector before exiting: names, parent links, attributes",
    () =>
      Effect.gen(function* () {
        const c = yield* collector
        const r = yield* runCli([
          "run",
          "--context",
          files.path("ctx.txt"),
          "--query",
          "Summarize the context.",
          "--fake",
          files.path("seed.js.json"),
          "--sandbox",
          "js",
          "--quiet",
          "--otlp",
          // No path: the OTLP/HTTP traces path is added.
          c.url
        ])
        assert.strictEqual(r.code, 0, r.stderr)
        assert.strictEqual(r.stdout, "fake summary\n")
        assert.notInclude(r.stderr, "could not export")
        assert.isAbove(c.received.length, 0)
        for (const batch of c.received) {
          assert.strictEqual(batch.path, "/v1/traces")
          assert.include(String(batch.headers["content-type"]), "application/json")
          assert.deepStrictEqual([...new Set(batch.service)], ["rlm"])
        }
        const spans = c.received.flatMap((b) => b.spans)
        const run = one(spans, "rlm.run")
        assert.isUndefined(run.parentSpanId)
        assert.strictEqual(attr(run, "rlm.status"), "answered")
        assert.strictEqual(attr(run, "rlm.steps"), 2)
        assert.strictEqual(attr(run, "rlm.language"), "javascript")
        const steps = named(spans, "rlm.step")
        assert.strictEqual(steps.length, 2)
        for (const step of steps) assert.strictEqual(parentOf(spans, step)?.spanId, run.spanId)
        const block = one(spans, "rlm.block")
        const blockStep = parentOf(spans, block)
        assert.strictEqual(blockStep?.name, "rlm.step")
        assert.strictEqual(attr(blockStep as OtlpSpan, "rlm.step.number"), 1)
        const sub = one(spans, "rlm.sub_call")
        assert.strictEqual(sub.parentSpanId, block.spanId)
        assert.strictEqual(attr(sub, "rlm.sub_call.kind"), "llm_query")
        const calls = named(spans, "rlm.model_call")
        assert.deepStrictEqual(calls.map((s) => attr(s, "rlm.role")).sort(), ["root", "root", "sub"])
        const subCall = calls.find((s) => attr(s, "rlm.role") === "sub")
        assert.strictEqual(subCall?.parentSpanId, sub.spanId)
        assert.isAbove(Number(attr(subCall as OtlpSpan, "rlm.tokens.input")), 0)
        assert.isTrue(spans.every((s) => s.traceId === run.traceId))
        // The OpenTelemetry status: 1 OK.
        assert.isTrue(spans.every((s) => s.status.code === 1))
      }).pipe(Effect.scoped),
    60_000
  )

  it.live(
    "a failed run still exports its spans, the run's with an error status",
    () =>
      Effect.gen(function* () {
        const c = yield* collector
        const r = yield* runCli([
          "run",
          "--context",
          files.path("ctx.txt"),
          "--query",
          "Q",
          "--fake",
          files.path("fails.json"),
          "--sandbox",
          "js",
          "--quiet",
          "--otlp",
          `${c.url}/custom/traces`
        ])
        assert.strictEqual(r.code, 1, r.stderr)
        const spans = c.received.flatMap((b) => b.spans)
        assert.isTrue(c.received.every((b) => b.path === "/custom/traces"))
        const run = one(spans, "rlm.run")
        assert.strictEqual(attr(run, "rlm.status"), "failed")
        // The OpenTelemetry status: 2 ERROR.
        assert.strictEqual(run.status.code, 2)
        // The sub-call found no rule: it failed, and so did its block (model code did not catch it).
        assert.strictEqual(one(spans, "rlm.sub_call").status.code, 2)
        assert.strictEqual(one(spans, "rlm.block").status.code, 2)
      }).pipe(Effect.scoped),
    60_000
  )

  it.live(
    "a collector that cannot be reached is said once on stderr; the run's answer and exit code are its own",
    () =>
      Effect.gen(function* () {
        // A port that was just free: nothing listens on it.
        const port = yield* Effect.promise(
          () =>
            new Promise<number>((resolve) => {
              const server = createServer()
              server.listen(0, "127.0.0.1", () => {
                const { port } = server.address() as AddressInfo
                server.close(() => resolve(port))
              })
            })
        )
        const r = yield* runCli([
          "run",
          "--context",
          files.path("ctx.txt"),
          "--query",
          "Summarize the context.",
          "--fake",
          files.path("seed.js.json"),
          "--sandbox",
          "js",
          "--quiet",
          "--otlp",
          `http://127.0.0.1:${port}/v1/traces`
        ])
        assert.strictEqual(r.code, 0, r.stderr)
        assert.strictEqual(r.stdout, "fake summary\n")
        const notes = r.stderr.split("\n").filter((line) => line.includes("--otlp: could not export spans"))
        assert.strictEqual(notes.length, 1, r.stderr)
        assert.include(notes[0], `http://127.0.0.1:${port}/v1/traces`)
      }),
    60_000
  )

  it.live(
    "a collector that refuses the spans (HTTP 500) is said on stderr",
    () =>
      Effect.gen(function* () {
        const server = createServer((_req, res) => {
          res.statusCode = 500
          res.end("no")
        })
        const port = yield* Effect.acquireRelease(
          Effect.promise(
            () =>
              new Promise<number>((resolve) =>
                server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port))
              )
          ),
          () => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
        )
        const r = yield* runCli([
          "run",
          "--context",
          files.path("ctx.txt"),
          "--query",
          "Summarize the context.",
          "--fake",
          files.path("seed.js.json"),
          "--sandbox",
          "js",
          "--quiet",
          "--otlp",
          `http://127.0.0.1:${port}`
        ])
        assert.strictEqual(r.code, 0, r.stderr)
        assert.match(r.stderr, /--otlp: could not export spans to \S+ \(HTTP 500\)/)
      }).pipe(Effect.scoped),
    60_000
  )

  it.live("a bad --otlp value is a usage error (exit 2) before anything runs", () =>
    Effect.gen(function* () {
      const r = yield* runCli([
        "run",
        "--context",
        files.path("ctx.txt"),
        "--query",
        "Q",
        "--fake",
        files.path("seed.js.json"),
        "--otlp",
        "grpc://127.0.0.1:4317"
      ])
      assert.strictEqual(r.code, 2)
      assert.match(r.stderr, /^rlm: --otlp must be an http:\/\/ or https:\/\/ URL/m)
    })
  )

  it.live(
    "Ctrl-C (SIGINT) mid-run: exit 130, and the spans so far reach the collector, the run's marked interrupted",
    () =>
      Effect.gen(function* () {
        const c = yield* collector
        const args = [
          "run",
          "--context",
          files.path("ctx.txt"),
          "--query",
          "Q",
          "--fake",
          files.path("busy.json"),
          "--sandbox",
          "js",
          "--exec-timeout",
          "90",
          "--otlp",
          `${c.url}/v1/traces`
        ]
        let sent = false
        const { code } = yield* spawnRlm(args, {
          // Step 1 is recorded: its spans have started (and end, if not before, when the run is interrupted).
          onStderr: (stderr, child) => {
            if (!sent && /^rlm: step 1:/m.test(stderr)) {
              sent = true
              child.kill("SIGINT")
            }
          }
        })
        assert.strictEqual(code, 130)
        const spans = c.received.flatMap((b) => b.spans)
        const run = one(spans, "rlm.run")
        assert.strictEqual(attr(run, "rlm.status"), "interrupted")
        const first = named(spans, "rlm.step").find((s) => attr(s, "rlm.step.number") === 1)
        assert.strictEqual(first?.parentSpanId, run.spanId)
        const children = spans.filter((s) => s.parentSpanId === first?.spanId).map((s) => s.name)
        assert.deepStrictEqual(children.sort(), ["rlm.block", "rlm.model_call"])
      }).pipe(Effect.scoped),
    120_000
  )
})
