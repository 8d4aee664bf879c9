/**
 * The trace document — `{ version: 3, events }` — its JSON and JSONL forms, and
 * small queries over it (events of a run, child runs of a step, usage totals).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as TraceEvent from "./TraceEvent.js"

/**
 * The trace format version this module writes.
 *
 * - 3: `StepCompleted.toolCalls` (the tools protocol), `StepCompleted.finishReason`,
 *   `StepCompleted.promptSha256` / `replySha256` (replay), `SubCall.finishReason`,
 *   the `ModelCallRetried` event (a failed attempt the adapter retried), the
 *   `RunInput` event (what `rlm replay` reruns). A format-2 document decodes as it is (the new fields are
 *   optional) and is written back as format 3.
 * - 2: `RunStarted.isolation`, `StepCompleted.interpreterLost`.
 * - 1: the first format. Still read: a format-1 document decodes as a
 *   current trace (its runs' `isolation` read as `"process"`, the only wall
 *   there was), and is written back in the current format.
 *
 * @since 0.1.0
 * @category Constants
 */
export const currentVersion = 3 as const

/**
 * The trace format versions this module reads.
 *
 * @since 0.2.0
 * @category Constants
 */
export const readableVersions: ReadonlyArray<number> = [1, 2, 3]

/** Any readable version in the document, the current one in memory. */
const Version = Schema.transform(Schema.Literal(1, 2, currentVersion), Schema.Literal(currentVersion), {
  strict: true,
  decode: () => currentVersion,
  encode: (version) => version
})

/**
 * A whole trace: the events of a run and of every child run it started, in the
 * order they were recorded.
 *
 * @since 0.1.0
 * @category Models
 */
export class Trace extends Schema.Class<Trace>("@rlm-runtime/trace/Trace")({
  version: Version.pipe(
    Schema.propertySignature,
    Schema.withConstructorDefault(() => currentVersion)
  ),
  events: Schema.Array(TraceEvent.TraceEvent)
}) {}

/**
 * Build a trace from events (already validated when each event was built).
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = (events: Iterable<TraceEvent.TraceEvent>): Trace =>
  new Trace({ events: Array.from(events) }, { disableValidation: true })

/**
 * The trace with no events.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const empty: Trace = make([])

/**
 * Why a text could not be read back as a trace.
 *
 * - `InvalidJson`: the text (or one JSONL line) is not JSON.
 * - `SchemaMismatch`: it is JSON but not a trace / trace event.
 * - `UnsupportedVersion`: a trace document written by another format version.
 *
 * @since 0.1.0
 * @category Errors
 */
export const TraceDecodeErrorReason = Schema.Literal("InvalidJson", "SchemaMismatch", "UnsupportedVersion")

/**
 * A text could not be decoded as a trace. `line` is the 1-based JSONL line at
 * fault, when reading JSONL.
 *
 * @since 0.1.0
 * @category Errors
 */
export class TraceDecodeError extends Schema.TaggedError<TraceDecodeError>("@rlm-runtime/trace/TraceDecodeError")(
  "TraceDecodeError",
  {
    reason: TraceDecodeErrorReason,
    message: Schema.String,
    line: Schema.optional(Schema.Number)
  }
) {}

/**
 * A trace could not be encoded. Events validate their fields when they are
 * built, so this only happens to events built with validation disabled.
 *
 * @since 0.1.0
 * @category Errors
 */
export class TraceEncodeError extends Schema.TaggedError<TraceEncodeError>("@rlm-runtime/trace/TraceEncodeError")(
  "TraceEncodeError",
  {
    reason: Schema.Literal("InvalidEvent"),
    message: Schema.String
  }
) {}

/**
 * @since 0.1.0
 * @category Models
 */
export interface JsonOptions {
  /** Indent with two spaces (default `true`); `false` writes one compact line. */
  readonly pretty?: boolean | undefined
}

