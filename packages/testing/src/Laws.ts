/**
 * Ready laws over a recorded run ({@link RlmTest.Recorded}). Each law is an
 * Effect that succeeds when the law holds and fails with a
 * {@link LawViolation} (or the `ReplayDivergence` / `TraceTampered` of the
 * replay) when it does not, so it can be returned as is from
 * `it.effect.prop` / `it.live.prop` of `@effect/vitest`:
 *
 * ```ts
 * layer(JavascriptSandbox.layer())((it) => {
 *   it.effect.prop("replay is faithful", [Arbitraries.runInput()], ([input]) =>
 *     RlmTest.record(input.query, input.context, { policy: input.policy }).pipe(
 *       Effect.provide(FakeAdapter.layer(input.script)),
 *       Effect.flatMap(Laws.replayIsFaithful)
 *     )
 *   )
 * })
 * ```
 *
 * - {@link replayIsFaithful}: replaying the trace gives the same outcome and
 *   the same calls.
 * - {@link replaySucceedsWithinUsage}: under any policy whose limits are at
 *   least the trace's usage ({@link usageOf}), the replay of an answered run
 *   answers the same.
 * - {@link replayFailsBelowUsage}: with one limit below the used amount, the
 *   replay fails with `BudgetExceeded` for that limit, and its partial trace
 *   is a prefix of the original ({@link isPrefixOf}).
 * - {@link traceRoundTrips}: the trace round-trips through JSON and JSONL.
 *
 * Traces are compared without their timing fields (`durationMs`, `modelMs`,
 * `timestamp`, at any depth): they are the only part of a trace a replay
 * does not reproduce.
 *
 * @since 0.2.0
 */
import * as Policy from "@rlm-runtime/core/Policy"
import type * as Sandbox from "@rlm-runtime/sandbox/Sandbox"
import type * as Replay from "@rlm-runtime/trace/Replay"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as RlmTest from "./RlmTest.js"

/**
 * A law did not hold: `law` names it, `message` says how.
 *
 * @since 0.2.0
 * @category Errors
 */
export class LawViolation extends Data.TaggedError("LawViolation")<{
  readonly law: string
  readonly message: string
}> {}

const violated = (law: string, message: string) => Effect.fail(new LawViolation({ law, message }))

// ---------------------------------------------------------------------------
// comparing traces
// ---------------------------------------------------------------------------

const TIMING = new Set(["durationMs", "modelMs", "timestamp"])

/**
 * A value without its timing fields (`durationMs`, `modelMs`, `timestamp`)
 * at any depth.
 *
 * @since 0.2.0
 * @category Comparing
 */
export const withoutTiming = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(withoutTiming)
  if (typeof value === "object" && value !== null) {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) if (!TIMING.has(k)) out[k] = withoutTiming(v)
    return out
  }
  return value
}

/**
 * The events of a trace as JSON values without timing, for comparison. The
 * `policy` of `RunInput` is left out too: the budget laws replay under
 * another policy on purpose.
 *
 * @since 0.2.0
 * @category Comparing
 */
export const comparableEvents = (trace: Trace.Trace): ReadonlyArray<Record<string, unknown>> => {
  const json = JSON.parse(Trace.toJson(trace)) as { events: Array<Record<string, unknown>> }
  return json.events.map((event) => {
    if (event._tag !== "RunInput") return withoutTiming(event) as Record<string, unknown>
    const { policy: _policy, ...rest } = event
    return withoutTiming(rest) as Record<string, unknown>
  })
}

/** A JSON text with the keys of every object sorted: equal values give equal texts, whatever their key order. */
const canonical = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) =>
    typeof v === "object" && v !== null && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v
  )

const same = (a: unknown, b: unknown) => canonical(a) === canonical(b)

/**
 * The model calls a trace records: per run, its root steps in order (step
 * number, request hash, reply) and per step the sorted prompt hashes of the
 * sub-calls that were answered (a batch's calls may complete in any order).
 *
 * @since 0.2.0
 * @category Comparing
 */
export const callsOf = (trace: Trace.Trace) => {
  const roots: Record<string, Array<string>> = {}
  const subs: Record<string, Array<string>> = {}
  for (const event of trace.events) {
    if (event._tag === "StepCompleted") {
      roots[event.runId] = [...(roots[event.runId] ?? []), `${event.step} ${event.promptSha256 ?? ""} ${event.reply}`]
    } else if (event._tag === "SubCall" && event.kind === "llm_query" && event.reply !== undefined) {
      const key = `${event.runId}#${event.parentStep}`
      subs[key] = [...(subs[key] ?? []), `${event.promptSha256} ${event.reply}`]
    }
  }
  for (const list of Object.values(subs)) list.sort()
  return { roots, subs }
}

