/**
 * The server's runs, by id. Every run the server does (a chat completion, a
 * `POST /v1/runs`) is started here: it takes a place from `Admission` (or is
 * refused with `Overloaded` at once), runs `Rlm.run` in the registry's scope
 * (so it outlives the request that started it), and records every trace event
 * as it happens, to
 *
 * - an in-memory buffer, numbered from 1, that `events(after)` replays and
 *   then follows live (Server-Sent Events resumed with `Last-Event-ID`), and
 * - `<tracesDir>/<run id>.jsonl`, one event per line, written before the next
 *   event: an interrupted run leaves its partial trace behind.
 *
 * `interrupt` stops a run (its `RunFinished` "interrupted" events are still
 * recorded); `drain` is the graceful shutdown: no new runs, the ones in flight
 * get a grace period to finish, then are interrupted, their traces written.
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import type * as Budget from "@rlm-runtime/core/Budget"
import * as Policy from "@rlm-runtime/core/Policy"
import * as Rlm from "@rlm-runtime/core/Rlm"
import type { RlmError } from "@rlm-runtime/core/RlmError"
import type * as RlmContext from "@rlm-runtime/core/RlmContext"
import { LlmAdapter } from "@rlm-runtime/adapters/LlmAdapter"
import { Sandbox } from "@rlm-runtime/sandbox/Sandbox"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import { sha256 } from "@rlm-runtime/trace/Hash"
import * as TraceRecorder from "@rlm-runtime/trace/TraceRecorder"
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type * as Admission from "./Admission.js"

/**
 * @since 0.1.0
 * @category Models
 */
export type RunStatus = "queued" | "running" | "succeeded" | "failed" | "interrupted"

/**
 * Why a run did not answer, as data (the run's typed error, summarized).
 *
 * @since 0.1.0
 * @category Models
 */
export type RunError =
  | { readonly _tag: "BudgetExceeded"; readonly limit: string; readonly message: string }
  | { readonly _tag: "RunFailed"; readonly reason: string; readonly message: string }
  | { readonly _tag: "Interrupted"; readonly message: string }
  | { readonly _tag: "Defect"; readonly message: string }

/**
 * A run's state, as data.
 *
 * @since 0.1.0
 * @category Models
 */
export interface RunView {
  readonly id: string
  readonly status: RunStatus
  readonly query: string
  readonly model: string
  /** Unix ms. */
  readonly createdAt: number
  readonly startedAt: number | undefined
  readonly finishedAt: number | undefined
  readonly answer: string | undefined
  /** The best answer known when a failed run stopped. */
  readonly partialAnswer: string | undefined
  readonly steps: number | undefined
  /** Usage of the whole run tree (from the trace when the run failed). */
  readonly totals: Budget.Totals | undefined
  readonly error: RunError | undefined
  /** Trace events recorded so far. */
  readonly events: number
  readonly tracePath: string
}

/**
 * One item of a run's event stream: a trace event numbered from 1, then, once,
 * the run's final state.
 *
 * @since 0.1.0
 * @category Models
 */
export type RunItem =
  | { readonly _tag: "Event"; readonly seq: number; readonly event: TraceEvent.TraceEvent }
  | { readonly _tag: "End"; readonly seq: number; readonly view: RunView }

/**
 * @since 0.1.0
 * @category Models
 */
export interface RunHandle {
  readonly id: string
  readonly view: Effect.Effect<RunView>
  /** The final state, once the run has ended. */
  readonly await: Effect.Effect<RunView>
  /** The events numbered above `after`, then the live ones, then `End`. */
  readonly events: (after: number) => Stream.Stream<RunItem>
  /** Stop the run; resolves once it has stopped and its trace is written. */
  readonly interrupt: Effect.Effect<RunView>
}

/**
 * The server is shutting down: no new runs.
 *
 * @since 0.1.0
 * @category Errors
 */
export class Draining extends Data.TaggedError("Draining")<{}> {}

