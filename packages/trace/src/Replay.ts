/**
 * Run a recorded run again with no model: an `LlmAdapter` that answers every
 * call from a trace alone.
 *
 * - A root call is answered by its run and step (the call site the run loop
 *   sets, `CallSite`) with that step's recorded reply, tool calls, finish
 *   reason and usage. When the trace holds the request's hash
 *   (`StepCompleted.promptSha256`, format 3) the request must match it.
 * - A sub-call (`llm_query`) is answered by its run, the step whose code made
 *   it and the SHA-256 of its prompt (`SubCall.promptSha256`): concurrent
 *   calls of a batch are matched by hash, not by the order they complete in.
 *   The n-th identical prompt of a step gets the n-th recorded reply.
 * - A child run (`rlm_query`) is matched by its run id: its root calls are
 *   answered like the root run's.
 * - The failed attempts the original adapter retried (`ModelCallRetried`) are
 *   told again through `AttemptObserver`, so they show in the new trace too.
 *
 * A request the trace does not hold fails with `LlmError` reason `"NotFound"`
 * carrying the divergence's message, and the first {@link ReplayDivergence} is
 * kept for {@link Replay.Service.check}, which also fails when the replay asked
 * fewer calls than the trace holds. A trace whose text does not match its own
 * hashes is refused with {@link TraceTampered} before anything runs.
 *
 * ```ts
 * const replayed = Rlm.run(query, context).pipe(
 *   Effect.tap(() => Replay.check),
 *   Effect.provide(Layer.merge(Replay.layer(trace), JavascriptSandbox.layer()))
 * )
 * ```
 *
 * @since 0.2.0
 */
import * as AttemptObserver from "@rlm-runtime/adapters/AttemptObserver"
import * as CallSite from "@rlm-runtime/adapters/CallSite"
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import { sha256 } from "./Hash.js"
import * as LlmCache from "./LlmCache.js"
import type * as Trace from "./Trace.js"
import type * as TraceEvent from "./TraceEvent.js"

/**
 * Why a replayed run left the recorded one.
 *
 * - `UnknownRun`: a call of a run the trace does not hold.
 * - `UnknownStep`: a root call for a step the recorded run did not make.
 * - `PromptMismatch`: the request differs from the recorded one (its hash).
 * - `UnexpectedCall`: a sub-call where the recorded step made none (left).
 * - `MissingCalls`: the replay ended without making every recorded call.
 * - `AnswerMismatch`: the replay ended with another answer.
 *
 * @since 0.2.0
 * @category Errors
 */
export const ReplayDivergenceReason = Schema.Literal(
  "UnknownRun",
  "UnknownStep",
  "PromptMismatch",
  "UnexpectedCall",
  "MissingCalls",
  "AnswerMismatch"
)

/**
 * @since 0.2.0
 * @category Errors
 */
export type ReplayDivergenceReason = typeof ReplayDivergenceReason.Type

/**
 * A replayed run asked for something the trace does not hold. `runId` and
 * `step` say where; `expectedSha256` / `actualSha256` are the recorded and
 * the asked request's hashes; `excerpt` shows where the texts part, when the
 * trace holds the recorded text.
 *
 * @since 0.2.0
 * @category Errors
 */
export class ReplayDivergence extends Schema.TaggedError<ReplayDivergence>("@rlm-runtime/trace/ReplayDivergence")(
  "ReplayDivergence",
  {
    reason: ReplayDivergenceReason,
    message: Schema.String,
    runId: Schema.optional(Schema.String),
    step: Schema.optional(Schema.Number),
    role: Schema.optional(LlmAdapter.CallRole),
    expectedSha256: Schema.optional(Schema.String),
    actualSha256: Schema.optional(Schema.String),
    excerpt: Schema.optional(Schema.String)
  }
) {}

/**
 * A trace whose text does not match its own hashes (a reply, a prompt or the
 * context edited after it was recorded): replaying it would not replay the
 * recorded run.
 *
 * @since 0.2.0
 * @category Errors
 */
