/**
 * The service runs record their events to. Layers choose where they go: memory
 * only, memory plus a JSONL file written as events happen, or nowhere.
 *
 * @since 0.1.0
 */

import type { PlatformError } from "@effect/platform/Error"
import type * as FileSystem from "@effect/platform/FileSystem"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import * as PrivateFile from "./PrivateFile.js"
import * as Trace from "./Trace.js"
import type * as TraceEvent from "./TraceEvent.js"

/**
 * @since 0.1.0
 * @category Tags
 */
export class TraceRecorder extends Context.Tag("@rlm-runtime/trace/TraceRecorder")<
  TraceRecorder,
  TraceRecorder.Service
>() {}

/**
 * @since 0.1.0
 */
export declare namespace TraceRecorder {
  /**
   * @since 0.1.0
   * @category Models
   */
  export interface Service {
    /** Record one event. Never fails: a recorder must not break the run it observes. */
    readonly record: (event: TraceEvent.TraceEvent) => Effect.Effect<void>
    /** Every event recorded so far, in recording order. */
    readonly events: Effect.Effect<ReadonlyArray<TraceEvent.TraceEvent>>
    /** The events recorded so far as a trace document. */
    readonly snapshot: Effect.Effect<Trace.Trace>
  }
}

/**
 * A recorder keeping events in memory. Each evaluation makes a fresh, empty
 * recorder.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const makeMemory: Effect.Effect<TraceRecorder.Service> = Effect.map(
  Ref.make(Chunk.empty<TraceEvent.TraceEvent>()),
  (ref) => {
    const events = Effect.map(Ref.get(ref), Chunk.toReadonlyArray)
    return {
      record: (event) => Ref.update(ref, Chunk.append(event)),
      events,
      snapshot: Effect.map(events, Trace.make)
    }
  }
)

/**
 * In-memory recorder; every build of the layer has its own empty event list.
 *
 * @since 0.1.0
 * @category Layers
 */
export const layerMemory: Layer.Layer<TraceRecorder> = Layer.effect(TraceRecorder, makeMemory)

/**
 * @since 0.1.0
 * @category Models
 */
export interface JsonlOptions {
  /**
   * Keep what the file already holds and add after it. Default `false`: the
   * file is truncated when the recorder is built, so it holds exactly the
   * events of this recorder.
   */
  readonly append?: boolean | undefined
}

/**
 * A recorder keeping events in memory and appending each one to a JSONL file
 * (one JSON event per line) as it is recorded, so a crashed or interrupted run
 * still leaves its trace behind. Read the file back with `Trace.decodeJsonl`.
 * The file holds the whole context: it is mode `0600`, also when it existed
 * before with a wider mode (see `PrivateFile.open`).
 *
 * Opening the file fails the constructor with a `PlatformError` (missing
 * directory, no permission). A later write failure is logged and the event is
 * still kept in memory: tracing never fails the run it observes. The file is
 * closed when the scope closes.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const makeJsonl = (
  path: string,
  options?: JsonlOptions
): Effect.Effect<TraceRecorder.Service, PlatformError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function* () {
    const memory = yield* makeMemory
    return yield* tee(memory, path, options)
  })

/**
 * `recorder` with every event it records also appended to a JSONL file, as
 * {@link makeJsonl} does: one line per event, written (not buffered) before
 * `record` returns, so a run killed at any moment leaves every event recorded
 * until then. `events` and `snapshot` are `recorder`'s. The file is mode
 * `0600` and closed when the scope closes.
 *
 * @since 0.2.0
 * @category Constructors
 */
export const tee = <S extends TraceRecorder.Service>(
  recorder: S,
  path: string,
  options?: JsonlOptions
): Effect.Effect<S, PlatformError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function* () {
    const file = yield* PrivateFile.open(path, options)
    // One writer at a time, so lines never interleave and the file keeps the
    // recording order even when concurrent sub-calls record at once; a write is
    // uninterruptible so an interrupted run never leaves half a line.
    const lock = yield* Effect.makeSemaphore(1)
    const encoder = new TextEncoder()
    const write = (event: TraceEvent.TraceEvent) =>
      Effect.suspend(() => file.writeAll(encoder.encode(`${Trace.eventToJsonLine(event)}\n`))).pipe(
        Effect.catchAllCause((cause) =>
          Effect.logError(`Could not append a trace event to ${path}; it is kept in memory only`, cause)
        )
      )
    return {
      ...recorder,
      record: (event: TraceEvent.TraceEvent) =>
        lock.withPermits(1)(Effect.uninterruptible(Effect.zipRight(recorder.record(event), write(event))))
    }
  })

/**
 * {@link makeJsonl} as a layer; the file is closed when the layer is released.
 *
 * @since 0.1.0
 * @category Layers
 */
export const layerJsonl = (
  path: string,
  options?: JsonlOptions
): Layer.Layer<TraceRecorder, PlatformError, FileSystem.FileSystem> =>
  Layer.scoped(TraceRecorder, makeJsonl(path, options))

/**
 * A recorder that drops every event: `events` is always empty.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const noop: TraceRecorder.Service = {
  record: () => Effect.void,
  events: Effect.succeed([]),
  snapshot: Effect.succeed(Trace.empty)
}

/**
 * @since 0.1.0
 * @category Layers
 */
export const layerNoop: Layer.Layer<TraceRecorder> = Layer.succeed(TraceRecorder, noop)

/**
 * Record an event with the recorder in context.
 *
 * @since 0.1.0
 * @category Accessors
 */
export const record = (event: TraceEvent.TraceEvent): Effect.Effect<void, never, TraceRecorder> =>
  Effect.flatMap(TraceRecorder, (recorder) => recorder.record(event))

/**
 * The events recorded so far by the recorder in context.
 *
 * @since 0.1.0
 * @category Accessors
 */
export const events: Effect.Effect<ReadonlyArray<TraceEvent.TraceEvent>, never, TraceRecorder> = Effect.flatMap(
  TraceRecorder,
  (recorder) => recorder.events
)

/**
 * The trace recorded so far by the recorder in context.
 *
 * @since 0.1.0
 * @category Accessors
 */
export const snapshot: Effect.Effect<Trace.Trace, never, TraceRecorder> = Effect.flatMap(
  TraceRecorder,
  (recorder) => recorder.snapshot
)
