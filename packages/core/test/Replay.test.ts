import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox } from "@rlm-runtime/sandbox"
import { CachedAdapter, LlmCache, Trace } from "@rlm-runtime/trace"
import { Cause, Effect, Exit, Layer } from "effect"
import { Rlm } from "../src/index.js"
import * as Random from "./utils/randomRuns.js"

const Js = JavascriptSandbox.layer()

/** Runs of the property; raise with RLM_PROP_RUNS for a longer search. */
const RUNS = Number(process.env.RLM_PROP_RUNS ?? 30)

const QUERY = "Answer the question."
const CONTEXT = "some context text ".repeat(20)

/** A comparable view of how a run ended: the answer, or the error without its trace. */
const outcomeOf = (exit: Exit.Exit<Rlm.RunResult<string>, unknown>) => {
  if (Exit.isSuccess(exit)) {
    const { answer, source, steps, totals } = exit.value
    return { answer, source, steps, totals }
  }
  const failure = Cause.failureOption(exit.cause)
  if (failure._tag === "None") return { defect: Cause.pretty(exit.cause) }
  const { trace: _trace, ...rest } = failure.value as { trace?: unknown }
  return rest
}

const traceOf = (exit: Exit.Exit<Rlm.RunResult<string>, unknown>): Trace.Trace | undefined => {
  if (Exit.isSuccess(exit)) return exit.value.trace
  const failure = Cause.failureOption(exit.cause)
  return failure._tag === "Some" ? (failure.value as { trace?: Trace.Trace }).trace : undefined
}

/**
 * The trace as JSON, without its timing fields, its events grouped by run in
 * their order. Concurrent child runs interleave their events in whatever order
 * their interpreters answer (each sandbox session is its own process): the
 * order within each run is the guarantee, not the interleaving across runs.
 */
const comparable = (trace: Trace.Trace | undefined) => {
  if (trace === undefined) return undefined
  const json = Random.withoutTiming(JSON.parse(Trace.toJson(trace))) as { events: Array<{ runId: string }> }
  const byRun = new Map<string, Array<unknown>>()
  for (const event of json.events) byRun.set(event.runId, [...(byRun.get(event.runId) ?? []), event])
  return { ...json, events: Object.fromEntries([...byRun].sort(([a], [b]) => a.localeCompare(b))) }
}

/**
 * Record a run through `CachedAdapter` (record mode, in-memory cache), then
 * run it again from the cache alone, with no model in context.
 */
const recordThenReplay = (fake: FakeAdapter.Options, policy: Random.PolicyInput) =>
  Effect.gen(function* () {
    const cache = Layer.succeed(LlmCache.LlmCache, yield* LlmCache.makeMemory())
    const record = CachedAdapter.layer({ mode: "record" }).pipe(
      Layer.provide(FakeAdapter.layer(fake)),
      Layer.provide(cache)
    )
    const original = yield* Effect.exit(Rlm.run(QUERY, CONTEXT, { policy })).pipe(
      Effect.provide(Layer.merge(record, Js))
    )
    // The replay adapter cannot learn a model name from a cache with no
    // response for a role, so it is told the recorded model's name.
    const replay = CachedAdapter.layerReplay({ model: fake.model ?? "fake" }).pipe(Layer.provide(cache))
    const replayed = yield* Effect.exit(Rlm.run(QUERY, CONTEXT, { policy })).pipe(
      Effect.provide(Layer.merge(replay, Js))
    )
    return { original, replayed }
  })

const assertSameRun = (
  original: Exit.Exit<Rlm.RunResult<string>, unknown>,
  replayed: Exit.Exit<Rlm.RunResult<string>, unknown>
) => {
  assert.deepStrictEqual(outcomeOf(replayed), outcomeOf(original))
  assert.isDefined(traceOf(original))
  assert.deepStrictEqual(comparable(traceOf(replayed)), comparable(traceOf(original)))
}

/** Root replies that always end a run: children and the root never run out of script. */
const tail = Array.from({ length: 120 }, (_, i) => `FINAL(tail ${i})`)

const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

describe("replay equals the original run", () => {
  it.live("a run with batches, a child RLM and a budget failure replays to the same answer and trace", () =>
    Effect.gen(function* () {
      const fake: FakeAdapter.Options = {
        script: [
          repl(
            "var rs = llm_query_batched(['k0 a', 'k1 b', 'k2 c', 'k0 d'])",
            "var kid = rlm_query('task: count the words')",
            "console.log(rs.join('|').length, kid)"
          ),
          // The child's reply.
          "FINAL(three words)",
          repl("var more = llm_query('k1 again')"),
          "FINAL_VAR(more)"
        ],
        rules: [
          { match: "k0", reply: "zero" },
          { match: "k1", reply: "one ".repeat(30) },
          { match: "", reply: "other" }
        ]
      }
      const { original, replayed } = yield* recordThenReplay(fake, { concurrency: 3, maxDepth: 1 })
      assert.isTrue(Exit.isSuccess(original))
      assertSameRun(original, replayed)
      // A budget failure replays too: the same limit, the same partial trace.
      const tight = yield* recordThenReplay(fake, { concurrency: 2, maxDepth: 1, maxSubCalls: 3 })
      assert.isTrue(Exit.isFailure(tight.original))
      assertSameRun(tight.original, tight.replayed)
    })
  )

  it.live("replay needs no model: a request the cache lacks fails with NotFound", () =>
    Effect.gen(function* () {
      const cache = Layer.succeed(LlmCache.LlmCache, yield* LlmCache.makeMemory())
      const exit = yield* Effect.exit(Rlm.run(QUERY, CONTEXT)).pipe(
        Effect.provide(Layer.merge(CachedAdapter.layerReplay({ model: "fake" }).pipe(Layer.provide(cache)), Js))
      )
      assert.isTrue(Exit.isFailure(exit))
      const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : undefined
      assert.include(failure?._tag === "Some" ? failure.value.message : "", "NotFound")
    })
  )

  it.live.prop(
    "for random scripts and policies, replay gives the same outcome and the same trace",
    // Concurrency 1: with concurrent child runs sharing one budget, which of
    // them meets a limit first depends on how the machine schedules their
    // interpreters (each its own process), in the original run as in the
    // replay. The law is replay under the same schedule; the concurrent case
    // with no race on the budget is the example above.
    [
      Random.script({ rlmWeight: 2 }).map((s) => ({ ...s, catchAll: true })),
      Random.policy.map((p) => ({ ...p, concurrency: 1 }))
    ],
    ([script, policy]) =>
      Effect.gen(function* () {
        // Every sub-call prompt matches a rule and the root never runs out of
        // replies, so every model call of the recorded run succeeded: all of
        // them are in the cache.
        const rendered = Random.render(script)
        const { original, replayed } = yield* recordThenReplay(
          { ...rendered, script: [...rendered.script, ...tail] },
          policy
        )
        assertSameRun(original, replayed)
      }),
    { timeout: 300_000, fastCheck: { numRuns: RUNS } }
  )
})
