/**
 * The server's multi-turn sessions (`POST /v1/sessions`, `POST
 * /v1/sessions/:id/ask`, `DELETE /v1/sessions/:id`): each a core
 * `Session.make` (one REPL and one root conversation over many asks) living in
 * a `Scope` of its own, closed on `DELETE`, when it has been idle longer than
 * `idleTimeout`, and at shutdown. A turn takes a run place from `Admission`
 * like any run (429 past the queue) and writes its trace to
 * `<tracesDir>/<session id>-turn<n>.jsonl` as it happens.
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import * as NodePath from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import type { LlmAdapter } from "@rlm-runtime/adapters/LlmAdapter"
import type * as Rlm from "@rlm-runtime/core/Rlm"
import type { RlmError } from "@rlm-runtime/core/RlmError"
import type * as RlmContext from "@rlm-runtime/core/RlmContext"
import * as Session from "@rlm-runtime/core/Session"
import type { Sandbox } from "@rlm-runtime/sandbox/Sandbox"
import * as TraceRecorder from "@rlm-runtime/trace/TraceRecorder"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import type * as Admission from "./Admission.js"

/**
 * @since 0.1.0
 * @category Errors
 */
export class SessionsError extends Data.TaggedError("SessionsError")<{
  readonly reason: "NotFound" | "InvalidState" | "TooMany" | "Failed" | "Draining"
  readonly message: string
}> {}

/**
 * @since 0.1.0
 * @category Models
 */
export interface SessionView {
  readonly id: string
  /** Unix ms. */
  readonly createdAt: number
  readonly lastUsedAt: number
  readonly turns: number
}

/**
 * One answered turn.
 *
 * @since 0.1.0
 * @category Models
 */
export interface TurnResult {
  readonly sessionId: string
  readonly turn: number
  readonly result: Rlm.RunResult
  readonly tracePath: string
}

/**
 * A turn that did not answer: the run's error and where its trace is.
 *
 * @since 0.1.0
 * @category Errors
 */
export class TurnFailed extends Data.TaggedError("TurnFailed")<{
  readonly sessionId: string
  readonly turn: number
  readonly error: RlmError
  readonly tracePath: string
}> {}

/**
 * @since 0.1.0
 * @category Models
 */
