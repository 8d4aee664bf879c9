/**
 * The run tree's spans, seen through OpenTelemetry: `@effect/opentelemetry`'s
 * `NodeSdk` with an in-memory exporter receives every span Effect's tracer
 * makes, and the tests check the span tree (names, parents, attributes,
 * statuses) of real runs (the Fake model, the JavaScript sandbox).
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { assert, describe, it } from "@effect/vitest"
import { SpanStatusCode } from "@opentelemetry/api"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { Effect, Exit, Layer } from "effect"
import { Rlm, Tracing } from "../src/index.js"

const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

const { Attribute, SpanName } = Tracing

/**
 * Run `self` with an OpenTelemetry SDK whose spans go to an in-memory
 * exporter (a fresh one per call), and return its exit with the finished
 * spans, read before the SDK shuts down (shutting it down empties the exporter).
 */
const traced = <A, E, R>(self: Effect.Effect<A, E, R>) => {
  const exporter = new InMemorySpanExporter()
  const processor = new SimpleSpanProcessor(exporter)
  return Effect.gen(function* () {
    const exit = yield* Effect.exit(self)
    yield* Effect.promise(() => processor.forceFlush())
    return { exit, spans: [...exporter.getFinishedSpans()] }
  }).pipe(Effect.provide(NodeSdk.layer(() => ({ resource: { serviceName: "rlm-test" }, spanProcessor: processor }))))
}

/** The spans of the run tree (adapters or the platform may add spans of their own). */
const rlmSpans = (spans: ReadonlyArray<ReadableSpan>) => spans.filter((s) => s.name.startsWith("rlm."))

const parentOf = (spans: ReadonlyArray<ReadableSpan>, span: ReadableSpan) =>
  spans.find((s) => s.spanContext().spanId === span.parentSpanContext?.spanId)

const childrenOf = (spans: ReadonlyArray<ReadableSpan>, span: ReadableSpan, name?: string) =>
  spans.filter(
    (s) => s.parentSpanContext?.spanId === span.spanContext().spanId && (name === undefined || s.name === name)
  )

const only = <A>(items: ReadonlyArray<A>, what: string): A => {
  assert.strictEqual(items.length, 1, `expected one ${what}, got ${items.length}`)
  return items[0] as A
}

const attr = (span: ReadableSpan, key: string) => span.attributes[key]

const layer = (options: FakeAdapter.Options) => Layer.merge(FakeAdapter.layer(options), JavascriptSandbox.layer())

