/**
 * The run tree's span region (`internal/tracing.ts` `spanned`) against what it
 * replaces: `Effect.useSpan` with `Effect.withParentSpan` inside and an
 * `Effect.onExit` for the end attributes. For random trees of spans (bodies
 * that succeed, fail, die or interrupt themselves, children run in turn or
 * forked and joined) both give the same spans: names, parents, attributes set
 * in the body and at the end, exits, every span ended, and the same context
 * after the region. Interrupted from outside, the span still ends, with the
 * interruption as its exit.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, FastCheck as fc, Option, Tracer } from "effect"
import * as Tracing from "../src/internal/tracing.js"

interface Recorded {
  readonly name: string
  readonly parent: string | undefined
  readonly attributes: Map<string, unknown>
  exit: Exit.Exit<unknown, unknown> | undefined
  endTime: bigint | undefined
}

/** A tracer that keeps every span it makes. */
const recording = () => {
  const spans: Array<Recorded> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const rec: Recorded = {
        name,
        parent: Option.isSome(parent) ? parent.value.spanId : undefined,
        attributes: new Map(),
        exit: undefined,
        endTime: undefined
      }
      const spanId = String(spans.length)
      spans.push(rec)
      const span: Tracer.Span = {
        _tag: "Span",
        name,
        spanId,
        traceId: "trace",
        parent,
        context,
        status: { _tag: "Started", startTime },
        attributes: rec.attributes,
        links,
        sampled: true,
        kind,
        end(endTime, exit) {
          ;(span as { status: Tracer.SpanStatus }).status = { _tag: "Ended", startTime, endTime, exit }
          rec.exit = exit
          rec.endTime = endTime
        },
        attribute(key, value) {
          rec.attributes.set(key, value)
        },
        event() {},
        addLinks() {}
      }
      return span
    },
    context: (f) => f()
  })
  return { spans, tracer }
}

type Outcome = "succeed" | "fail" | "die" | "interrupt"
interface Node {
  readonly outcome: Outcome
  readonly fork: boolean
  readonly children: ReadonlyArray<Node>
}

type Region = <A, E>(
  name: string,
  attributes: Record<string, unknown>,
  body: (span: Tracer.Span) => Effect.Effect<A, E>,
  onEnd: (span: Tracer.Span, exit: Exit.Exit<A, E>) => void
) => Effect.Effect<A, E>

/** What `spanned` replaces, written with Effect's own regions. */
const reference: Region = (name, attributes, body, onEnd) =>
  Effect.useSpan(name, { attributes, captureStackTrace: false }, (span) =>
    Effect.onExit(Effect.withParentSpan(body(span), span), (exit) => Effect.sync(() => onEnd(span, exit)))
  )

const outcomeOf = (outcome: Outcome, path: string): Effect.Effect<string, string> => {
  switch (outcome) {
    case "succeed":
      return Effect.succeed(path)
    case "fail":
      return Effect.fail(`failed ${path}`)
    case "die":
      return Effect.dieMessage(`died ${path}`)
    case "interrupt":
      return Effect.interrupt
  }
}

/** The tree as nested regions; each child's exit is kept, so a failing child does not stop its siblings. */
const program = (region: Region, node: Node, path: string): Effect.Effect<string, string> =>
  region(
    `span ${path}`,
    { path },
    (span) =>
      Effect.gen(function* () {
        span.attribute("in body", path)
        // The current span in the body is this one.
        const current = yield* Effect.option(Effect.currentSpan)
        span.attribute("current is self", Option.getOrUndefined(current) === span)
        for (const [i, child] of node.children.entries()) {
          const run = program(region, child, `${path}.${i}`)
          const exit = child.fork
            ? yield* Effect.flatMap(Effect.fork(run), (f) => Fiber.await(f))
            : yield* Effect.exit(run)
          span.attribute(
            `child ${i}`,
            Exit.isSuccess(exit) ? "ok" : Cause.isInterruptedOnly(exit.cause) ? "int" : "err"
          )
        }
        // The context is back to this span after its children.
        const after = yield* Effect.option(Effect.currentSpan)
        span.attribute("current after children", Option.getOrUndefined(after) === span)
        return yield* outcomeOf(node.outcome, path)
      }),
    (span, exit) => span.attribute("end", Exit.isSuccess(exit) ? "ok" : "not ok")
  )