/**
 * @since 0.1.0
 * @category Models
 */
export interface StartOptions {
  readonly query: string
  readonly context: RlmContext.Input
  /** The model name the run is reported under (the request's `model`). */
  readonly model: string
}

/**
 * @since 0.1.0
 * @category Models
 */
export interface Options {
  readonly tracesDir: string
  readonly runOptions: Rlm.RunOptions
  readonly admission: Admission.Admission
  /** Finished runs kept for `GET /v1/runs/:id` (oldest forgotten first; their trace files stay). */
  readonly maxRetained?: number | undefined
}

/**
 * @since 0.1.0
 * @category Models
 */
export interface RunRegistry {
  readonly start: (options: StartOptions) => Effect.Effect<RunHandle, Admission.Overloaded | Draining>
  readonly get: (id: string) => Option.Option<RunHandle>
  /** Runs not yet ended. */
  readonly active: Effect.Effect<number>
  /**
   * Graceful shutdown: refuse new runs, wait up to `grace` for those in flight,
   * then interrupt the rest (their traces written).
   */
  readonly drain: (grace: Duration.DurationInput) => Effect.Effect<void>
  readonly tracesDir: string
}

interface Signal {
  readonly count: number
  readonly done: boolean
}

const newRunId = () => `run_${randomBytes(12).toString("hex")}`

/**
 * A run's typed error as data.
 *
 * @since 0.1.0
 * @category Models
 */
export const runErrorOf = (e: RlmError): RunError =>
  e._tag === "BudgetExceeded"
    ? { _tag: "BudgetExceeded", limit: e.limit, message: e.message }
    : { _tag: "RunFailed", reason: e.reason, message: e.message }

const errorOf = (cause: Cause.Cause<RlmError>): RunError => {
  if (Cause.isInterruptedOnly(cause)) return { _tag: "Interrupted", message: "the run was interrupted." }
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) return runErrorOf(failure.value)
  return { _tag: "Defect", message: Cause.pretty(cause).split("\n")[0] ?? "internal error" }
}

const partialOf = (cause: Cause.Cause<RlmError>): string | undefined => {
  const failure = Cause.failureOption(cause)
  return Option.isSome(failure) ? Option.getOrUndefined(failure.value.partialAnswer) : undefined
}

/** Totals out of a trace (a failed or interrupted run has no `Answered`). */
const totalsOf = (events: ReadonlyArray<TraceEvent.TraceEvent>): Budget.Totals => {
  const usage = Trace.totalUsage(events)
  let rootCalls = 0
  let subCalls = 0
  for (const e of events) {
    if (e._tag === "StepCompleted") rootCalls++
    else if (e._tag === "SubCall" && e.kind === "llm_query") subCalls++
  }
  const input = usage.inputTokens ?? 0
  const output = usage.outputTokens ?? 0
  return {
    rootCalls,
    subCalls,
    inputTokens: input,
    outputTokens: output,
    totalTokens: usage.totalTokens ?? input + output,
    costUsd: 0,
    unknownUsageCalls: 0,
    unpricedCalls: 0
  }
}

/**
 * The longest context recorded in a trace's `RunInput` (16 MiB): a run over a
 * bigger one (an uploaded context used by many requests) keeps its trace
 * small and cannot be replayed with `rlm replay`.
 *
 * @since 0.1.0
 * @category Constants
 */
export const maxRecordedContextChars = 16 * 1024 * 1024