export class TraceTampered extends Schema.TaggedError<TraceTampered>("@rlm-runtime/trace/TraceTampered")(
  "TraceTampered",
  {
    message: Schema.String,
    runId: Schema.String,
    step: Schema.optional(Schema.Number),
    /** The event and field at fault, such as `"SubCall.reply"`. */
    field: Schema.String,
    recordedSha256: Schema.String,
    actualSha256: Schema.String
  }
) {}

/**
 * One call the replay answered, in the order it was asked.
 *
 * @since 0.2.0
 * @category Models
 */
export interface ReplayedCall {
  readonly runId: string
  readonly step: number
  readonly role: LlmAdapter.CallRole
  readonly promptSha256: string
}

/**
 * @since 0.2.0
 * @category Tags
 */
export class Replay extends Context.Tag("@rlm-runtime/trace/Replay")<Replay, Replay.Service>() {}

/**
 * @since 0.2.0
 */
export declare namespace Replay {
  /**
   * @since 0.2.0
   * @category Models
   */
  export interface Service {
    /** The adapter answering from the trace. */
    readonly adapter: LlmAdapter.LlmAdapter.Service
    /** The first divergence met so far. */
    readonly divergence: Effect.Effect<Option.Option<ReplayDivergence>>
    /** The calls answered so far, in the order they were asked. */
    readonly calls: Effect.Effect<ReadonlyArray<ReplayedCall>>
    /**
     * After the replayed run: fail with the first divergence, else with a
     * `MissingCalls` divergence when a recorded call was never asked.
     */
    readonly check: Effect.Effect<void, ReplayDivergence>
  }
}

// ---------------------------------------------------------------------------
// tampering
// ---------------------------------------------------------------------------

const tampered = (runId: string, step: number | undefined, field: string, recorded: string, actual: string) =>
  new TraceTampered({
    runId,
    ...(step === undefined ? {} : { step }),
    field,
    recordedSha256: recorded,
    actualSha256: actual,
    message: `The trace was changed after it was recorded: ${field} of run ${JSON.stringify(runId)}${
      step === undefined ? "" : ` at step ${step}`
    } has SHA-256 ${actual.slice(0, 12)}… but the trace records ${recorded.slice(0, 12)}…. Replay only a trace as it was written.`
  })

/**
 * Check that every text of the trace matches the hash recorded beside it:
 * sub-call prompts and replies, root replies (format 3) and the run input's
 * context.
 *
 * @since 0.2.0
 * @category Verification
 */
export const verify = (trace: Trace.Trace): Effect.Effect<void, TraceTampered> =>
  Effect.suspend(() => {
    for (const event of trace.events) {
      if (event._tag === "SubCall") {
        const prompt = sha256(event.prompt)
        if (prompt !== event.promptSha256) {
          return Effect.fail(tampered(event.runId, event.parentStep, "SubCall.prompt", event.promptSha256, prompt))
        }
        if (event.reply !== undefined && event.replySha256 !== undefined) {
          const reply = sha256(event.reply)
          if (reply !== event.replySha256) {
            return Effect.fail(tampered(event.runId, event.parentStep, "SubCall.reply", event.replySha256, reply))
          }
        }
      } else if (event._tag === "StepCompleted" && event.replySha256 !== undefined) {
        const reply = sha256(event.reply)
        if (reply !== event.replySha256) {
          return Effect.fail(tampered(event.runId, event.step, "StepCompleted.reply", event.replySha256, reply))
        }
      } else if (event._tag === "RunInput") {
        const context = sha256(event.context)
        if (context !== event.contextSha256) {
          return Effect.fail(tampered(event.runId, undefined, "RunInput.context", event.contextSha256, context))
        }
      }
    }
    return Effect.void
  })

// ---------------------------------------------------------------------------
// excerpts
// ---------------------------------------------------------------------------