/**
 * Whether `partial` (the trace of a run stopped by a budget limit) is a
 * prefix of `original`, compared with {@link comparableEvents}: after the
 * longest common start, `partial` may only close what the limit cut short —
 * a `RunFinished` that is not `answered`, a sub-call refused (recorded with
 * an `error` and no reply), and the step the limit stopped (a `StepCompleted`
 * with the recorded reply of that run and step, its output cut short). It
 * returns the reason when it is not.
 *
 * @since 0.2.0
 * @category Comparing
 */
export const isPrefixOf = (partial: Trace.Trace, original: Trace.Trace): Either.Either<void, string> => {
  const p = comparableEvents(partial)
  const o = comparableEvents(original)
  let k = 0
  while (k < p.length && k < o.length && same(p[k], o[k])) k++
  for (let i = k; i < p.length; i++) {
    const event = p[i] as Record<string, unknown>
    const closes =
      (event._tag === "RunFinished" && event.status !== "answered") ||
      (event._tag === "SubCall" && event.reply === undefined && event.error !== undefined) ||
      (event._tag === "StepCompleted" &&
        o.some(
          (e) =>
            e._tag === "StepCompleted" && e.runId === event.runId && e.step === event.step && e.reply === event.reply
        ))
    if (!closes) {
      return Either.left(
        `event ${i} of the partial trace (${String(event._tag)} of run ${JSON.stringify(event.runId)}) is neither the original's event ${i} nor the closing of a cut run: ${JSON.stringify(event).slice(0, 300)}`
      )
    }
  }
  return Either.void
}

// ---------------------------------------------------------------------------
// usage
// ---------------------------------------------------------------------------

/**
 * What a trace used, in the units of the policy's limits: the most root
 * steps of any run (`maxSteps` bounds each run), the sub-calls of the whole
 * tree (`SubCall` events, `llm_query` and `rlm_query`), the tokens of every
 * call (`Trace.totalUsage`) and the deepest run.
 *
 * @since 0.2.0
 * @category Usage
 */
export interface Usage {
  readonly steps: number
  readonly subCalls: number
  readonly inputTokens: number
  readonly outputTokens: number
  readonly totalTokens: number
  readonly depth: number
}

/**
 * @since 0.2.0
 * @category Usage
 */
export const usageOf = (trace: Trace.Trace): Usage => {
  const steps = new Map<string, number>()
  let subCalls = 0
  let depth = 0
  for (const event of trace.events) {
    if (event._tag === "StepCompleted") steps.set(event.runId, Math.max(steps.get(event.runId) ?? 0, event.step))
    else if (event._tag === "SubCall") subCalls++
    else if (event._tag === "RunStarted") depth = Math.max(depth, event.depth)
  }
  const tokens = Trace.totalUsage(trace)
  return {
    steps: Math.max(0, ...steps.values()),
    subCalls,
    inputTokens: tokens.inputTokens ?? 0,
    outputTokens: tokens.outputTokens ?? 0,
    totalTokens: tokens.totalTokens ?? 0,
    depth
  }
}

const policyOf = (recorded: RlmTest.Recorded): Policy.Policy => {
  const policy = recorded.options.policy
  return policy instanceof Policy.Policy ? policy : Policy.make(policy ?? {})
}

const fieldsOf = (policy: Policy.Policy): ConstructorParameters<typeof Policy.Policy>[0] => ({ ...policy })

const outcomeOf = (result: RlmTest.Recorded["result"]) =>
  Either.isRight(result)
    ? { answer: result.right.answer, source: result.right.source, steps: result.right.steps }
    : result.left._tag === "BudgetExceeded"
      ? { error: result.left._tag, limit: result.left.limit, partialAnswer: result.left.partialAnswer }
      : { error: result.left._tag, reason: result.left.reason }

// ---------------------------------------------------------------------------
// the laws
// ---------------------------------------------------------------------------

/**
 * Whether the run answered without meeting a budget limit: it answered, and
 * no step was the last answer `onBudgetExceeded: "answer-now"` grants.
 *
 * @since 0.2.0
 * @category Usage
 */
export const answeredWithinLimits = (recorded: RlmTest.Recorded): boolean =>
  Either.isRight(recorded.result) &&
  !recorded.trace.events.some(
    (event) => event._tag === "StepCompleted" && (event.feedback ?? "").includes("onBudgetExceeded=answer-now")
  )