/** The `RunInput` `rlm replay` needs, for a run over a text context of at most {@link maxRecordedContextChars}. */
const runInputOf = (start: StartOptions, runOptions: Rlm.RunOptions) =>
  Effect.gen(function* () {
    if (typeof start.context !== "string" || start.context.length > maxRecordedContextChars) return undefined
    const adapter = yield* LlmAdapter
    const sandbox = yield* Sandbox
    const policy =
      runOptions.policy instanceof Policy.Policy ? runOptions.policy : new Policy.Policy(runOptions.policy ?? {})
    return new TraceEvent.RunInput({
      runId: "run",
      query: start.query,
      context: start.context,
      contextSha256: sha256(start.context),
      // As `rlm run --trace` writes it (its `--sandbox` value), so that `rlm replay` reads it.
      language: sandbox.language === "javascript" ? "js" : sandbox.language,
      protocol: runOptions.protocol ?? "fenced",
      // Through JSON: the encoded policy's absent fields are `undefined`, which JSON drops.
      policy: JSON.parse(JSON.stringify(Schema.encodeSync(Policy.Policy)(policy))),
      ...(runOptions.systemPrompt !== undefined ? { systemPrompt: runOptions.systemPrompt } : {}),
      ...(runOptions.requireReplBeforeFinal !== undefined
        ? { requireReplBeforeFinal: runOptions.requireReplBeforeFinal }
        : {}),
      ...(runOptions.execTimeout !== undefined
        ? { execTimeoutMs: Duration.toMillis(Duration.decode(runOptions.execTimeout)) }
        : {}),
      ...(runOptions.subCalls === false ? { subCalls: false } : {}),
      models: { root: adapter.model("root"), sub: adapter.model("sub") }
    })
  })

/**
 * @since 0.1.0
 * @category Constructors
 */