const firstDifference = (a: string, b: string): number => {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a.charCodeAt(i) !== b.charCodeAt(i)) return i
  return a.length === b.length ? -1 : n
}

const window = (text: string, at: number) => {
  const start = Math.max(0, at - 30)
  const end = Math.min(text.length, at + 40)
  return `${start > 0 ? "…" : ""}${JSON.stringify(text.slice(start, end))}${end < text.length ? "…" : ""}`
}

/**
 * A short view of where two texts part: a window around the first character
 * that differs, in each text. `undefined` when they are equal.
 *
 * @since 0.2.0
 * @category Excerpts
 */
export const excerpt = (expected: string, actual: string): string | undefined => {
  const at = firstDifference(expected, actual)
  if (at < 0) return undefined
  return `at character ${at}: expected ${window(expected, at)}, got ${window(actual, at)}`
}

const textOf = (message: LlmAdapter.ChatMessage) =>
  message.toolCalls === undefined || message.toolCalls.length === 0
    ? message.content
    : `${message.content}${message.toolCalls.map((call) => `\n[${call.name}] ${call.arguments}`).join("")}`

/**
 * Where a root request parts from what the trace knows of it: the question
 * (`RunStarted.query`), then the replies of the earlier steps. The trace
 * holds only the hash of the rest (the system prompt, the REPL output).
 */
const rootExcerpt = (
  started: TraceEvent.RunStarted | undefined,
  earlier: ReadonlyArray<TraceEvent.StepCompleted>,
  request: LlmAdapter.ChatRequest
): string => {
  const firstUser = request.messages.find((message) => message.role === "user")
  // The first turn holds the question on a line of its own, "Question: <query>" (see core's `Prompts.firstTurn`).
  if (
    started !== undefined &&
    firstUser !== undefined &&
    !firstUser.content.includes(`\nQuestion: ${started.query}\n`)
  ) {
    const at = firstUser.content.indexOf("\nQuestion: ")
    const actual = at < 0 ? firstUser.content : firstUser.content.slice(at + "\nQuestion: ".length)
    return `the question differs, ${excerpt(started.query, actual) ?? ""}`
  }
  const replies = request.messages.filter((message) => message.role === "assistant")
  for (const [i, step] of earlier.entries()) {
    const message = replies[i]
    if (message === undefined) return `the request holds ${replies.length} earlier replies, the trace ${earlier.length}`
    const text = excerpt(step.reply, message.content)
    if (text !== undefined) return `the reply of step ${step.step} differs, ${text}`
  }
  const last = request.messages.at(-1)
  return `the question and the earlier replies match; the difference is in the system prompt, the REPL output or the feedback the model was shown (the trace holds only their hash). The last message now begins ${window(last === undefined ? "" : textOf(last), 0)}`
}

// ---------------------------------------------------------------------------
// the index of a trace
// ---------------------------------------------------------------------------

interface SubEntry {
  readonly event: TraceEvent.SubCall
  readonly retries: Array<TraceEvent.ModelCallRetried>
}

interface Index {
  readonly started: Map<string, TraceEvent.RunStarted>
  /** runId → step → its StepCompleted (the last one recorded for the step). */
  readonly steps: Map<string, Map<number, TraceEvent.StepCompleted>>
  /** `runId#step` → the llm_query sub-calls made by that step, in recording order. */
  readonly subs: Map<string, Array<SubEntry>>
  /** `runId#step` → the root call's retried attempts. */
  readonly rootRetries: Map<string, Array<TraceEvent.ModelCallRetried>>
  /** runId → its RunFinished. */
  readonly finished: Map<string, TraceEvent.RunFinished>
  readonly rootModel: string
  readonly subModel: string
}

const siteKey = (runId: string, step: number) => `${runId}#${step}`