/**
 * The recorded policy with `maxSteps`, `maxSubCalls` and the three token
 * limits set to the used amounts plus `headroom`. `maxSteps` stays as
 * recorded when a run used more steps than it allows (its last step was the
 * forced "answer now" turn, which a larger limit would not ask for).
 * `maxDepth` stays as recorded: a deeper limit would turn an `rlm_query` that
 * ran as `llm_query` at the limit into a child run.
 *
 * @since 0.2.0
 * @category Usage
 */
export const atLeastUsage = (recorded: RlmTest.Recorded, used: Usage, headroom: Headroom): Policy.Policy => {
  const recordedPolicy = policyOf(recorded)
  return Policy.make({
    ...fieldsOf(recordedPolicy),
    maxSteps: used.steps > recordedPolicy.maxSteps ? recordedPolicy.maxSteps : Math.max(1, used.steps + headroom.steps),
    maxSubCalls: used.subCalls + headroom.subCalls,
    maxInputTokens: used.inputTokens + headroom.tokens,
    maxOutputTokens: used.outputTokens + headroom.tokens,
    maxTotalTokens: used.totalTokens + headroom.tokens
  })
}

/**
 * Replaying the recorded trace (with the recorded options) gives the same
 * outcome — the same answer, or the same error — and the same model calls,
 * and `Replay.check` / `Replay.checkAnswer` pass.
 *
 * @since 0.2.0
 * @category Laws
 */
export const replayIsFaithful = (
  recorded: RlmTest.Recorded
): Effect.Effect<void, LawViolation | Replay.ReplayDivergence | Replay.TraceTampered, Sandbox.Sandbox> =>
  Effect.gen(function* () {
    const law = "replayIsFaithful"
    const replayed = yield* RlmTest.replay(recorded)
    const [was, now] = [outcomeOf(recorded.result), outcomeOf(replayed.result)]
    if (!same(was, now))
      return yield* violated(law, `the outcome was ${JSON.stringify(was)}, the replay's is ${JSON.stringify(now)}`)
    const [before, after] = [callsOf(recorded.trace), callsOf(replayed.trace)]
    if (!same(before, after)) {
      return yield* violated(
        law,
        `the calls differ: recorded ${JSON.stringify(before)}, replayed ${JSON.stringify(after)}`
      )
    }
  })

/**
 * How far above the used amounts {@link replaySucceedsWithinUsage} sets the
 * limits (each ≥ 0).
 *
 * @since 0.2.0
 * @category Models
 */
export interface Headroom {
  readonly steps: number
  readonly subCalls: number
  readonly tokens: number
}

/**
 * For an answered run: replayed under its policy with `maxSteps`,
 * `maxSubCalls` and the three token limits set to the trace's usage plus
 * `headroom`, the replay answers the same, with the same calls. (The
 * recorded `maxDepth` is kept: a deeper limit would turn the `rlm_query`
 * that ran as `llm_query` at the limit into a child run.) A run that did not
 * answer satisfies it trivially.
 *
 * @since 0.2.0
 * @category Laws
 */
export const replaySucceedsWithinUsage = (
  recorded: RlmTest.Recorded,
  headroom: Headroom = { steps: 0, subCalls: 0, tokens: 0 }
): Effect.Effect<void, LawViolation | Replay.ReplayDivergence | Replay.TraceTampered, Sandbox.Sandbox> =>
  Effect.gen(function* () {
    const law = "replaySucceedsWithinUsage"
    if (!answeredWithinLimits(recorded)) return
    const used = usageOf(recorded.trace)
    const policy = atLeastUsage(recorded, used, headroom)
    const replayed = yield* RlmTest.replay(recorded, { policy })
    if (Either.isLeft(replayed.result)) {
      return yield* violated(
        law,
        `under limits at least the usage ${JSON.stringify(used)} the replay failed: ${replayed.result.left.message}`
      )
    }
    const answer = Either.getOrThrow(recorded.result).answer
    if (replayed.result.right.answer !== answer) {
      return yield* violated(
        law,
        `the replay answered ${JSON.stringify(replayed.result.right.answer)}, not ${JSON.stringify(answer)}`
      )
    }
  })

/**
 * The limits {@link replayFailsBelowUsage} can lower.
 *
 * @since 0.2.0
 * @category Models
 */
export type LowerableLimit = "maxSubCalls" | "maxInputTokens" | "maxTotalTokens"

/** The output tokens of the last model call: the root run's last root call (its final answer). */
const lastOutput = (trace: Trace.Trace): number => {
  const root = Trace.rootRuns(trace)[0]?.runId ?? "run"
  const last = [...trace.events].reverse().find((event) => event._tag === "StepCompleted" && event.runId === root)
  return last?._tag === "StepCompleted" ? (last.usage.outputTokens ?? 0) : 0
}