export interface Options {
  readonly tracesDir: string
  readonly runOptions: Rlm.RunOptions
  readonly admission: Admission.Admission
  /** Open sessions at most (default 100); past it, `TooMany`. */
  readonly maxSessions?: number | undefined
  /** A session unused this long is closed (default 30 minutes). */
  readonly idleTimeout?: Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category Models
 */
export interface Sessions {
  readonly create: (options: {
    readonly context?: RlmContext.Input | undefined
    /** An exported `SessionState` (its JSON). */
    readonly resume?: unknown
  }) => Effect.Effect<SessionView, SessionsError>
  readonly get: (id: string) => Effect.Effect<SessionView, SessionsError>
  readonly ask: (
    id: string,
    query: string,
    options?: { readonly context?: RlmContext.Input | undefined }
  ) => Effect.Effect<TurnResult, SessionsError | TurnFailed | Admission.Overloaded>
  /** Close the session; its state (encoded, for `resume`) when it could be exported. */
  readonly remove: (id: string) => Effect.Effect<{ readonly state: unknown }, SessionsError>
  readonly count: Effect.Effect<number>
  /**
   * Graceful shutdown: refuse new sessions and turns, let the turns in flight
   * go on for up to `grace`, then close every session.
   */
  readonly drain: (grace: Duration.DurationInput) => Effect.Effect<void>
}

interface Entry {
  readonly id: string
  readonly session: Session.Session
  readonly scope: Scope.CloseableScope
  readonly createdAt: number
  lastUsedAt: number
  busy: number
  /** One turn at a time: a turn's number (and trace file) is taken under it. */
  readonly lock: Effect.Semaphore
}

const notFound = (id: string) =>
  new SessionsError({
    reason: "NotFound",
    message: `no session ${JSON.stringify(id)} (closed, idle too long, or never made).`
  })

const encodeState = Schema.encode(Session.SessionState)

/**
 * @since 0.1.0
 * @category Constructors
 */
export const make = (options: Options): Effect.Effect<Sessions, never, Scope.Scope | LlmAdapter | Sandbox> =>
  Effect.gen(function* () {
    const env = yield* Effect.context<LlmAdapter | Sandbox>()
    const tracesDir = NodePath.resolve(options.tracesDir)
    const maxSessions = options.maxSessions ?? 100
    const idle = Duration.decode(options.idleTimeout ?? Duration.minutes(30))
    const entries = new Map<string, Entry>()
    const state = { draining: false }

    const view = (e: Entry) =>
      Effect.map(
        e.session.turns,
        (turns): SessionView => ({
          id: e.id,
          createdAt: e.createdAt,
          lastUsedAt: e.lastUsedAt,
          turns
        })
      )

    const find = (id: string) =>
      Effect.suspend(() => {
        const e = entries.get(id)
        return e === undefined ? Effect.fail(notFound(id)) : Effect.succeed(e)
      })

    const close = (e: Entry) =>
      Effect.suspend(() => {
        entries.delete(e.id)
        return Scope.close(e.scope, Exit.void)
      })

    const create: Sessions["create"] = (create) =>
      Effect.gen(function* () {
        if (state.draining)
          return yield* new SessionsError({ reason: "Draining", message: "the server is shutting down." })
        if (entries.size >= maxSessions) {
          return yield* new SessionsError({
            reason: "TooMany",
            message: `this server keeps at most ${maxSessions} open sessions; DELETE one or wait for idle ones to close.`
          })
        }
        const resume =
          create.resume === undefined
            ? undefined
            : yield* Session.decodeState(create.resume).pipe(
                Effect.mapError((e) => new SessionsError({ reason: "InvalidState", message: e.message }))
              )
        const scope = yield* Scope.make()
        const session = yield* Session.make({
          ...options.runOptions,
          ...(create.context !== undefined ? { context: create.context } : {}),
          ...(resume !== undefined ? { resume } : {})
        }).pipe(
          Scope.extend(scope),
          Effect.provide(env),
          Effect.mapError(
            (e) =>
              new SessionsError({
                reason: e._tag === "RunFailed" && e.reason === "InvalidOptions" ? "InvalidState" : "Failed",
                message: e.message
              })
          ),
          Effect.onError(() => Scope.close(scope, Exit.void))
        )
        const now = Date.now()
        const entry: Entry = {
          id: `sess_${randomBytes(12).toString("hex")}`,
          session,
          scope,
          createdAt: now,
          lastUsedAt: now,
          busy: 0,
          lock: yield* Effect.makeSemaphore(1)
        }
        entries.set(entry.id, entry)
        return yield* view(entry)
      })

    const ask: Sessions["ask"] = (id, query, askOptions) =>
      Effect.gen(function* () {
        const entry = yield* find(id)
        if (state.draining)
          return yield* new SessionsError({ reason: "Draining", message: "the server is shutting down." })
        entry.busy++
        entry.lastUsedAt = Date.now()
        return yield* askLocked(entry, id, query, askOptions).pipe(
          entry.lock.withPermits(1),
          Effect.ensuring(
            Effect.sync(() => {
              entry.busy--
              entry.lastUsedAt = Date.now()
            })
          )
        )
      })

    const askLocked = (entry: Entry, id: string, query: string, askOptions: Parameters<Sessions["ask"]>[2]) =>
      Effect.gen(function* () {
        if (!entries.has(id)) return yield* notFound(id)
        const slot = yield* options.admission.reserve
        const turn = (yield* entry.session.turns) + 1
        const tracePath = NodePath.join(tracesDir, `${id}-turn${turn}.jsonl`)
        const run = Effect.gen(function* () {
          const memory = yield* TraceRecorder.makeMemory
          const recorder = yield* TraceRecorder.tee(memory, tracePath).pipe(
            Effect.provide(NodeFileSystem.layer),
            Effect.orElseSucceed(() => memory)
          )
          return yield* entry.session
            .ask(query, askOptions?.context !== undefined ? { context: askOptions.context } : undefined)
            .pipe(Effect.provideService(TraceRecorder.TraceRecorder, recorder))
        }).pipe(Effect.scoped)
        const result = yield* slot
          .run(run)
          .pipe(Effect.mapError((error) => new TurnFailed({ sessionId: id, turn, error, tracePath })))
        return { sessionId: id, turn, result, tracePath }
      })

    const remove: Sessions["remove"] = (id) =>
      Effect.gen(function* () {
        const entry = yield* find(id)
        entries.delete(id)
        const exported = yield* entry.session.export.pipe(
          Effect.flatMap(encodeState),
          Effect.map(Option.some),
          Effect.orElseSucceed(() => Option.none())
        )
        yield* Scope.close(entry.scope, Exit.void)
        return { state: Option.getOrNull(exported) }
      })

    const sweep = Effect.suspend(() => {
      const cutoff = Date.now() - Duration.toMillis(idle)
      const stale = [...entries.values()].filter((e) => e.busy === 0 && e.lastUsedAt < cutoff)
      return Effect.forEach(stale, close, { discard: true })
    })
    const every = Duration.millis(Math.max(50, Math.min(60_000, Duration.toMillis(idle) / 4)))
    yield* sweep.pipe(Effect.repeat(Schedule.spaced(every)), Effect.forkScoped)

    const drain = (grace: Duration.DurationInput) =>
      Effect.gen(function* () {
        state.draining = true
        const idleNow = Effect.sync(() => [...entries.values()].every((e) => e.busy === 0))
        yield* idleNow.pipe(
          Effect.repeat({ until: (done) => done, schedule: Schedule.spaced(Duration.millis(50)) }),
          Effect.interruptible,
          Effect.timeout(grace),
          Effect.ignore
        )
        yield* Effect.forEach([...entries.values()], close, { discard: true })
      })
    yield* Effect.addFinalizer(() => drain(0))

    return {
      create,
      get: (id) => Effect.flatMap(find(id), view),
      ask,
      remove,
      count: Effect.sync(() => entries.size),
      drain
    }
  })