const encodeTrace = Schema.encode(Trace)
const encodeTraceSync = Schema.encodeSync(Trace)
const encodeEvent = Schema.encode(TraceEvent.TraceEvent)
const encodeEventSync = Schema.encodeSync(TraceEvent.TraceEvent)
const decodeTraceUnknown = Schema.decodeUnknown(Trace)
const decodeEventUnknown = Schema.decodeUnknown(TraceEvent.TraceEvent)

const stringify = (value: unknown, options?: JsonOptions): string =>
  options?.pretty === false ? JSON.stringify(value) : JSON.stringify(value, null, 2)

const toEncodeError = (error: ParseResult.ParseError) =>
  new TraceEncodeError({
    reason: "InvalidEvent",
    message: `The trace holds an event that does not match its schema (was it built with validation disabled?): ${ParseResult.TreeFormatter.formatErrorSync(error)}`
  })

/**
 * Export a trace as one JSON document.
 *
 * @since 0.1.0
 * @category Encoding
 */
export const encodeJson = (trace: Trace, options?: JsonOptions): Effect.Effect<string, TraceEncodeError> =>
  encodeTrace(trace).pipe(
    Effect.mapError(toEncodeError),
    Effect.map((encoded) => stringify(encoded, options))
  )

/**
 * Export a trace as one JSON document, synchronously. Throws a
 * {@link TraceEncodeError} only for events built with validation disabled.
 *
 * @since 0.1.0
 * @category Encoding
 */
export const toJson = (trace: Trace, options?: JsonOptions): string => {
  try {
    return stringify(encodeTraceSync(trace), options)
  } catch (error) {
    throw ParseResult.isParseError(error) ? toEncodeError(error) : error
  }
}

/**
 * One event as a single JSON line (no trailing newline): the unit of a JSONL
 * trace. Newlines inside strings are escaped by JSON, so the line never breaks.
 *
 * @since 0.1.0
 * @category Encoding
 */
export const eventToJsonLine = (event: TraceEvent.TraceEvent): string => {
  try {
    return JSON.stringify(encodeEventSync(event))
  } catch (error) {
    throw ParseResult.isParseError(error) ? toEncodeError(error) : error
  }
}

/**
 * Export a trace (or a list of events) as JSONL: one event per line, each line
 * ending with `\n`. The empty trace is the empty string.
 *
 * @since 0.1.0
 * @category Encoding
 */
export const encodeJsonl = (
  trace: Trace | ReadonlyArray<TraceEvent.TraceEvent>
): Effect.Effect<string, TraceEncodeError> =>
  Effect.forEach(eventsOf(trace), (event) => encodeEvent(event)).pipe(
    Effect.mapError(toEncodeError),
    Effect.map((encoded) => encoded.map((event) => `${JSON.stringify(event)}\n`).join(""))
  )

/**
 * Synchronous {@link encodeJsonl}.
 *
 * @since 0.1.0
 * @category Encoding
 */
export const toJsonl = (trace: Trace | ReadonlyArray<TraceEvent.TraceEvent>): string =>
  eventsOf(trace)
    .map((event) => `${eventToJsonLine(event)}\n`)
    .join("")

const parseJson = (text: string, line?: number): Effect.Effect<unknown, TraceDecodeError> =>
  Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: (error) =>
      new TraceDecodeError({
        reason: "InvalidJson",
        message: `${line === undefined ? "The trace" : `Line ${line} of the JSONL trace`} is not valid JSON (${
          error instanceof Error ? error.message : String(error)
        }). Was the file cut short or edited by hand?`,
        ...(line === undefined ? {} : { line })
      })
  })

