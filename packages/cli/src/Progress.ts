/**
 * A `TraceRecorder` that keeps every event in memory (for `--trace`) and
 * prints one short progress line per step to stderr: the step number, how
 * many code blocks ran and failed, the sub-calls made, and how long it took;
 * and one line per failed model-call attempt the adapter retries.
 * The first line (the root run started) also says which wall the sandbox runs
 * behind (`isolation: namespace` or `isolation: process`).
 *
 * The lines carry text of the model's (feedback, errors): each one goes
 * through `TerminalText.sanitize` before it is written (and `rlm` sanitizes
 * every stderr line again), so none of it reaches a terminal as a control
 * sequence.
 *
 * @since 0.1.0
 */
import * as Trace from "@rlm-runtime/trace/Trace"
import type * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import { TraceRecorder } from "@rlm-runtime/trace/TraceRecorder"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as TerminalText from "./TerminalText.js"

/**
 * @since 0.1.0
 * @category Models
 */
export interface Options {
  /** Print nothing; only collect the events. */
  readonly quiet?: boolean | undefined
  /** Where a progress line goes. Default: `Console.error` (stderr). */
  readonly write?: ((line: string) => Effect.Effect<void>) | undefined
}

/**
 * What the formatter remembers between events: sub-calls made since the last
 * step of each run.
 *
 * @since 0.1.0
 * @category Models
 */
export interface State {
  readonly subCalls: ReadonlyMap<string, number>
  readonly subCallErrors: ReadonlyMap<string, number>
  /** The final answer of a run, told with the step that gave it. */
  readonly finals: ReadonlyMap<string, string>
  /** The last step printed for each run. */
  readonly steps: ReadonlyMap<string, number>
  /** The wall the run's sandbox runs behind, once known (told on the root run's first line). */
  readonly isolation?: string | undefined
}

/**
 * @since 0.1.0
 * @category Constructors
 */
export const initial: State = { subCalls: new Map(), subCallErrors: new Map(), finals: new Map(), steps: new Map() }

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`

const seconds = (ms: number) => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`)

const short = (text: string, max: number) => {
  const flat = text.replace(/\s+/g, " ").trim()
  return flat.length > max ? `${flat.slice(0, max)}…` : flat
}

const depthOf = (runId: string) => runId.split("/").length - 1

const prefix = (runId: string) => {
  const depth = depthOf(runId)
  return depth === 0 ? "rlm: " : `rlm: ${"  ".repeat(depth)}[${runId}] `
}

const bump = (map: ReadonlyMap<string, number>, key: string, by: number) => {
  const next = new Map(map)
  next.set(key, (map.get(key) ?? 0) + by)
  return next
}

const without = <A>(map: ReadonlyMap<string, A>, key: string) => {
  const next = new Map(map)
  next.delete(key)
  return next
}

const tokens = (usage: TraceEvent.TokenUsage) =>
  usage.totalTokens !== undefined ? `, ${plural(usage.totalTokens, "token")}` : ""

/**
 * The progress line for one event (if it gets one) and the next state. Pure,
 * so it can be tested without a run.
 *
 * @since 0.1.0
 * @category Formatting
 */
