import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import { Effect, Either, Option, Schema } from "effect"

/**
 * JSON cannot tell an absent optional field from one set to `undefined`, nor
 * `-0` from `0`; the round-trip law holds up to exactly that. (Schema
 * arbitraries do generate both.)
 */
const jsonView = (value: unknown): unknown => {
  if (typeof value === "number") return Object.is(value, -0) ? 0 : value
  if (Array.isArray(value)) return value.map(jsonView)
  if (typeof value === "object" && value !== null) {
    const out: Record<string, unknown> = {}
    for (const [key, field] of Object.entries(value)) if (field !== undefined) out[key] = jsonView(field)
    return out
  }
  return value
}

const sameTrace = (a: Trace.Trace, b: Trace.Trace): boolean => {
  assert.instanceOf(a, Trace.Trace)
  for (const event of a.events) assert.isTrue(TraceEvent.isTraceEvent(event), "decoded events are class instances")
  assert.deepStrictEqual(jsonView(a), jsonView(b))
  return true
}

const sameEvent = (a: TraceEvent.TraceEvent, b: TraceEvent.TraceEvent): boolean => {
  assert.isTrue(TraceEvent.isTraceEvent(a))
  assert.strictEqual(Object.getPrototypeOf(a), Object.getPrototypeOf(b), "same event class")
  assert.deepStrictEqual(jsonView(a), jsonView(b))
  return true
}

const usage = (inputTokens?: number, outputTokens?: number) => ({
  ...(inputTokens === undefined ? {} : { inputTokens }),
  ...(outputTokens === undefined ? {} : { outputTokens })
})

const context = {
  type: "text" as const,
  totalChars: 44,
  documentCount: 1,
  documentLengths: [44],
  preview: "RLMs treat"
}

/** A root run whose step 1 starts a child run through `rlm_query`. */
const sample = Trace.make([
  new TraceEvent.RunStarted({
    runId: "root",
    depth: 0,
    query: "q",
    context,
    model: "m",
    language: "python",
    isolation: "namespace",
    timestamp: 1
  }),
  new TraceEvent.SubCall({
    runId: "root",
    parentStep: 1,
    kind: "llm_query",
    model: "s",
    prompt: "Summarize: x",
    promptSha256: "a",
    promptChars: 12,
    reply: "fake summary",
    replySha256: "b",
    replyChars: 12,
    usage: usage(10, 2),
    durationMs: 3
  }),
  new TraceEvent.RunStarted({
    runId: "child",
    parentRunId: "root",
    parentStep: 1,
    depth: 1,
    query: "sub",
    context,
    model: "m",
    language: "python",
    isolation: "process",
    timestamp: 2
  }),
  new TraceEvent.StepCompleted({
    runId: "child",
    step: 1,
    reply: "FINAL(ok)",
    blocks: [],
    usage: usage(100, 5),
    model: "m",
    modelMs: 1,
    durationMs: 1
  }),
  new TraceEvent.SubCall({
    runId: "child",
    parentStep: 1,
    kind: "llm_query",
    model: "s",
    prompt: "p",
    promptSha256: "c",
    promptChars: 1,
    usage: usage(),
    durationMs: 1,
    error: "boom"
  }),
  new TraceEvent.FinalAnswer({ runId: "child", step: 1, source: "FINAL", answer: "ok" }),
  new TraceEvent.SubCall({
    runId: "root",
    parentStep: 1,
    kind: "rlm_query",
    model: "m",
    prompt: "sub",
    promptSha256: "d",
    promptChars: 3,
    reply: "ok",
    usage: usage(100, 5),
    durationMs: 5,
    childRunId: "child"
  }),
  new TraceEvent.StepCompleted({
    runId: "root",
    step: 1,
    reply: "```repl\nx = llm_query('Summarize: x')\n```",
    blocks: [{ code: "x = 1", stdout: "a\nb", stderr: "", truncated: false, durationMs: 2 }],
    usage: usage(1000, 50),
    model: "m",
    modelMs: 4,
    durationMs: 10
  }),
  new TraceEvent.StepCompleted({
    runId: "root",
    step: 2,
    reply: "FINAL_VAR: x",
    blocks: [],
    usage: { inputTokens: 1100, outputTokens: 7, totalTokens: 1107 },
    model: "m",
    modelMs: 4,
    durationMs: 4
  }),
  new TraceEvent.FinalAnswer({ runId: "root", step: 2, source: "FINAL_VAR", answer: "fake summary" }),
  new TraceEvent.RunFinished({
    runId: "root",
    status: "answered",
    steps: 2,
    subCalls: 2,
    usage: {},
    durationMs: 20
  })
])