describe("Tracing: the run tree's spans", () => {
  it.live("nest run > step > block > sub-call > model call / child run, with their attributes", () =>
    Effect.gen(function* () {
      const { exit, spans: all } = yield* traced(
        Rlm.run("Ask the sub-models.", "some context").pipe(
          Effect.provide(
            layer({
              model: "fake-model",
              script: [
                repl(
                  "var rs = llm_query_batched(['say alpha', 'say beta', 'say gamma'])",
                  "var child = rlm_query('child task data')"
                ),
                // The child run's one root turn.
                "FINAL(child answer)",
                "FINAL_VAR(child)"
              ],
              rules: [
                { match: "alpha", reply: "A" },
                { match: "beta", reply: "B" },
                { match: "gamma", reply: "C" }
              ]
            })
          )
        )
      )
      assert.isTrue(Exit.isSuccess(exit))
      const spans = rlmSpans(all)

      // The top run: a root span, answered in two steps.
      const runs = spans.filter((s) => s.name === SpanName.run)
      assert.strictEqual(runs.length, 2)
      const top = only(
        runs.filter((s) => attr(s, Attribute.depth) === 0),
        "top run"
      )
      assert.isUndefined(parentOf(all, top))
      assert.strictEqual(attr(top, Attribute.runId), "run")
      assert.strictEqual(attr(top, Attribute.status), "answered")
      assert.strictEqual(attr(top, Attribute.steps), 2)
      assert.strictEqual(attr(top, Attribute.language), "javascript")
      assert.strictEqual(attr(top, Attribute.model), "fake-model")
      assert.isString(attr(top, Attribute.isolation))
      assert.strictEqual(top.status.code, SpanStatusCode.OK)

      const steps = childrenOf(spans, top, SpanName.step).sort(
        (a, b) => Number(attr(a, Attribute.step)) - Number(attr(b, Attribute.step))
      )
      assert.deepStrictEqual(
        steps.map((s) => attr(s, Attribute.step)),
        [1, 2]
      )
      const [first, second] = steps as [ReadableSpan, ReadableSpan]
      assert.strictEqual(attr(first, Attribute.model), "fake-model")
      assert.strictEqual(attr(first, Attribute.blocks), 1)
      assert.isAbove(Number(attr(first, Attribute.inputTokens)), 0)
      assert.isAbove(Number(attr(first, Attribute.outputTokens)), 0)
      assert.strictEqual(attr(second, Attribute.blocks), 0)

      // Each step's root call.
      for (const step of steps) {
        const call = only(childrenOf(spans, step, SpanName.modelCall), "root call of a step")
        assert.strictEqual(attr(call, Attribute.role), "root")
        assert.strictEqual(attr(call, Attribute.model), "fake-model")
        assert.strictEqual(attr(call, Attribute.depth), 0)
        assert.strictEqual(attr(call, Attribute.status), "ok")
        assert.isAbove(Number(attr(call, Attribute.inputTokens)), 0)
        assert.strictEqual(attr(call, Tracing.GenAiAttribute.requestModel), "fake-model")
      }

      // The block of step 1 holds the four sub-calls: three llm_query prompts (siblings) and one rlm_query.
      const block = only(childrenOf(spans, first, SpanName.block), "block")
      assert.strictEqual(attr(block, Attribute.blockIndex), 0)
      assert.strictEqual(attr(block, Attribute.blockFailed), false)
      assert.isNumber(attr(block, Attribute.blockDurationMs))
      assert.strictEqual(block.status.code, SpanStatusCode.OK)
      const subCalls = childrenOf(spans, block, SpanName.subCall)
      assert.strictEqual(subCalls.length, 4)
      assert.strictEqual(spans.filter((s) => s.name === SpanName.subCall).length, 4)
      const llm = subCalls.filter((s) => attr(s, Attribute.subCallKind) === "llm_query")
      assert.strictEqual(llm.length, 3)
      assert.deepStrictEqual(
        llm.map((s) => attr(s, Attribute.promptChars)).sort(),
        ["say alpha".length, "say beta".length, "say gamma".length].sort()
      )
      for (const sub of llm) {
        assert.strictEqual(attr(sub, Attribute.model), "fake-model")
        assert.strictEqual(attr(sub, Attribute.status), "ok")
        assert.strictEqual(attr(sub, Attribute.step), 1)
        assert.strictEqual(attr(sub, Attribute.replyChars), 1)
        assert.isAbove(Number(attr(sub, Attribute.outputTokens)), 0)
        const call = only(childrenOf(spans, sub, SpanName.modelCall), "sub-call's model call")
        assert.strictEqual(attr(call, Attribute.role), "sub")
        assert.strictEqual(attr(call, Attribute.depth), 0)
      }

      // The rlm_query sub-call holds the child run, whose own step and root call are below it.
      const rlm = only(
        subCalls.filter((s) => attr(s, Attribute.subCallKind) === "rlm_query"),
        "rlm_query sub-call"
      )
      assert.strictEqual(attr(rlm, Attribute.childRunId), "run/1.0")
      assert.strictEqual(attr(rlm, Attribute.status), "ok")
      const child = only(childrenOf(spans, rlm, SpanName.run), "child run")
      assert.strictEqual(attr(child, Attribute.runId), "run/1.0")
      assert.strictEqual(attr(child, Attribute.depth), 1)
      assert.strictEqual(attr(child, Attribute.parentRunId), "run")
      assert.strictEqual(attr(child, Attribute.parentStep), 1)
      assert.strictEqual(attr(child, Attribute.status), "answered")
      assert.strictEqual(attr(child, Attribute.steps), 1)
      const childStep = only(childrenOf(spans, child, SpanName.step), "child step")
      const childCall = only(childrenOf(spans, childStep, SpanName.modelCall), "child root call")
      assert.strictEqual(attr(childCall, Attribute.depth), 1)
      assert.strictEqual(attr(childCall, Attribute.role), "root")

      // The top run's tokens are those of the whole tree: every call's, added up.
      const calls = spans.filter((s) => s.name === SpanName.modelCall)
      assert.strictEqual(calls.length, 6)
      const sum = calls.reduce((n, s) => n + Number(attr(s, Attribute.totalTokens)), 0)
      assert.strictEqual(attr(top, Attribute.totalTokens), sum)

      // One trace: every span shares the top run's trace id.
      assert.isTrue(spans.every((s) => s.spanContext().traceId === top.spanContext().traceId))
    })
  )

  it.live("a failed run, a failed block and a failed sub-call set their spans' status, with no model text", () =>
    Effect.gen(function* () {
      const { exit, spans: all } = yield* traced(
        Rlm.run("Fail.", "ctx").pipe(
          Effect.provide(
            layer({
              script: [repl("var rs = llm_query_batched(['say alpha', 'say z'])", "throw new Error('boom-secret')")],
              rules: [{ match: "alpha", reply: "A" }]
            })
          )
        )
      )
      assert.isTrue(Exit.isFailure(exit))
      const spans = rlmSpans(all)
      const top = only(
        spans.filter((s) => s.name === SpanName.run),
        "run"
      )
      assert.strictEqual(top.status.code, SpanStatusCode.ERROR)
      assert.strictEqual(attr(top, Attribute.status), "failed")
      assert.include(String(attr(top, Attribute.error)), "ScriptExhausted")

      const [first, second] = childrenOf(spans, top, SpanName.step).sort(
        (a, b) => Number(attr(a, Attribute.step)) - Number(attr(b, Attribute.step))
      ) as [ReadableSpan, ReadableSpan]
      // Step 1 went on past its failed block; step 2's root call failed, and so did the step.
      assert.strictEqual(first.status.code, SpanStatusCode.OK)
      assert.strictEqual(second.status.code, SpanStatusCode.ERROR)
      const failedCall = only(childrenOf(spans, second, SpanName.modelCall), "step 2's call")
      assert.strictEqual(failedCall.status.code, SpanStatusCode.ERROR)
      assert.strictEqual(attr(failedCall, Attribute.status), "error")
      assert.include(String(attr(failedCall, Attribute.error)), "script exhausted")

      const block = only(childrenOf(spans, first, SpanName.block), "block")
      assert.strictEqual(block.status.code, SpanStatusCode.ERROR)
      assert.strictEqual(attr(block, Attribute.blockFailed), true)
      assert.strictEqual(block.status.message, "The block raised an error.")

      const subCalls = childrenOf(spans, block, SpanName.subCall).sort(
        (a, b) => Number(attr(a, Attribute.promptChars)) - Number(attr(b, Attribute.promptChars))
      )
      assert.deepStrictEqual(
        subCalls.map((s) => [s.status.code, attr(s, Attribute.status)]),
        [
          [SpanStatusCode.ERROR, "error"],
          [SpanStatusCode.OK, "ok"]
        ]
      )

      // Model code's own text (its exception message) is in no attribute, status or event.
      const text = JSON.stringify(spans.map((s) => [s.attributes, s.status, s.events]))
      assert.notInclude(text, "boom-secret")
    })
  )
})