const shape = (spans: ReadonlyArray<Recorded>) =>
  spans.map((s) => ({
    name: s.name,
    parent: s.parent,
    attributes: Object.fromEntries(s.attributes),
    exit:
      s.exit === undefined
        ? "not ended"
        : Exit.isSuccess(s.exit)
          ? "success"
          : Cause.isInterruptedOnly(s.exit.cause)
            ? "interrupted"
            : "failure",
    timed: s.endTime !== undefined && s.endTime > BigInt(0)
  }))

const runWith = (region: Region, node: Node, timing: boolean) => {
  const { spans, tracer } = recording()
  const outer = Effect.gen(function* () {
    const before = yield* Effect.option(Effect.currentSpan)
    const exit = yield* Effect.exit(program(region, node, "0"))
    const after = yield* Effect.option(Effect.currentSpan)
    return { exit, sameContext: Option.getOrUndefined(before) === Option.getOrUndefined(after) }
  })
  const result = Effect.runSync(
    outer.pipe(Effect.withSpan("outer"), Effect.withTracer(tracer), Effect.withTracerTiming(timing))
  )
  return { spans: shape(spans), result }
}

const node: fc.Arbitrary<Node> = fc.letrec<{ node: Node }>((tie) => ({
  node: fc.record({
    outcome: fc.constantFrom<Outcome>("succeed", "succeed", "fail", "die", "interrupt"),
    fork: fc.boolean(),
    children: fc.oneof({ depthSize: "small" }, fc.constant([]), fc.array(tie("node"), { maxLength: 3 }))
  })
})).node

describe("spanned", () => {
  it.prop(
    "makes the same spans as useSpan + withParentSpan + onExit, and restores the context",
    [node, fc.boolean()],
    ([tree, timing]) => {
      const ours = runWith(Tracing.spanned, tree, timing)
      const theirs = runWith(reference, tree, timing)
      assert.deepStrictEqual(ours.spans, theirs.spans)
      assert.isTrue(ours.result.sameContext)
      assert.strictEqual(ours.result.exit._tag, theirs.result.exit._tag)
      // Every span ended, and a span's body saw itself as the current span before and after its children.
      for (const span of ours.spans) {
        assert.notStrictEqual(span.exit, "not ended")
        assert.strictEqual(span.timed, timing)
        if (span.name === "outer") continue
        assert.strictEqual(span.attributes["current is self"], true)
        assert.strictEqual(span.attributes["current after children"], true)
      }
    },
    { fastCheck: { numRuns: 200 } }
  )

  it.effect("interrupted from outside, the span ends with the interruption and onEnd runs first", () =>
    Effect.gen(function* () {
      const { spans, tracer } = recording()
      const started = yield* Effect.makeLatch(false)
      const fiber = yield* Effect.fork(
        Tracing.spanned(
          "waits",
          {},
          () => Effect.zipRight(started.open, Effect.never),
          (span, exit) =>
            span.attribute("end", Cause.isInterruptedOnly(Exit.isFailure(exit) ? exit.cause : Cause.empty))
        ).pipe(Effect.withTracer(tracer))
      )
      yield* started.await
      yield* Fiber.interrupt(fiber)
      const [span] = spans
      assert.strictEqual(spans.length, 1)
      assert.strictEqual(span?.attributes.get("end"), true)
      assert.isTrue(span?.exit !== undefined && Exit.isInterrupted(span.exit))
    })
  )
})