const decodeError = <A>(effect: Effect.Effect<A, Trace.TraceDecodeError>) =>
  Effect.flip(effect).pipe(Effect.tap((error) => assert.strictEqual(error._tag, "TraceDecodeError")))

describe("Trace round-trips", () => {
  it.prop("every TraceEvent survives one JSONL line", [TraceEvent.TraceEvent], ([event]) => {
    const line = Trace.eventToJsonLine(event)
    assert.notInclude(line, "\n")
    const back = Effect.runSync(Trace.decodeJsonl(line))
    assert.strictEqual(back.events.length, 1)
    assert.isTrue(sameEvent(back.events[0] as TraceEvent.TraceEvent, event))
  })

  it.effect.prop("every Trace survives JSON", [Trace.Trace], ([trace]) =>
    Effect.gen(function* () {
      const json = yield* Trace.encodeJson(trace)
      assert.isTrue(sameTrace(yield* Trace.decodeJson(json), trace))
      assert.isTrue(sameTrace(yield* Trace.decodeText(json), trace))
      assert.isTrue(sameTrace(yield* Trace.decodeJson(Trace.toJson(trace, { pretty: false })), trace))
    })
  )

  it.effect.prop("every Trace survives JSONL, one line per event", [Trace.Trace], ([trace]) =>
    Effect.gen(function* () {
      const jsonl = yield* Trace.encodeJsonl(trace)
      assert.strictEqual(jsonl, Trace.toJsonl(trace))
      assert.strictEqual(jsonl.split("\n").length - 1, trace.events.length)
      assert.isTrue(sameTrace(yield* Trace.decodeJsonl(jsonl), trace))
      if (trace.events.length > 0) assert.isTrue(sameTrace(yield* Trace.decodeText(jsonl), trace))
    })
  )

  it.effect("the JSON document names its version and tags each event", () =>
    Effect.gen(function* () {
      const json = JSON.parse(yield* Trace.encodeJson(sample))
      assert.strictEqual(json.version, 3)
      assert.deepStrictEqual(
        json.events.map((event: { _tag: string }) => event._tag),
        sample.events.map((event) => event._tag)
      )
      assert.isFalse("parentRunId" in json.events[0], "absent optional fields are omitted, not null")
    })
  )

  it.effect("JSONL tolerates CRLF and blank lines", () =>
    Effect.gen(function* () {
      const crlf = `\r\n${Trace.toJsonl(sample).replaceAll("\n", "\r\n")}\r\n\r\n`
      assert.isTrue(sameTrace(yield* Trace.decodeJsonl(crlf), sample))
      assert.strictEqual((yield* Trace.decodeJsonl("")).events.length, 0)
    })
  )

  it("non-finite numbers are rejected when an event is built", () => {
    assert.throws(
      () => new TraceEvent.FinalAnswer({ runId: "r", step: Number.NaN, source: "FINAL", answer: "a" }),
      /JsonNumber|finite/i
    )
  })

  it("isTraceEvent recognises decoded events only", () => {
    assert.isTrue(TraceEvent.isTraceEvent(sample.events[0]))
    assert.isFalse(TraceEvent.isTraceEvent({ _tag: "RunStarted" }))
  })
})

/** What format 1 wrote for a trace: no `RunStarted.isolation`, no `StepCompleted.interpreterLost`. */
const asVersion1 = (events: ReadonlyArray<Record<string, unknown>>) =>
  events.map((event) => {
    const { interpreterLost: _lost, isolation: _isolation, ...rest } = event
    return rest
  })

/** The trace format 2 reads a format-1 document as: every run behind the process wall. */
const readAsVersion1 = (trace: Trace.Trace): Trace.Trace =>
  Trace.make(
    trace.events.map((event) =>
      event._tag === "RunStarted"
        ? new TraceEvent.RunStarted({ ...event, isolation: "process" })
        : event._tag === "StepCompleted"
          ? (({ interpreterLost: _lost, ...rest }) => new TraceEvent.StepCompleted(rest))(event)
          : event
    )
  )