const schemaMismatch = (what: string, error: ParseResult.ParseError, line?: number) =>
  new TraceDecodeError({
    reason: "SchemaMismatch",
    message: `${what} does not match the trace schema:\n${ParseResult.TreeFormatter.formatErrorSync(error)}`,
    ...(line === undefined ? {} : { line })
  })

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const decodeDocument = (json: unknown): Effect.Effect<Trace, TraceDecodeError> => {
  if (isRecord(json) && "version" in json && !readableVersions.includes(json.version as number)) {
    return Effect.fail(
      new TraceDecodeError({
        reason: "UnsupportedVersion",
        message: `The trace has format version ${JSON.stringify(json.version)}, but this @rlm-runtime/trace reads versions ${readableVersions.slice(0, -1).join(", ")} and ${readableVersions.at(-1)}. Use the @rlm-runtime/trace release that wrote it, or re-export the trace.`
      })
    )
  }
  if (isRecord(json) && "_tag" in json && !("events" in json)) {
    return Effect.fail(
      new TraceDecodeError({
        reason: "SchemaMismatch",
        message:
          "The text is a single trace event, not a trace document `{ version, events }`. Read JSONL traces with decodeJsonl (or decodeText, which accepts both)."
      })
    )
  }
  return decodeTraceUnknown(json).pipe(Effect.mapError((error) => schemaMismatch("The trace document", error)))
}

/**
 * Read a trace document written by {@link encodeJson} / {@link toJson}.
 *
 * @since 0.1.0
 * @category Decoding
 */
export const decodeJson = (text: string): Effect.Effect<Trace, TraceDecodeError> =>
  Effect.flatMap(parseJson(text), decodeDocument)

/**
 * Read a JSONL trace: one event per line. Blank lines (including the final
 * newline) are skipped; a bad line fails with its 1-based `line` number.
 *
 * @since 0.1.0
 * @category Decoding
 */
export const decodeJsonl = (text: string): Effect.Effect<Trace, TraceDecodeError> =>
  Effect.gen(function* () {
    const lines = text.split("\n")
    const events: Array<TraceEvent.TraceEvent> = []
    for (let i = 0; i < lines.length; i++) {
      const raw = lines[i] as string
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw
      if (line.trim() === "") continue
      const json = yield* parseJson(line, i + 1)
      const event = yield* decodeEventUnknown(json).pipe(
        Effect.mapError((error) => schemaMismatch(`Line ${i + 1} of the JSONL trace`, error, i + 1))
      )
      events.push(event)
    }
    return make(events)
  })

/**
 * Read a trace in either format: a JSON document (`{ "version": 3, ... }`) or
 * JSONL events. Useful for tools that accept any trace file.
 *
 * @since 0.1.0
 * @category Decoding
 */
export const decodeText = (text: string): Effect.Effect<Trace, TraceDecodeError> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return decodeJsonl(text)
  }
  return isRecord(json) && ("events" in json || "version" in json) ? decodeDocument(json) : decodeJsonl(text)
}

// ---------------------------------------------------------------------------
// queries
// ---------------------------------------------------------------------------

const eventsOf = (trace: Trace | ReadonlyArray<TraceEvent.TraceEvent>): ReadonlyArray<TraceEvent.TraceEvent> =>
  trace instanceof Trace ? trace.events : (trace as ReadonlyArray<TraceEvent.TraceEvent>)

/**
 * The `RunStarted` event of every run in the trace (root and children), in
 * start order.
 *
 * @since 0.1.0
 * @category Queries
 */
export const runs = (trace: Trace | ReadonlyArray<TraceEvent.TraceEvent>): ReadonlyArray<TraceEvent.RunStarted> =>
  eventsOf(trace).filter((event): event is TraceEvent.RunStarted => event._tag === "RunStarted")

/**
 * The runs that have no parent.
 *
 * @since 0.1.0
 * @category Queries
 */
export const rootRuns = (trace: Trace | ReadonlyArray<TraceEvent.TraceEvent>): ReadonlyArray<TraceEvent.RunStarted> =>
  runs(trace).filter((run) => run.parentRunId === undefined)