const indexOf = (trace: Trace.Trace): Index => {
  const started = new Map<string, TraceEvent.RunStarted>()
  const steps = new Map<string, Map<number, TraceEvent.StepCompleted>>()
  const subs = new Map<string, Array<SubEntry>>()
  const rootRetries = new Map<string, Array<TraceEvent.ModelCallRetried>>()
  const finished = new Map<string, TraceEvent.RunFinished>()
  // A sub-call's retried attempts are recorded before its SubCall: kept until it comes.
  const waiting = new Map<string, Array<TraceEvent.ModelCallRetried>>()
  let subModel: string | undefined
  for (const event of trace.events) {
    switch (event._tag) {
      case "RunStarted":
        started.set(event.runId, event)
        break
      case "RunFinished":
        finished.set(event.runId, event)
        break
      case "StepCompleted": {
        const byStep = steps.get(event.runId) ?? new Map<number, TraceEvent.StepCompleted>()
        byStep.set(event.step, event)
        steps.set(event.runId, byStep)
        break
      }
      case "SubCall": {
        if (event.kind !== "llm_query") break
        subModel ??= event.model
        const key = siteKey(event.runId, event.parentStep)
        const list = subs.get(key) ?? []
        list.push({ event, retries: waiting.get(key)?.splice(0) ?? [] })
        subs.set(key, list)
        break
      }
      case "ModelCallRetried": {
        const key = siteKey(event.runId, event.step)
        const target = event.role === "root" ? rootRetries : waiting
        target.set(key, [...(target.get(key) ?? []), event])
        break
      }
      default:
        break
    }
  }
  const input = trace.events.find((event): event is TraceEvent.RunInput => event._tag === "RunInput")
  const rootModel = input?.models?.root ?? [...started.values()][0]?.model ?? "replay"
  return {
    started,
    steps,
    subs,
    rootRetries,
    finished,
    rootModel,
    subModel: input?.models?.sub ?? subModel ?? rootModel
  }
}

const isReason = Schema.is(LlmAdapter.LlmErrorReason)

const replayRetries = (retries: ReadonlyArray<TraceEvent.ModelCallRetried>) =>
  Effect.forEach(
    retries,
    (retry) =>
      AttemptObserver.report(
        new AttemptObserver.AttemptFailed(
          {
            attempt: retry.attempt,
            reason: isReason(retry.reason) ? retry.reason : "Unknown",
            message: retry.message,
            ...(retry.status !== undefined ? { status: retry.status } : {}),
            delayMs: retry.delayMs,
            usage: new LlmAdapter.Usage(retry.usage)
          },
          true
        )
      ),
    { discard: true }
  )

const rootResponse = (step: TraceEvent.StepCompleted) =>
  new LlmAdapter.ChatResponse(
    {
      text: step.reply,
      model: step.model,
      usage: new LlmAdapter.Usage(step.usage),
      ...(step.finishReason !== undefined ? { finishReason: step.finishReason } : {}),
      ...(step.toolCalls !== undefined && step.toolCalls.length > 0
        ? { toolCalls: step.toolCalls.map((call) => new LlmAdapter.ToolCall(call, true)) }
        : {})
    },
    true
  )

const subPrompt = (request: LlmAdapter.ChatRequest) => {
  const last = request.messages.at(-1)
  return last === undefined ? "" : last.content
}

const where = (runId: string, step: number) => `run ${JSON.stringify(runId)}, step ${step}`

// ---------------------------------------------------------------------------
// constructors
// ---------------------------------------------------------------------------

/**
 * @since 0.2.0
 * @category Models
 */
export interface Options {
  /**
   * The model name `model(role)` reports (budgets and prices are keyed on
   * it). Default: the names `RunInput.models` recorded, else the root run's
   * `RunStarted.model` and the first sub-call's model.
   */
  readonly model?: string | ((role: LlmAdapter.CallRole) => string) | undefined
}

/**
 * Check the trace ({@link verify}) and build the replay over it.
 *
 * @since 0.2.0
 * @category Constructors
 */