describe("Trace format versions", () => {
  it.effect("format 3 writes isolation on RunStarted and keeps it", () =>
    Effect.gen(function* () {
      const json = JSON.parse(yield* Trace.encodeJson(sample))
      assert.strictEqual(Trace.currentVersion, 3)
      assert.deepStrictEqual(Trace.readableVersions, [1, 2, 3])
      assert.deepStrictEqual(
        json.events
          .filter((e: { _tag: string }) => e._tag === "RunStarted")
          .map((e: { isolation: string }) => e.isolation),
        ["namespace", "process"]
      )
      const back = yield* Trace.decodeJson(JSON.stringify(json))
      assert.strictEqual(back.version, 3)
      assert.deepStrictEqual(
        Trace.runs(back).map((run) => run.isolation),
        ["namespace", "process"]
      )
    })
  )

  it.effect("a format-1 document decodes, its runs read as isolation 'process', and is written back as format 3", () =>
    Effect.gen(function* () {
      const v2 = JSON.parse(Trace.toJson(sample))
      const v1 = JSON.stringify({ version: 1, events: asVersion1(v2.events) })
      assert.notInclude(v1, "isolation")
      const back = yield* Trace.decodeJson(v1)
      assert.strictEqual(back.version, 3)
      assert.deepStrictEqual(
        Trace.runs(back).map((run) => run.isolation),
        ["process", "process"]
      )
      assert.isTrue(sameTrace(back, readAsVersion1(sample)))
      assert.isTrue(sameTrace(yield* Trace.decodeText(v1), readAsVersion1(sample)))
      const rewritten = JSON.parse(Trace.toJson(back))
      assert.strictEqual(rewritten.version, 3)
      assert.strictEqual(rewritten.events[0].isolation, "process")
    })
  )

  it.effect("a format-2 document (no tool calls) decodes unchanged and is written back as format 3", () =>
    Effect.gen(function* () {
      const v3 = JSON.parse(Trace.toJson(sample))
      assert.notInclude(JSON.stringify(v3), "toolCalls")
      const v2 = JSON.stringify({ ...v3, version: 2 })
      const back = yield* Trace.decodeJson(v2)
      assert.strictEqual(back.version, 3)
      assert.isTrue(sameTrace(back, sample))
      assert.strictEqual(JSON.parse(Trace.toJson(back)).version, 3)
    })
  )

  it.effect("a step's tool calls (the tools protocol) round-trip, broken arguments included", () =>
    Effect.gen(function* () {
      const step = new TraceEvent.StepCompleted({
        runId: "root",
        step: 1,
        reply: "",
        blocks: [{ code: "print(1)", stdout: "1\n", stderr: "", truncated: false, durationMs: 1 }],
        feedback: "run_code was not run: the arguments are not JSON",
        toolCalls: [
          { id: "call_1", name: "run_code", arguments: '{"code":"print(1)"}' },
          { id: "call_2", name: "run_code", arguments: "{code: oops" }
        ],
        usage: {},
        model: "m",
        modelMs: 1,
        durationMs: 1
      })
      const back = yield* Trace.decodeJson(Trace.toJson(Trace.make([step])))
      assert.isTrue(sameEvent(back.events[0] as TraceEvent.TraceEvent, step))
      assert.deepStrictEqual(
        (back.events[0] as TraceEvent.StepCompleted).toolCalls?.map((call) => call.arguments),
        ['{"code":"print(1)"}', "{code: oops"]
      )
    })
  )

  it.effect("format-1 JSONL lines decode", () =>
    Effect.gen(function* () {
      const lines = asVersion1(
        Trace.toJsonl(sample)
          .trimEnd()
          .split("\n")
          .map((line) => JSON.parse(line))
      )
      const jsonl = lines.map((line) => `${JSON.stringify(line)}\n`).join("")
      assert.isTrue(sameTrace(yield* Trace.decodeJsonl(jsonl), readAsVersion1(sample)))
      assert.isTrue(sameTrace(yield* Trace.decodeText(jsonl), readAsVersion1(sample)))
    })
  )

  it.effect.prop("every Trace, written as format 1, reads back with isolation 'process'", [Trace.Trace], ([trace]) =>
    Effect.gen(function* () {
      const v2 = JSON.parse(yield* Trace.encodeJson(trace))
      const v1 = JSON.stringify({ version: 1, events: asVersion1(v2.events) })
      assert.isTrue(sameTrace(yield* Trace.decodeJson(v1), readAsVersion1(trace)))
    })
  )

  it.effect(
    "a format-2 document (no finish reasons, no retried attempts) decodes as it is and is written back as format 3",
    () =>
      Effect.gen(function* () {
        const v3 = JSON.parse(Trace.toJson(sample))
        assert.notInclude(JSON.stringify(v3), "finishReason")
        const v2 = JSON.stringify({ version: 2, events: v3.events })
        const back = yield* Trace.decodeJson(v2)
        assert.strictEqual(back.version, 3)
        assert.isTrue(sameTrace(back, sample))
        assert.isTrue(sameTrace(yield* Trace.decodeText(v2), sample))
        assert.strictEqual(JSON.parse(Trace.toJson(back)).version, 3)
      })
  )

  it.effect("format 3 keeps the finish reason of steps and sub-calls, and the attempts a call retried", () =>
    Effect.gen(function* () {
      const events = [
        new TraceEvent.ModelCallRetried({
          runId: "root",
          step: 1,
          role: "root",
          model: "m",
          attempt: 1,
          reason: "ServerError",
          message: "503",
          status: 503,
          delayMs: 500,
          usage: usage(7, 3)
        }),
        new TraceEvent.StepCompleted({
          runId: "root",
          step: 1,
          reply: "FINAL(x)",
          blocks: [],
          usage: usage(10, 2),
          model: "qwen2.5-0.5b-instruct-q4_k_m.gguf",
          modelMs: 1,
          durationMs: 1,
          finishReason: "length"
        }),
        new TraceEvent.SubCall({
          runId: "root",
          parentStep: 1,
          kind: "llm_query",
          model: "s",
          prompt: "p",
          promptSha256: "a",
          promptChars: 1,
          reply: "r",
          usage: usage(1, 1),
          durationMs: 1,
          finishReason: "stop"
        })
      ]
      const trace = Trace.make(events)
      const back = yield* Trace.decodeJson(Trace.toJson(trace))
      assert.isTrue(sameTrace(back, trace))
      assert.strictEqual((back.events[1] as TraceEvent.StepCompleted).finishReason, "length")
      assert.strictEqual((back.events[2] as TraceEvent.SubCall).finishReason, "stop")
      assert.strictEqual(back.events[0]?._tag, "ModelCallRetried")
      // A failed attempt's tokens are spent too: counted beside the call's own.
      assert.deepStrictEqual(Trace.totalUsage(back), usage(18, 6))
    })
  )

  it.effect("a step that lost its interpreter round-trips", () =>
    Effect.gen(function* () {
      const step = new TraceEvent.StepCompleted({
        runId: "root",
        step: 1,
        reply: "```repl\nrepr(x)\n```",
        blocks: [{ code: "repr(x)", stdout: "", stderr: "", error: "died", truncated: false, durationMs: 0 }],
        interpreterLost: { reason: "Crashed", message: "died", restarts: 1 },
        usage: {},
        model: "m",
        modelMs: 1,
        durationMs: 1
      })
      const back = yield* Trace.decodeJsonl(Trace.eventToJsonLine(step))
      assert.isTrue(sameEvent(back.events[0] as TraceEvent.TraceEvent, step))
      assert.deepStrictEqual((back.events[0] as TraceEvent.StepCompleted).interpreterLost, {
        reason: "Crashed",
        message: "died",
        restarts: 1
      })
    })
  )
})