export const format = (state: State, event: TraceEvent.TraceEvent): readonly [string | undefined, State] => {
  switch (event._tag) {
    case "RunInput":
      return [undefined, state]
    case "RunStarted": {
      const root = event.parentRunId === undefined
      const where = root ? "run started" : `child run started (depth ${event.depth})`
      // `RunStarted` may carry the isolation itself; else the one the CLI read from the Sandbox service.
      const recorded = "isolation" in event && typeof event.isolation === "string" ? event.isolation : undefined
      const isolation = root ? (recorded ?? state.isolation) : undefined
      return [
        `${prefix(event.runId)}${where}: model ${event.model}, ${event.language} sandbox${
          isolation !== undefined ? `, isolation: ${isolation}` : ""
        }, context ${plural(
          event.context.totalChars,
          "char"
        )}${event.context.type === "documents" ? ` in ${plural(event.context.documentCount, "document")}` : ""}`,
        state
      ]
    }
    case "SubCall": {
      return [
        undefined,
        {
          ...state,
          subCalls: bump(state.subCalls, event.runId, 1),
          subCallErrors: event.error === undefined ? state.subCallErrors : bump(state.subCallErrors, event.runId, 1)
        }
      ]
    }
    case "StepCompleted": {
      const calls = state.subCalls.get(event.runId) ?? 0
      const callErrors = state.subCallErrors.get(event.runId) ?? 0
      const failed = event.blocks.filter((b) => b.error !== undefined).length
      const parts = [
        plural(event.blocks.length, "block") + (failed > 0 ? ` (${failed} failed)` : ""),
        plural(calls, "sub-call") + (callErrors > 0 ? ` (${callErrors} failed)` : ""),
        seconds(event.durationMs)
      ]
      const final = state.finals.get(event.runId)
      const note =
        final !== undefined
          ? ` — ${final}`
          : event.feedback !== undefined
            ? ` — told the model: ${short(event.feedback, 100)}`
            : ""
      return [
        `${prefix(event.runId)}step ${event.step}: ${parts.join(", ")}${note}`,
        {
          ...state,
          subCalls: without(state.subCalls, event.runId),
          subCallErrors: without(state.subCallErrors, event.runId),
          finals: without(state.finals, event.runId),
          steps: new Map(state.steps).set(event.runId, event.step)
        }
      ]
    }
    case "ModelCallRetried": {
      const call = event.role === "root" ? "root model call" : "sub-call"
      const status = event.status !== undefined ? ` ${event.status}` : ""
      return [
        `${prefix(event.runId)}step ${event.step}: ${call} to ${event.model} failed (${event.reason}${status}, attempt ${event.attempt}${tokens(
          event.usage
        )}): ${short(event.message, 100)} — retrying in ${seconds(event.delayMs)}`,
        state
      ]
    }
    case "FinalAnswer": {
      const what = `final answer (${event.source}, ${plural(event.answer.length, "char")})`
      // Told on the line of its step; on its own line when that step was already printed.
      if (state.steps.get(event.runId) === event.step) {
        return [`${prefix(event.runId)}step ${event.step}: ${what}`, state]
      }
      return [undefined, { ...state, finals: new Map(state.finals).set(event.runId, what) }]
    }
    case "RunFinished": {
      const status = event.status.replace("_", " ")
      return [
        `${prefix(event.runId)}finished: ${status}, ${plural(event.steps, "step")}, ${plural(event.subCalls, "sub-call")}${tokens(
          event.usage
        )}, ${seconds(event.durationMs)}`,
        state
      ]
    }
  }
}

/**
 * A progress recorder: a `TraceRecorder` that can also be told the sandbox's
 * isolation before the run starts.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Recorder extends TraceRecorder.Service {
  /** The wall the sandbox runs behind, told on the root run's first line. */
  readonly setIsolation: (isolation: string) => Effect.Effect<void>
}

/**
 * A recorder collecting every event in memory and printing progress lines.
 * Printing never fails the run.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = (options: Options = {}): Effect.Effect<Recorder> =>
  Effect.gen(function* () {
    const console = yield* Effect.console
    const write = options.write ?? ((line: string) => console.error(line))
    const events = yield* Ref.make(Chunk.empty<TraceEvent.TraceEvent>())
    const state = yield* Ref.make(initial)
    const all = Effect.map(Ref.get(events), Chunk.toReadonlyArray)
    return {
      record: (event) =>
        Effect.zipRight(
          Ref.update(events, Chunk.append(event)),
          Effect.flatMap(
            Ref.modify(state, (s) => format(s, event)),
            (line) =>
              line === undefined || options.quiet === true
                ? Effect.void
                : Effect.catchAllCause(write(TerminalText.sanitize(line)), () => Effect.void)
          )
        ),
      events: all,
      snapshot: Effect.map(all, Trace.make),
      setIsolation: (isolation) => Ref.update(state, (s) => ({ ...s, isolation }))
    }
  })

/**
 * {@link make} as the `TraceRecorder` layer.
 *
 * @since 0.1.0
 * @category Layers
 */
export const layer = (options?: Options): Layer.Layer<TraceRecorder> => Layer.effect(TraceRecorder, make(options))
