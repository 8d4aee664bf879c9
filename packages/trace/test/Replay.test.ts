import { assert, describe, it } from "@effect/vitest"
import * as AttemptObserver from "@rlm-runtime/adapters/AttemptObserver"
import * as CallSite from "@rlm-runtime/adapters/CallSite"
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Hash from "@rlm-runtime/trace/Hash"
import * as LlmCache from "@rlm-runtime/trace/LlmCache"
import * as Replay from "@rlm-runtime/trace/Replay"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import { Effect, FastCheck as fc, Option } from "effect"

const context = { type: "text" as const, totalChars: 3, documentCount: 1, documentLengths: [3], preview: "abc" }
const messages = [new LlmAdapter.ChatMessage({ role: "user", content: "Question: q" })]
const rootRequest = new LlmAdapter.ChatRequest({ role: "root", messages })
const sub = (prompt: string) =>
  new LlmAdapter.ChatRequest({ role: "sub", messages: [new LlmAdapter.ChatMessage({ role: "user", content: prompt })] })

const subCall = (prompt: string, reply: string) =>
  new TraceEvent.SubCall({
    runId: "run",
    parentStep: 1,
    kind: "llm_query",
    model: "small",
    prompt,
    promptSha256: Hash.sha256(prompt),
    promptChars: prompt.length,
    reply,
    replySha256: Hash.sha256(reply),
    replyChars: reply.length,
    usage: { inputTokens: 1 },
    durationMs: 0,
    finishReason: "stop"
  })

const trace = Trace.make([
  new TraceEvent.RunInput({
    runId: "run",
    query: "q",
    context: "abc",
    contextSha256: Hash.sha256("abc"),
    language: "js",
    policy: {}
  }),
  new TraceEvent.RunStarted({
    runId: "run",
    depth: 0,
    query: "q",
    context,
    model: "big",
    language: "js",
    isolation: "process",
    timestamp: 0
  }),
  // Recorded in completion order: b before a.
  subCall("prompt b", "reply b"),
  subCall("prompt a", "reply a"),
  new TraceEvent.StepCompleted({
    runId: "run",
    step: 1,
    reply: "FINAL(x)",
    blocks: [],
    toolCalls: [{ id: "c1", name: "final_answer", arguments: '{"answer":"x"}' }],
    usage: { inputTokens: 5, outputTokens: 2 },
    model: "big",
    modelMs: 0,
    durationMs: 0,
    finishReason: "tool-calls",
    promptSha256: LlmCache.keyOf(rootRequest),
    replySha256: Hash.sha256("FINAL(x)")
  })
])

const at = (step: number, role: LlmAdapter.CallRole) => CallSite.within({ runId: "run", step, role, depth: 0 })