export const make = (options: Options): Effect.Effect<RunRegistry, never, Scope.Scope | LlmAdapter | Sandbox> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const context = yield* Effect.context<LlmAdapter | Sandbox>()
    const tracesDir = NodePath.resolve(options.tracesDir)
    yield* Effect.promise(() => NodeFs.promises.mkdir(tracesDir, { recursive: true, mode: 0o700 }))
    const maxRetained = options.maxRetained ?? 1000
    const runs = new Map<string, { readonly handle: RunHandle; readonly done: Deferred.Deferred<RunView> }>()
    const fibers = new Map<string, Fiber.RuntimeFiber<void>>()
    const draining = yield* Ref.make(false)

    const forget = () => {
      if (runs.size <= maxRetained) return Effect.void
      return Effect.forEach(
        [...runs.entries()],
        ([id, run]) =>
          Effect.map(Deferred.isDone(run.done), (done) => {
            if (done && runs.size > maxRetained) runs.delete(id)
          }),
        { discard: true }
      )
    }

    const start = (start: StartOptions) =>
      Effect.gen(function* () {
        if (yield* Ref.get(draining)) return yield* new Draining()
        const slot = yield* options.admission.reserve
        const id = newRunId()
        const tracePath = NodePath.join(tracesDir, `${id}.jsonl`)
        const view = yield* Ref.make<RunView>({
          id,
          status: "queued",
          query: start.query,
          model: start.model,
          createdAt: Date.now(),
          startedAt: undefined,
          finishedAt: undefined,
          answer: undefined,
          partialAnswer: undefined,
          steps: undefined,
          totals: undefined,
          error: undefined,
          events: 0,
          tracePath
        })
        const buffer: Array<TraceEvent.TraceEvent> = []
        const signal = yield* SubscriptionRef.make<Signal>({ count: 0, done: false })
        const done = yield* Deferred.make<RunView>()

        const base: TraceRecorder.TraceRecorder.Service = {
          record: (event) =>
            Effect.suspend(() => {
              // The run's input (with its whole context) goes to the trace file only: not kept in memory with
              // the finished run, nor sent to event streams.
              if (event._tag === "RunInput") return Effect.void
              buffer.push(event)
              const count = buffer.length
              return Effect.zipRight(
                Ref.update(view, (v) => ({ ...v, events: count })),
                SubscriptionRef.update(signal, (s) => ({ ...s, count }))
              )
            }),
          events: Effect.sync(() => [...buffer]),
          snapshot: Effect.sync(() => Trace.make(buffer))
        }

        const finish = (exit: Exit.Exit<Rlm.RunResult, RlmError>) =>
          Effect.gen(function* () {
            const final = yield* Ref.updateAndGet(view, (v) =>
              Exit.isSuccess(exit)
                ? {
                    ...v,
                    status: "succeeded" as const,
                    finishedAt: Date.now(),
                    answer: exit.value.answer,
                    steps: exit.value.steps,
                    totals: exit.value.totals
                  }
                : {
                    ...v,
                    status: Cause.isInterruptedOnly(exit.cause) ? ("interrupted" as const) : ("failed" as const),
                    finishedAt: Date.now(),
                    error: errorOf(exit.cause),
                    partialAnswer: partialOf(exit.cause),
                    totals: totalsOf(buffer)
                  }
            )
            yield* SubscriptionRef.update(signal, (s) => ({ ...s, done: true }))
            yield* Deferred.succeed(done, final)
          })

        const body = Effect.gen(function* () {
          const recorder = yield* TraceRecorder.tee(base, tracePath).pipe(
            Effect.provide(NodeFileSystem.layer),
            Effect.orElseSucceed(() => base)
          )
          const input = yield* runInputOf(start, options.runOptions)
          if (input !== undefined) yield* recorder.record(input)
          return yield* Rlm.run(start.query, start.context, options.runOptions).pipe(
            Effect.provideService(TraceRecorder.TraceRecorder, recorder)
          )
        }).pipe(Effect.scoped)

        const markRunning = Ref.update(view, (v) => ({ ...v, status: "running" as const, startedAt: Date.now() }))
        const fiber = yield* slot.run(body, markRunning).pipe(
          Effect.provide(context),
          // A finalizer: it runs also when the run is interrupted.
          Effect.onExit(finish),
          Effect.ensuring(Effect.sync(() => fibers.delete(id))),
          Effect.exit,
          Effect.asVoid,
          Effect.forkIn(scope)
        )
        fibers.set(id, fiber)

        const events = (after: number): Stream.Stream<RunItem> =>
          signal.changes.pipe(
            Stream.mapAccum(
              Math.max(0, Math.floor(after)),
              (cursor, s): [number, { readonly items: ReadonlyArray<RunItem>; readonly done: boolean }] => {
                const items: Array<RunItem> = []
                for (let i = cursor; i < s.count; i++) {
                  items.push({ _tag: "Event", seq: i + 1, event: buffer[i] as TraceEvent.TraceEvent })
                }
                return [Math.max(cursor, s.count), { items, done: s.done }]
              }
            ),
            Stream.takeUntil((batch) => batch.done),
            Stream.flatMap((batch) =>
              batch.done
                ? Stream.concat(
                    Stream.fromIterable(batch.items),
                    Stream.fromEffect(
                      Effect.map(Deferred.await(done), (v): RunItem => ({ _tag: "End", seq: v.events + 1, view: v }))
                    )
                  )
                : Stream.fromIterable(batch.items)
            )
          )

        const handle: RunHandle = {
          id,
          view: Ref.get(view),
          await: Deferred.await(done),
          events,
          interrupt: Effect.zipRight(Fiber.interrupt(fiber), Deferred.await(done))
        }
        runs.set(id, { handle, done })
        yield* forget()
        return handle
      })

    const drain = (grace: Duration.DurationInput) =>
      Effect.gen(function* () {
        yield* Ref.set(draining, true)
        const inFlight = [...fibers.values()]
        if (inFlight.length === 0) return
        // Interruptible: a finalizer runs uninterruptibly, and the timeout must be able to stop the waiting.
        yield* Fiber.awaitAll(inFlight).pipe(Effect.interruptible, Effect.timeout(grace), Effect.ignore)
        yield* Fiber.interruptAll([...fibers.values()])
      })

    yield* Effect.addFinalizer(() => drain(0))

    return {
      start,
      get: (id) => Option.map(Option.fromNullable(runs.get(id)), (run) => run.handle),
      active: Effect.sync(() => fibers.size),
      drain,
      tracesDir
    }
  })