export const make = (trace: Trace.Trace, options: Options = {}): Effect.Effect<Replay.Service, TraceTampered> =>
  Effect.gen(function* () {
    yield* verify(trace)
    const index = indexOf(trace)
    const fixed = options.model
    const modelOf: (role: LlmAdapter.CallRole) => string =
      fixed === undefined
        ? (role) => (role === "root" ? index.rootModel : index.subModel)
        : typeof fixed === "string"
          ? () => fixed
          : fixed
    const usedSteps = yield* Ref.make(new Set<string>())
    const usedSubs = yield* Ref.make(new Set<TraceEvent.SubCall>())
    const calls = yield* Ref.make<ReadonlyArray<ReplayedCall>>([])
    const first = yield* Ref.make(Option.none<ReplayDivergence>())

    const diverge = (divergence: ReplayDivergence) =>
      Effect.zipRight(
        Ref.update(first, (d) => (Option.isSome(d) ? d : Option.some(divergence))),
        Effect.fail(
          new LlmAdapter.LlmError({
            reason: "NotFound",
            message: `Replay diverged from the trace: ${divergence.message}`
          })
        )
      )
    const answered = (call: ReplayedCall) => Ref.update(calls, (list) => [...list, call])

    const root = (request: LlmAdapter.ChatRequest, site: CallSite.CallSite | undefined, actual: string) =>
      Effect.gen(function* () {
        const used = yield* Ref.get(usedSteps)
        let runId: string
        let recorded: TraceEvent.StepCompleted | undefined
        if (site === undefined) {
          // Outside a run loop: the first unused step with the same request hash.
          for (const [id, byStep] of index.steps) {
            for (const step of byStep.values()) {
              if (recorded === undefined && step.promptSha256 === actual && !used.has(siteKey(id, step.step))) {
                recorded = step
              }
            }
          }
          if (recorded === undefined) {
            return yield* diverge(
              new ReplayDivergence({
                reason: "PromptMismatch",
                role: "root",
                actualSha256: actual,
                message: `a root call with request hash ${actual.slice(0, 12)}… (made outside a run, with no call site) matches no step of the trace.`
              })
            )
          }
          runId = recorded.runId
        } else {
          runId = site.runId
          const byStep = index.steps.get(runId)
          if (byStep === undefined) {
            return yield* diverge(
              new ReplayDivergence({
                reason: "UnknownRun",
                runId,
                step: site.step,
                role: "root",
                actualSha256: actual,
                message: `${where(runId, site.step)}: the trace holds no run ${JSON.stringify(runId)} (it holds ${[
                  ...index.steps.keys()
                ]
                  .map((id) => JSON.stringify(id))
                  .join(", ")}).`
              })
            )
          }
          recorded = byStep.get(site.step)
          const failed = index.finished.get(runId)
          const key = siteKey(runId, site.step)
          if (
            recorded === undefined &&
            !used.has(key) &&
            failed?.status === "failed" &&
            site.step === Math.max(0, ...byStep.keys()) + 1
          ) {
            // The recorded run failed on this call (the model failed): fail it again.
            yield* Ref.update(usedSteps, (set) => new Set(set).add(key))
            yield* replayRetries(index.rootRetries.get(key) ?? [])
            yield* answered({ runId, step: site.step, role: "root", promptSha256: actual })
            return yield* new LlmAdapter.LlmError({
              reason: "Unknown",
              message: failed.error ?? "The recorded root call failed."
            })
          }
          if (recorded === undefined || used.has(key)) {
            return yield* diverge(
              new ReplayDivergence({
                reason: "UnknownStep",
                runId,
                step: site.step,
                role: "root",
                actualSha256: actual,
                message: `${where(runId, site.step)}: the root model was asked for a reply the trace does not hold (the recorded run made ${byStep.size} step(s)).`
              })
            )
          }
          if (recorded.promptSha256 !== undefined && recorded.promptSha256 !== actual) {
            const earlier = [...byStep.values()].filter((step) => step.step < site.step)
            const detail = rootExcerpt(index.started.get(runId), earlier, request)
            return yield* diverge(
              new ReplayDivergence({
                reason: "PromptMismatch",
                runId,
                step: site.step,
                role: "root",
                expectedSha256: recorded.promptSha256,
                actualSha256: actual,
                excerpt: detail,
                message: `${where(runId, site.step)}: the root request differs from the recorded one (expected hash ${recorded.promptSha256.slice(0, 12)}…, got ${actual.slice(0, 12)}…): ${detail}`
              })
            )
          }
        }
        const step = recorded
        yield* Ref.update(usedSteps, (set) => new Set(set).add(siteKey(runId, step.step)))
        yield* replayRetries(index.rootRetries.get(siteKey(runId, step.step)) ?? [])
        yield* answered({ runId, step: step.step, role: "root", promptSha256: actual })
        return rootResponse(step)
      })

    const sub = (request: LlmAdapter.ChatRequest, site: CallSite.CallSite | undefined) =>
      Effect.gen(function* () {
        const prompt = subPrompt(request)
        const actual = sha256(prompt)
        const used = yield* Ref.get(usedSubs)
        const candidates =
          site === undefined ? [...index.subs.values()].flat() : (index.subs.get(siteKey(site.runId, site.step)) ?? [])
        const left = candidates.filter((entry) => !used.has(entry.event))
        const match = left.find((entry) => entry.event.promptSha256 === actual)
        if (match === undefined) {
          const runId = site?.runId
          const step = site?.step
          const place = runId === undefined || step === undefined ? "a sub-call made outside a run" : where(runId, step)
          if (left.length === 0) {
            return yield* diverge(
              new ReplayDivergence({
                reason: site !== undefined && !index.started.has(site.runId) ? "UnknownRun" : "UnexpectedCall",
                ...(runId !== undefined ? { runId } : {}),
                ...(step !== undefined ? { step } : {}),
                role: "sub",
                actualSha256: actual,
                message: `${place}: a sub-call the trace does not hold (prompt hash ${actual.slice(0, 12)}…, ${JSON.stringify(prompt.slice(0, 60))}); the recorded step made no more sub-calls.`
              })
            )
          }
          // The recorded prompt closest to the one asked: the longest common start.
          const closest = left.reduce((best, entry) =>
            firstDifference(entry.event.prompt, prompt) > firstDifference(best.event.prompt, prompt) ? entry : best
          )
          const detail = excerpt(closest.event.prompt, prompt) ?? ""
          return yield* diverge(
            new ReplayDivergence({
              reason: "PromptMismatch",
              ...(runId !== undefined ? { runId } : {}),
              ...(step !== undefined ? { step } : {}),
              role: "sub",
              expectedSha256: closest.event.promptSha256,
              actualSha256: actual,
              excerpt: detail,
              message: `${place}: a sub-call prompt the trace does not hold (expected hash ${closest.event.promptSha256.slice(0, 12)}…, got ${actual.slice(0, 12)}…): ${detail}`
            })
          )
        }
        const recorded = match.event
        yield* Ref.update(usedSubs, (set) => new Set(set).add(recorded))
        yield* replayRetries(match.retries)
        yield* answered({ runId: recorded.runId, step: recorded.parentStep, role: "sub", promptSha256: actual })
        if (recorded.reply === undefined) {
          return yield* new LlmAdapter.LlmError({
            reason: isReason(recorded.errorReason) ? recorded.errorReason : "Unknown",
            message: recorded.error ?? "the call failed"
          })
        }
        return new LlmAdapter.ChatResponse(
          {
            text: recorded.reply,
            model: recorded.model,
            usage: new LlmAdapter.Usage(recorded.usage),
            ...(recorded.finishReason !== undefined ? { finishReason: recorded.finishReason } : {})
          },
          true
        )
      })

    const adapter = LlmAdapter.make({
      model: modelOf,
      chat: (request) =>
        Effect.flatMap(CallSite.get, (site) =>
          request.role === "root" ? root(request, site, LlmCache.keyOf(request)) : sub(request, site)
        )
    })

    const missing = Effect.gen(function* () {
      const steps = yield* Ref.get(usedSteps)
      for (const [runId, byStep] of index.steps) {
        for (const step of byStep.keys()) {
          if (!steps.has(siteKey(runId, step))) {
            return Option.some(
              new ReplayDivergence({
                reason: "MissingCalls",
                runId,
                step,
                role: "root",
                message: `${where(runId, step)}: the replay ended without asking for this recorded root reply.`
              })
            )
          }
        }
      }
      const subs = yield* Ref.get(usedSubs)
      for (const list of index.subs.values()) {
        for (const { event } of list) {
          // A sub-call recorded with an error may have been refused before it was sent (a budget limit).
          if (event.reply !== undefined && !subs.has(event)) {
            return Option.some(
              new ReplayDivergence({
                reason: "MissingCalls",
                runId: event.runId,
                step: event.parentStep,
                role: "sub",
                expectedSha256: event.promptSha256,
                message: `${where(event.runId, event.parentStep)}: the replay ended without making the recorded sub-call ${JSON.stringify(event.prompt.slice(0, 60))}.`
              })
            )
          }
        }
      }
      return Option.none<ReplayDivergence>()
    })

    return {
      adapter,
      divergence: Ref.get(first),
      calls: Ref.get(calls),
      check: Effect.flatMap(Ref.get(first), (d) =>
        Option.isSome(d)
          ? Effect.fail(d.value)
          : Effect.flatMap(missing, (m) => (Option.isSome(m) ? Effect.fail(m.value) : Effect.void))
      )
    }
  })