describe("Replay", () => {
  it.effect("answers root calls by run and step with the recorded reply, tool calls, finish reason and usage", () =>
    Effect.gen(function* () {
      const replay = yield* Replay.make(trace)
      const response = yield* replay.adapter.chat(rootRequest).pipe(at(1, "root"))
      assert.strictEqual(response.text, "FINAL(x)")
      assert.strictEqual(response.finishReason, "tool-calls")
      assert.deepStrictEqual(
        response.toolCalls?.map((c) => c.name),
        ["final_answer"]
      )
      assert.strictEqual(response.usage.inputTokens, 5)
      assert.strictEqual(replay.adapter.model("root"), "big")
      assert.strictEqual(replay.adapter.model("sub"), "small")
      const named = yield* Replay.make(trace, { model: (role) => `${role}-configured` })
      assert.strictEqual(named.adapter.model("sub"), "sub-configured")
      // RunInput.models, when recorded, names them.
      const withModels = Trace.make(
        trace.events.map((e) =>
          e._tag === "RunInput" ? new TraceEvent.RunInput({ ...e, models: { root: "r", sub: "s" } }) : e
        )
      )
      const recorded = yield* Replay.make(withModels)
      assert.deepStrictEqual([recorded.adapter.model("root"), recorded.adapter.model("sub")], ["r", "s"])
    })
  )

  it.effect("answers sub-calls by prompt hash whatever order they come in", () =>
    Effect.gen(function* () {
      const replay = yield* Replay.make(trace)
      const a = yield* replay.adapter.chat(sub("prompt a")).pipe(at(1, "sub"))
      const b = yield* replay.adapter.chat(sub("prompt b")).pipe(at(1, "sub"))
      assert.deepStrictEqual([a.text, b.text], ["reply a", "reply b"])
      // Nothing left: a third call diverges, and check says so.
      const extra = yield* Effect.flip(replay.adapter.chat(sub("prompt a")).pipe(at(1, "sub")))
      assert.strictEqual(extra.reason, "NotFound")
      const d = yield* Effect.flip(replay.check)
      assert.strictEqual(d.reason, "UnexpectedCall")
    })
  )

  it.effect("check fails with MissingCalls when a recorded call was never asked", () =>
    Effect.gen(function* () {
      const replay = yield* Replay.make(trace)
      yield* replay.adapter.chat(sub("prompt a")).pipe(at(1, "sub"))
      const d = yield* Effect.flip(replay.check)
      assert.strictEqual(d.reason, "MissingCalls")
      assert.strictEqual(d.runId, "run")
      assert.strictEqual(d.step, 1)
      assert.isTrue(Option.isNone(yield* replay.divergence))
    })
  )

  it.effect("a root request for an unknown run or step diverges, naming it", () =>
    Effect.gen(function* () {
      const replay = yield* Replay.make(trace)
      yield* Effect.flip(replay.adapter.chat(rootRequest).pipe(at(2, "root")))
      const d = yield* Effect.flip(replay.check)
      assert.strictEqual(d.reason, "UnknownStep")
      assert.strictEqual(d.step, 2)
      assert.include(d.message, 'run "run", step 2')
    })
  )

  it.effect("the failed attempts the original adapter retried are reported again, before the answer", () =>
    Effect.gen(function* () {
      const retried = (role: "root" | "sub", attempt: number) =>
        new TraceEvent.ModelCallRetried({
          runId: "run",
          step: 1,
          role,
          model: role === "root" ? "big" : "small",
          attempt,
          reason: "RateLimited",
          message: `429 #${attempt}`,
          status: 429,
          delayMs: 10,
          usage: {}
        })
      // Recorded before the call they belong to, as the run loop records them.
      const events = [...trace.events]
      events.splice(3, 0, retried("sub", 1))
      events.splice(5, 0, retried("root", 1), retried("root", 2))
      const replay = yield* Replay.make(Trace.make(events))
      const seen: Array<string> = []
      const observer = (a: AttemptObserver.AttemptFailed) =>
        Effect.sync(() => void seen.push(`${a.reason} ${a.message}`))
      yield* replay.adapter.chat(sub("prompt b")).pipe(at(1, "sub"), AttemptObserver.observe(observer))
      assert.deepStrictEqual(seen, [])
      yield* replay.adapter.chat(sub("prompt a")).pipe(at(1, "sub"), AttemptObserver.observe(observer))
      assert.deepStrictEqual(seen, ["RateLimited 429 #1"])
      yield* replay.adapter.chat(rootRequest).pipe(at(1, "root"), AttemptObserver.observe(observer))
      assert.deepStrictEqual(seen, ["RateLimited 429 #1", "RateLimited 429 #1", "RateLimited 429 #2"])
      yield* replay.check
    })
  )

  it.effect("a context changed but not its hash is TraceTampered", () =>
    Effect.gen(function* () {
      const edited = Trace.make(
        trace.events.map((e) => (e._tag === "RunInput" ? new TraceEvent.RunInput({ ...e, context: "abd" }) : e))
      )
      const e = yield* Effect.flip(Replay.make(edited))
      assert.strictEqual(e.field, "RunInput.context")
      assert.strictEqual(e.recordedSha256, Hash.sha256("abc"))
      assert.strictEqual(e.actualSha256, Hash.sha256("abd"))
    })
  )

  it.effect("a trace written and read back (JSON, JSONL) replays the same", () =>
    Effect.gen(function* () {
      for (const text of [Trace.toJson(trace), Trace.toJsonl(trace)]) {
        const read = yield* Trace.decodeText(text)
        assert.deepStrictEqual(read, trace)
        yield* Replay.verify(read)
      }
    })
  )

  it.prop("excerpt shows where two texts first differ", [fc.string(), fc.string(), fc.string()], ([prefix, a, b]) => {
    const shown = Replay.excerpt(prefix + a, prefix + b)
    if (a === b) return shown === undefined
    const at = [...Array(Math.min(a.length, b.length) + 1).keys()].find((i) => a[i] !== b[i]) as number
    return shown !== undefined && shown.startsWith(`at character ${prefix.length + at}:`)
  })
})