describe("Trace decode errors", () => {
  it.effect("not JSON", () =>
    Effect.gen(function* () {
      const error = yield* decodeError(Trace.decodeJson("{ nope"))
      assert.strictEqual(error.reason, "InvalidJson")
      assert.isUndefined(error.line)
    })
  )

  it.effect("an unknown format version", () =>
    Effect.gen(function* () {
      const error = yield* decodeError(Trace.decodeJson(JSON.stringify({ version: 4, events: [] })))
      assert.strictEqual(error.reason, "UnsupportedVersion")
      assert.include(error.message, "version 4")
      assert.include(error.message, "versions 1, 2 and 3")
    })
  )

  it.effect("a document with a malformed event points at it", () =>
    Effect.gen(function* () {
      const json = JSON.parse(Trace.toJson(sample))
      delete json.events[3].reply
      const error = yield* decodeError(Trace.decodeJson(JSON.stringify(json)))
      assert.strictEqual(error.reason, "SchemaMismatch")
      assert.include(error.message, "reply")
    })
  )

  it.effect("a document without version", () =>
    Effect.gen(function* () {
      const error = yield* decodeError(Trace.decodeJson(JSON.stringify({ events: [] })))
      assert.strictEqual(error.reason, "SchemaMismatch")
      assert.include(error.message, "version")
    })
  )

  it.effect("a single event given as a document says to read JSONL", () =>
    Effect.gen(function* () {
      const error = yield* decodeError(
        Trace.decodeJson(Trace.eventToJsonLine(sample.events[0] as TraceEvent.TraceEvent))
      )
      assert.strictEqual(error.reason, "SchemaMismatch")
      assert.include(error.message, "decodeJsonl")
    })
  )

  it.effect("JSONL: a cut-short line and an unknown event report their line numbers", () =>
    Effect.gen(function* () {
      const lines = Trace.toJsonl(sample).split("\n")
      const cut = [...lines.slice(0, 2), (lines[2] ?? "").slice(0, 20)].join("\n")
      const cutError = yield* decodeError(Trace.decodeJsonl(cut))
      assert.strictEqual(cutError.reason, "InvalidJson")
      assert.strictEqual(cutError.line, 3)

      const unknown = [...lines.slice(0, 4), JSON.stringify({ _tag: "Nope", runId: "x" })].join("\n")
      const unknownError = yield* decodeError(Trace.decodeJsonl(unknown))
      assert.strictEqual(unknownError.reason, "SchemaMismatch")
      assert.strictEqual(unknownError.line, 5)
    })
  )

  it.effect("decode errors are themselves serializable", () =>
    Effect.gen(function* () {
      const error = yield* decodeError(Trace.decodeJsonl("[1]"))
      const encoded = Schema.encodeSync(Trace.TraceDecodeError)(error)
      const back = Schema.decodeUnknownEither(Trace.TraceDecodeError)(JSON.parse(JSON.stringify(encoded)))
      assert.isTrue(Either.isRight(back))
    })
  )
})