/**
 * The amount of `limit` the run needed, and the value a limit must stay
 * below to refuse a call: the sub-calls and input tokens used, and for
 * `maxTotalTokens` what sending the last call needed (the tokens used minus
 * that call's output). Budgets refuse a call before it is sent, from its
 * input; its output is only capped, never foreseen, so a total limit between
 * the two lets the last call through with its output cut short.
 */
const neededFor = (trace: Trace.Trace, used: Usage, limit: LowerableLimit) =>
  limit === "maxSubCalls"
    ? used.subCalls
    : limit === "maxInputTokens"
      ? used.inputTokens
      : used.totalTokens - lastOutput(trace) + 1

/**
 * For a run that answered within its limits: with every other limit at the
 * trace's usage ({@link atLeastUsage}), `limit` set below what the run
 * needed (`needed - 1 - below`, at least 0) and `onBudgetExceeded: "fail"`,
 * the replay fails with `BudgetExceeded`
 * for that limit, every call it made is one the trace holds, and the error's
 * partial trace is a prefix of the original ({@link isPrefixOf}). What is
 * needed: the sub-calls made (`maxSubCalls`), the input tokens used
 * (`maxInputTokens`), and for `maxTotalTokens` the tokens used minus the
 * last call's output — a budget refuses a call before it is sent, from its
 * input, and only caps its output, so a total limit less than that output
 * below the usage lets the last call through. A run that did not answer
 * within its limits, or needed none of the limit, satisfies it trivially.
 *
 * `maxSteps` is not among the limits: a run out of steps is asked for an
 * answer, a request the recorded run never made.
 *
 * @since 0.2.0
 * @category Laws
 */
export const replayFailsBelowUsage = (
  recorded: RlmTest.Recorded,
  limit: LowerableLimit,
  below = 0
): Effect.Effect<void, LawViolation | Replay.ReplayDivergence | Replay.TraceTampered, Sandbox.Sandbox> =>
  Effect.gen(function* () {
    const law = "replayFailsBelowUsage"
    if (!answeredWithinLimits(recorded)) return
    const usage = usageOf(recorded.trace)
    const used = neededFor(recorded.trace, usage, limit)
    if (used <= 0) return
    const value = Math.max(0, used - 1 - below)
    const policy = Policy.make({
      ...fieldsOf(atLeastUsage(recorded, usage, { steps: 0, subCalls: 0, tokens: 0 })),
      onBudgetExceeded: "fail",
      [limit]: value
    })
    const replayed = yield* RlmTest.replay(recorded, { policy, complete: false })
    if (Either.isRight(replayed.result)) {
      return yield* violated(law, `with ${limit} = ${value} (used ${used}) the replay answered`)
    }
    const error = replayed.result.left
    if (error._tag !== "BudgetExceeded" || error.limit !== limit) {
      return yield* violated(
        law,
        `with ${limit} = ${value} (used ${used}) the replay failed with ${error._tag}${
          error._tag === "BudgetExceeded" ? ` ${error.limit}` : ""
        }: ${error.message}`
      )
    }
    if (error.trace === undefined) return yield* violated(law, "the BudgetExceeded carries no trace")
    const prefix = isPrefixOf(error.trace, recorded.trace)
    if (Either.isLeft(prefix))
      return yield* violated(law, `the partial trace is no prefix of the original: ${prefix.left}`)
  })

/**
 * The trace decodes to itself from its JSON (`encodeJson` / `decodeJson`)
 * and JSONL (`encodeJsonl` / `decodeJsonl`) texts, and encodes to the same
 * text again.
 *
 * @since 0.2.0
 * @category Laws
 */
export const traceRoundTrips = (
  trace: Trace.Trace
): Effect.Effect<void, LawViolation | Trace.TraceDecodeError | Trace.TraceEncodeError> =>
  Effect.gen(function* () {
    const law = "traceRoundTrips"
    const json = yield* Trace.encodeJson(trace)
    const fromJson = yield* Trace.decodeJson(json)
    const jsonl = yield* Trace.encodeJsonl(trace)
    const fromJsonl = yield* Trace.decodeJsonl(jsonl)
    for (const [name, decoded, again] of [
      ["JSON", fromJson, yield* Trace.encodeJson(fromJson)],
      ["JSONL", fromJsonl, yield* Trace.encodeJsonl(fromJsonl)]
    ] as const) {
      if (decoded.events.length !== trace.events.length || !same(decoded.events, trace.events)) {
        return yield* violated(law, `the trace decoded from ${name} differs from the original`)
      }
      if (again !== (name === "JSON" ? json : jsonl)) {
        return yield* violated(law, `the trace decoded from ${name} encodes to another text`)
      }
    }
  })