/**
 * The events of one run, in order. Events of its child runs are not included
 * (see {@link descendantRunIds}).
 *
 * @since 0.1.0
 * @category Queries
 */
export const eventsOfRun = (
  trace: Trace | ReadonlyArray<TraceEvent.TraceEvent>,
  runId: string
): ReadonlyArray<TraceEvent.TraceEvent> => eventsOf(trace).filter((event) => event.runId === runId)

/**
 * The child runs (`rlm_query`) started by a run — all of them, or only those
 * started from one step when `step` is given.
 *
 * @since 0.1.0
 * @category Queries
 */
export const childRuns = (
  trace: Trace | ReadonlyArray<TraceEvent.TraceEvent>,
  runId: string,
  step?: number
): ReadonlyArray<TraceEvent.RunStarted> =>
  runs(trace).filter((run) => run.parentRunId === runId && (step === undefined || run.parentStep === step))

/**
 * A run id followed by the ids of all its descendants (children, their
 * children, …), breadth first.
 *
 * @since 0.1.0
 * @category Queries
 */
export const descendantRunIds = (
  trace: Trace | ReadonlyArray<TraceEvent.TraceEvent>,
  runId: string
): ReadonlyArray<string> => {
  const byParent = new Map<string, Array<string>>()
  for (const run of runs(trace)) {
    if (run.parentRunId === undefined) continue
    const siblings = byParent.get(run.parentRunId) ?? []
    siblings.push(run.runId)
    byParent.set(run.parentRunId, siblings)
  }
  const out: Array<string> = [runId]
  const seen = new Set(out)
  for (let i = 0; i < out.length; i++) {
    for (const child of byParent.get(out[i] as string) ?? []) {
      if (seen.has(child)) continue
      seen.add(child)
      out.push(child)
    }
  }
  return out
}

/**
 * The final answer of a run, if it gave one.
 *
 * @since 0.1.0
 * @category Queries
 */
export const finalAnswer = (
  trace: Trace | ReadonlyArray<TraceEvent.TraceEvent>,
  runId: string
): Option.Option<TraceEvent.FinalAnswer> => {
  const events = eventsOf(trace)
  for (let i = events.length - 1; i >= 0; i--) {
    const event = events[i] as TraceEvent.TraceEvent
    if (event._tag === "FinalAnswer" && event.runId === runId) return Option.some(event)
  }
  return Option.none()
}

/**
 * Token usage summed over every model call: the root calls (`StepCompleted`),
 * the sub-calls (`SubCall`) and the failed attempts retried (`ModelCallRetried`) of a run and of all its descendant runs — or
 * of every run in the trace when `runId` is omitted.
 *
 * A `rlm_query` sub-call is counted through its child run's own events; its
 * own `usage` is only added when the child run is missing from the trace, so
 * nothing is counted twice. A field no call reported stays absent (unknown);
 * when only some calls reported it, the sum covers those calls.
 *
 * @since 0.1.0
 * @category Queries
 */
export const totalUsage = (
  trace: Trace | ReadonlyArray<TraceEvent.TraceEvent>,
  runId?: string
): TraceEvent.TokenUsage => {
  const events = eventsOf(trace)
  const known = new Set(runs(events).map((run) => run.runId))
  const included = runId === undefined ? undefined : new Set(descendantRunIds(events, runId))
  let total: TraceEvent.TokenUsage = {}
  for (const event of events) {
    if (included !== undefined && !included.has(event.runId)) continue
    if (event._tag === "StepCompleted") {
      total = TraceEvent.addUsage(total, event.usage)
    } else if (event._tag === "SubCall") {
      const countedByChild = event.kind === "rlm_query" && event.childRunId !== undefined && known.has(event.childRunId)
      if (!countedByChild) total = TraceEvent.addUsage(total, event.usage)
    } else if (event._tag === "ModelCallRetried") {
      total = TraceEvent.addUsage(total, event.usage)
    }
  }
  return total
}