describe("Trace queries", () => {
  it("runs, roots, children of a step and events of a run", () => {
    assert.deepStrictEqual(
      Trace.runs(sample).map((run) => run.runId),
      ["root", "child"]
    )
    assert.deepStrictEqual(
      Trace.rootRuns(sample).map((run) => run.runId),
      ["root"]
    )
    assert.deepStrictEqual(
      Trace.childRuns(sample, "root", 1).map((run) => run.runId),
      ["child"]
    )
    assert.deepStrictEqual(Trace.childRuns(sample, "root", 2), [])
    assert.deepStrictEqual(
      Trace.childRuns(sample, "root").map((run) => run.runId),
      ["child"]
    )
    assert.deepStrictEqual(
      Trace.eventsOfRun(sample, "child").map((event) => event._tag),
      ["RunStarted", "StepCompleted", "SubCall", "FinalAnswer"]
    )
    assert.deepStrictEqual(Trace.descendantRunIds(sample, "root"), ["root", "child"])
    assert.deepStrictEqual(Trace.descendantRunIds(sample.events, "child"), ["child"])
  })

  it("final answer of a run", () => {
    assert.strictEqual(Option.getOrThrow(Trace.finalAnswer(sample, "root")).answer, "fake summary")
    assert.strictEqual(Option.getOrThrow(Trace.finalAnswer(sample, "child")).answer, "ok")
    assert.isTrue(Option.isNone(Trace.finalAnswer(sample, "ghost")))
  })

  it("total usage sums root steps and sub-calls of the run and its children, counting rlm_query once", () => {
    // root steps 1000+1100, llm_query 10, child step 100 (the rlm_query's own 100 is not added again)
    assert.deepStrictEqual(Trace.totalUsage(sample, "root"), {
      inputTokens: 2210,
      outputTokens: 64,
      totalTokens: 1107
    })
    assert.deepStrictEqual(Trace.totalUsage(sample), Trace.totalUsage(sample, "root"))
    assert.deepStrictEqual(Trace.totalUsage(sample, "child"), { inputTokens: 100, outputTokens: 5 })
    assert.deepStrictEqual(Trace.totalUsage(Trace.empty), {}, "no reported usage stays unknown")
  })

  it("an rlm_query whose child run is missing is counted from its own usage", () => {
    const withoutChild = sample.events.filter((event) => event.runId !== "child")
    assert.deepStrictEqual(Trace.totalUsage(withoutChild, "root"), {
      inputTokens: 2210,
      outputTokens: 64,
      totalTokens: 1107
    })
  })
})

describe("docs/tracing.md", () => {
  it.effect("its JSON example decodes with the Trace schema", () =>
    Effect.gen(function* () {
      const doc = readFileSync(fileURLToPath(new URL("../../../docs/tracing.md", import.meta.url)), "utf8")
      const example = /```json\n([\s\S]*?)```/.exec(doc)?.[1] ?? "(no json block in docs/tracing.md)"
      const trace = yield* Trace.decodeJson(example)
      assert.strictEqual(Option.getOrThrow(Trace.finalAnswer(trace, "run-1")).answer, "fake summary")
    })
  )
})