/**
 * The replay as a layer: the `LlmAdapter` answering from the trace, and the
 * {@link Replay} service to check it afterwards. Fails with
 * {@link TraceTampered} when it is built, before anything runs.
 *
 * @since 0.2.0
 * @category Layers
 */
export const layer = (
  trace: Trace.Trace,
  options?: Options
): Layer.Layer<LlmAdapter.LlmAdapter | Replay, TraceTampered> =>
  Layer.effectContext(
    Effect.map(make(trace, options), (replay) =>
      Context.make(Replay, replay).pipe(Context.add(LlmAdapter.LlmAdapter, replay.adapter))
    )
  )

/**
 * Check the replay in context (see {@link Replay.Service.check}).
 *
 * @since 0.2.0
 * @category Accessors
 */
export const check: Effect.Effect<void, ReplayDivergence, Replay> = Effect.flatMap(Replay, (replay) => replay.check)

/**
 * Check a replayed answer against the one the trace recorded for its root run
 * (the `FinalAnswer` of run `runId`, default `"run"`).
 *
 * @since 0.2.0
 * @category Verification
 */
export const checkAnswer = (
  trace: Trace.Trace,
  answer: string,
  runId = "run"
): Effect.Effect<void, ReplayDivergence> => {
  const recorded = [...trace.events]
    .reverse()
    .find((event): event is TraceEvent.FinalAnswer => event._tag === "FinalAnswer" && event.runId === runId)
  if (recorded === undefined) {
    return Effect.fail(
      new ReplayDivergence({
        reason: "AnswerMismatch",
        runId,
        message: `run ${JSON.stringify(runId)}: the replay answered, but the recorded run gave no final answer.`
      })
    )
  }
  const detail = excerpt(recorded.answer, answer)
  return detail === undefined
    ? Effect.void
    : Effect.fail(
        new ReplayDivergence({
          reason: "AnswerMismatch",
          runId,
          step: recorded.step,
          expectedSha256: sha256(recorded.answer),
          actualSha256: sha256(answer),
          excerpt: detail,
          message: `run ${JSON.stringify(runId)}: the replay's answer differs from the recorded one: ${detail}`
        })
      )
}
