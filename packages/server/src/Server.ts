/**
 * `rlm serve` as a Layer: the handlers of `ServerApi` over a `RunRegistry`,
 * an `Admission` bound and a `ContextStore`, served on Node's HTTP server by
 * `@effect/platform-node`'s `NodeHttpServer`.
 *
 * `Server.layer(options)` needs `LlmAdapter | Sandbox` from its environment
 * (any provider Layer, any sandbox; a warm pool such as
 * `PythonSandbox.layerPool` makes trivial requests fast) and provides
 * {@link Server} (its URL, registry, store, admission) and the
 * `HttpServer`. Releasing it is the graceful shutdown: new runs are refused
 * (503), the runs in flight get `shutdownGrace` to finish, the rest are
 * interrupted with their traces written, then the listener closes.
 *
 * Safety: without a `token` the server refuses to bind anything but a
 * loopback address. With one, every request but `GET /healthz` needs
 * `Authorization: Bearer <token>`, compared in constant time (SHA-256 digests
 * through `crypto.timingSafeEqual`). Bodies are bounded (`maxBodyBytes` for
 * JSON, `maxContextBytes` for an uploaded context), checked against
 * `content-length` before reading and counted while reading.
 *
 * @since 0.1.0
 */
import { createHash, timingSafeEqual } from "node:crypto"
import { createServer } from "node:http"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import type * as HttpApp from "@effect/platform/HttpApp"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import type { LlmAdapter } from "@rlm-runtime/adapters/LlmAdapter"
import * as Budget from "@rlm-runtime/core/Budget"
import type * as Rlm from "@rlm-runtime/core/Rlm"
import { Sandbox } from "@rlm-runtime/sandbox/Sandbox"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Admission from "./Admission.js"
import { ApiError, invalid, notFound, toResponse } from "./ApiError.js"
import * as ContextStore from "./ContextStore.js"
import * as LazySandbox from "./LazySandbox.js"
import * as OpenAiChat from "./OpenAiChat.js"
import * as RunRegistry from "./RunRegistry.js"
import {
  AskRequest,
  type ChatCompletionRequest,
  type ChatMessage,
  ChatCompletionRequest as ChatRequestSchema,
  type RunObject,
  RunRequest,
  ServerApi,
  SessionRequest
} from "./ServerApi.js"
import * as Sessions from "./Sessions.js"

/**
 * @since 0.1.0
 * @category Models
 */
export interface Options {
  /** Default `127.0.0.1`. Anything but loopback needs a `token`. */
  readonly host?: string | undefined
  /** Default 8080; 0 picks a free port (see {@link Server}'s `url`). */
  readonly port?: number | undefined
  /** The bearer token every request (but `/healthz`) must send. */
  readonly token?: Redacted.Redacted<string> | undefined
  /** Runs at once (default 4). */
  readonly maxConcurrentRuns?: number | undefined
  /** Runs waiting past those (default 64); past it, 429. */
  readonly maxQueue?: number | undefined
  /** Largest JSON body, bytes (default 16 MiB). */
  readonly maxBodyBytes?: number | undefined
  /** Largest uploaded context, bytes (default 4 GiB). */
  readonly maxContextBytes?: number | undefined
  /** Where uploaded contexts are kept. */
  readonly contextsDir: string
  /** Where each run's trace is written, `<run id>.jsonl`. */
  readonly tracesDir: string
  /** The id `GET /v1/models` lists (default `rlm`). A request's `model` is accepted and echoed whatever it is. */
  readonly modelId?: string | undefined
  /** The options of every run (policy, protocol, system prompt, …). */
  readonly runOptions?: Rlm.RunOptions | undefined
  /** How long the runs in flight may go on at shutdown before they are interrupted (default 10 s). */
  readonly shutdownGrace?: Duration.DurationInput | undefined
  /** Finished runs kept for `GET /v1/runs/:id` (default 1000). */
  readonly maxRetainedRuns?: number | undefined
  /**
   * Start each run's interpreter at its first code block, not before its
   * first model call (`LazySandbox`; default `true`): a run that answers
   * without code never starts one.
   */
  readonly lazySandbox?: boolean | undefined
  /** Open sessions at most (default 100); past it `POST /v1/sessions` gets 429. */
  readonly maxSessions?: number | undefined
  /** A session unused this long is closed (default 30 minutes). */
  readonly sessionIdleTimeout?: Duration.DurationInput | undefined
}

/**
 * The server could not start.
 *
 * @since 0.1.0
 * @category Errors
 */
export class ServerError extends Schema.TaggedError<ServerError>("@rlm-runtime/server/ServerError")("ServerError", {
  reason: Schema.Literal("UnsafeBind", "Listen", "Storage", "InvalidOptions"),
  message: Schema.String
}) {}

/**
 * A running server.
 *
 * @since 0.1.0
 * @category Tags
 */
export class Server extends Context.Tag("@rlm-runtime/server/Server")<Server, Server.Service>() {}

/**
 * @since 0.1.0
 */
export declare namespace Server {
  /**
   * @since 0.1.0
   * @category Models
   */
  export interface Service {
    /** `http://host:port`, the port the listener got. */
    readonly url: string
    readonly host: string
    readonly port: number
    readonly modelId: string
    readonly authenticated: boolean
    readonly registry: RunRegistry.RunRegistry
    readonly store: ContextStore.ContextStore
    readonly admission: Admission.Admission
    readonly sessions: Sessions.Sessions
  }
}

/**
 * Defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category Constants
 */
export const defaults = {
  host: "127.0.0.1",
  port: 8080,
  maxConcurrentRuns: 4,
  maxQueue: 64,
  maxBodyBytes: 16 * 1024 * 1024,
  maxContextBytes: 4 * 1024 * 1024 * 1024,
  modelId: "rlm",
  shutdownGrace: Duration.seconds(10)
} as const

/**
 * Whether `host` is a loopback address (`127.0.0.0/8`, `::1`, `localhost`).
 *
 * @since 0.1.0
 * @category Safety
 */
export const isLoopback = (host: string): boolean => {
  const h = host
    .trim()
    .toLowerCase()
    .replace(/^\[|\]$/g, "")
  return (
    h === "localhost" ||
    h === "::1" ||
    h === "0:0:0:0:0:0:0:1" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) ||
    h === "::ffff:127.0.0.1"
  )
}

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest()

/**
 * Whether `given` is `expected`, in time independent of where they differ:
 * both are hashed (SHA-256, equal lengths) and compared with
 * `crypto.timingSafeEqual`.
 *
 * @since 0.1.0
 * @category Safety
 */
export const tokenMatches = (given: string, expected: string): boolean =>
  timingSafeEqual(digest(given), digest(expected))

// ---------------------------------------------------------------------------
// internals
// ---------------------------------------------------------------------------

interface State {
  readonly modelId: string
  readonly createdAt: number
  readonly maxBodyBytes: number
  readonly maxContextBytes: number
  readonly registry: RunRegistry.RunRegistry
  readonly store: ContextStore.ContextStore
  readonly admission: Admission.Admission
  readonly sessions: Sessions.Sessions
  readonly draining: { value: boolean }
}

class ServerState extends Context.Tag("@rlm-runtime/server/Server/State")<ServerState, State>() {}

const respond = <R>(
  effect: Effect.Effect<HttpServerResponse.HttpServerResponse, ApiError, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
  Effect.catchTag(effect, "ApiError", (e) => Effect.succeed(toResponse(e)))

const tooLarge = (limit: number, what: string) =>
  new ApiError({
    status: 413,
    type: "invalid_request_error",
    code: "body_too_large",
    message: `the ${what} is larger than this server's limit of ${limit} bytes.`
  })

const declaredLength = (request: HttpServerRequest.HttpServerRequest): number | undefined => {
  const header = request.headers["content-length"]
  if (header === undefined) return undefined
  const n = Number(header)
  return Number.isFinite(n) ? n : undefined
}

/** The body as text, refused (413) past `limit` bytes: by `content-length` first, then counted while reading. */
const readText = (request: HttpServerRequest.HttpServerRequest, limit: number): Effect.Effect<string, ApiError> => {
  const declared = declaredLength(request)
  if (declared !== undefined && declared > limit) return Effect.fail(tooLarge(limit, "request body"))
  const chunks: Array<Uint8Array> = []
  const counted = { bytes: 0 }
  return request.stream.pipe(
    Stream.mapError(() => invalid("the request body could not be read.", undefined, "bad_body")),
    Stream.runForEach((chunk) => {
      counted.bytes += chunk.byteLength
      if (counted.bytes <= limit) chunks.push(chunk)
      // Past the limit, read on (dropping it) so that the client gets its 413 rather than a reset connection; a
      // body far past the limit is cut off.
      else if (counted.bytes > 2 * limit + 16 * 1024 * 1024) return Effect.fail(tooLarge(limit, "request body"))
      return Effect.void
    }),
    Effect.flatMap(() =>
      counted.bytes > limit
        ? Effect.fail(tooLarge(limit, "request body"))
        : Effect.succeed(Buffer.concat(chunks).toString("utf8"))
    )
  )
}

/** JSON nested deeper than this is refused (400) before it is decoded: decoders and formatters recurse. */
const maxJsonDepth = 512

/** Whether `value` nests at most `limit` arrays/objects deep (iterative: any depth is safe to ask about). */
const depthWithin = (value: unknown, limit: number): boolean => {
  const stack: Array<readonly [unknown, number]> = [[value, 0]]
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!
    if (v === null || typeof v !== "object") continue
    if (depth >= limit) return false
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1])
  }
  return true
}

const readJson = <A, I>(
  request: HttpServerRequest.HttpServerRequest,
  limit: number,
  schema: Schema.Schema<A, I>
): Effect.Effect<A, ApiError> =>
  Effect.flatMap(readText(request, limit), (text) => {
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (e) {
      return Effect.fail(
        invalid(
          `the request body is not valid JSON: ${e instanceof Error ? e.message : String(e)}`,
          undefined,
          "invalid_json"
        )
      )
    }
    if (!depthWithin(json, maxJsonDepth)) {
      return Effect.fail(
        invalid(`the request body nests deeper than ${maxJsonDepth} levels.`, undefined, "invalid_request")
      )
    }
    return Schema.decodeUnknown(schema)(json).pipe(
      Effect.mapError((e) => {
        const issue = ParseResult.ArrayFormatter.formatErrorSync(e)[0]
        const param = issue === undefined || issue.path.length === 0 ? undefined : issue.path.join(".")
        return invalid(
          `the request body does not have the expected shape: ${ParseResult.TreeFormatter.formatErrorSync(e)}`,
          param,
          "invalid_request"
        )
      })
    )
  })

const admissionError = (e: Admission.Overloaded | RunRegistry.Draining): ApiError =>
  e._tag === "Overloaded"
    ? new ApiError({
        status: 429,
        type: "rate_limit_error",
        code: "server_busy",
        message: `every run place is taken (${e.running} running, ${e.queued} queued); retry after ${e.retryAfterSeconds} s.`,
        retryAfter: e.retryAfterSeconds
      })
    : new ApiError({
        status: 503,
        type: "server_error",
        code: "shutting_down",
        message: "the server is shutting down and takes no new runs.",
        retryAfter: 5
      })

const contextError = (param: string) => (e: ContextStore.ContextError) => {
  switch (e.reason) {
    case "NotFound":
      return notFound(e.message, param, "context_not_found")
    case "TooLarge":
      return new ApiError({ status: 413, type: "invalid_request_error", code: "context_too_large", message: e.message })
    case "NotText":
    case "Upload":
      return invalid(e.message, undefined, e.reason === "NotText" ? "context_not_text" : "upload_failed")
    case "Io":
      return new ApiError({ status: 500, type: "server_error", code: "storage", message: e.message })
  }
}

const runObject = (v: RunRegistry.RunView): RunObject => ({
  id: v.id,
  object: "rlm.run",
  status: v.status,
  model: v.model,
  query: v.query,
  created_at: Math.floor(v.createdAt / 1000),
  started_at: v.startedAt === undefined ? null : Math.floor(v.startedAt / 1000),
  finished_at: v.finishedAt === undefined ? null : Math.floor(v.finishedAt / 1000),
  answer: v.answer ?? null,
  partial_answer: v.partialAnswer ?? null,
  steps: v.steps ?? null,
  usage: v.totals === undefined ? null : OpenAiChat.usageOf(v.totals),
  error:
    v.error === undefined
      ? null
      : (() => {
          const e = OpenAiChat.runError(v.error, v.id)
          return { message: e.message, type: e.type, code: e.code ?? null }
        })(),
  events: v.events,
  trace_file: v.tracePath
})

const encoder = new TextEncoder()
const sseData = (data: unknown) => encoder.encode(`data: ${JSON.stringify(data)}\n\n`)
const sseDone = encoder.encode("data: [DONE]\n\n")

const sseHeaders = { "cache-control": "no-cache", "x-accel-buffering": "no" }

const sseResponse = (body: Stream.Stream<Uint8Array>) =>
  HttpServerResponse.stream(body, { contentType: "text/event-stream", headers: sseHeaders })

/** A stream that interrupts the run if it is stopped before the run ended (the client went away). */
const interruptOnCancel = (handle: RunRegistry.RunHandle, body: Stream.Stream<Uint8Array>) =>
  body.pipe(
    Stream.ensuring(
      Effect.flatMap(handle.view, (v) =>
        v.status === "queued" || v.status === "running" ? Effect.asVoid(handle.interrupt) : Effect.void
      )
    )
  )

const contextFor = (state: State, body: ChatCompletionRequest, history: ReadonlyArray<ChatMessage>) =>
  body.context_id !== undefined && body.context_id !== null
    ? state.store.get(body.context_id).pipe(Effect.mapError(contextError("context_id")))
    : Either.match(OpenAiChat.renderContext(history), { onLeft: Effect.fail, onRight: Effect.succeed })

const chatCompletions = (request: HttpServerRequest.HttpServerRequest) =>
  respond(
    Effect.gen(function* () {
      const state = yield* ServerState
      const body = yield* readJson(request, state.maxBodyBytes, ChatRequestSchema)
      const { history, query } = yield* Either.match(OpenAiChat.split(body.messages), {
        onLeft: Effect.fail,
        onRight: Effect.succeed
      })
      const context = yield* contextFor(state, body, history)
      const model = body.model ?? state.modelId
      const handle = yield* state.registry.start({ query, context, model }).pipe(Effect.mapError(admissionError))
      if (body.stream !== true) {
        const view = yield* handle.await.pipe(Effect.onInterrupt(() => handle.interrupt))
        return view.status === "succeeded"
          ? HttpServerResponse.unsafeJson(OpenAiChat.completion(view, model))
          : toResponse(OpenAiChat.runError(view.error, view.id))
      }
      const id = OpenAiChat.completionId(handle.id)
      const created = Math.floor(Date.now() / 1000)
      const includeUsage = body.stream_options?.include_usage === true
      const chunk = (delta: Parameters<typeof OpenAiChat.chunk>[3], finish: string | null = null) =>
        sseData(OpenAiChat.chunk(id, created, model, delta, finish, includeUsage ? null : undefined))
      const first = Stream.make(chunk({ role: "assistant", content: "" }))
      const rest = handle.events(0).pipe(
        Stream.mapConcat((item): ReadonlyArray<Uint8Array> => {
          if (item._tag === "Event") {
            const reasoning = OpenAiChat.reasoningOf(item.event)
            return reasoning === undefined ? [] : [chunk({ reasoning_content: reasoning })]
          }
          const view = item.view
          if (view.status !== "succeeded") {
            return [sseData(toBody(OpenAiChat.runError(view.error, view.id))), sseDone]
          }
          const usage = OpenAiChat.usageOf(view.totals ?? Budget.emptyTotals)
          return [
            chunk({ content: view.answer ?? "" }),
            chunk({}, "stop"),
            ...(includeUsage
              ? [sseData({ id, object: "chat.completion.chunk", created, model, choices: [], usage })]
              : []),
            sseDone
          ]
        })
      )
      return sseResponse(interruptOnCancel(handle, Stream.concat(first, rest)))
    })
  )

const toBody = (e: ApiError) => ({
  error: { message: e.message, type: e.type, param: e.param ?? null, code: e.code ?? null }
})

const models = Effect.map(ServerState, (state) =>
  HttpServerResponse.unsafeJson({
    object: "list",
    data: [{ id: state.modelId, object: "model", created: Math.floor(state.createdAt / 1000), owned_by: "rlm-runtime" }]
  })
)

const contextObject = (info: ContextStore.ContextInfo) => ({
  id: info.id,
  object: "rlm.context" as const,
  bytes: info.bytes,
  sha256: info.sha256,
  created_at: info.createdAt
})

const uploadContext = (request: HttpServerRequest.HttpServerRequest) =>
  respond(
    Effect.gen(function* () {
      const state = yield* ServerState
      const declared = declaredLength(request)
      if (declared !== undefined && declared > state.maxContextBytes) {
        return yield* tooLarge(state.maxContextBytes, "context")
      }
      const info = yield* state.store
        .put(request.stream)
        .pipe(
          Effect.mapError((e) =>
            e.reason === "TooLarge" ? tooLarge(state.maxContextBytes, "context") : contextError("body")(e)
          )
        )
      return HttpServerResponse.unsafeJson(contextObject(info), { status: 201 })
    })
  )

const getContext = (id: string) =>
  respond(
    Effect.flatMap(ServerState, (state) =>
      state.store.info(id).pipe(
        Effect.mapError(contextError("id")),
        Effect.map((info) => HttpServerResponse.unsafeJson(contextObject(info)))
      )
    )
  )

const deleteContext = (id: string) =>
  respond(
    Effect.flatMap(ServerState, (state) =>
      state.store
        .remove(id)
        .pipe(
          Effect.mapError(contextError("id")),
          Effect.as(HttpServerResponse.unsafeJson({ id, object: "rlm.context.deleted", deleted: true }))
        )
    )
  )

const startRun = (request: HttpServerRequest.HttpServerRequest) =>
  respond(
    Effect.gen(function* () {
      const state = yield* ServerState
      const body = yield* readJson(request, state.maxBodyBytes, RunRequest)
      if (body.query.trim().length === 0) return yield* invalid("query is empty.", "query", "missing_query")
      if (body.context !== undefined && body.context_id !== undefined) {
        return yield* invalid("give context or context_id, not both.", "context_id", "conflicting_context")
      }
      const context =
        body.context_id !== undefined
          ? yield* state.store.get(body.context_id).pipe(Effect.mapError(contextError("context_id")))
          : (body.context ?? "")
      const handle = yield* state.registry
        .start({ query: body.query, context, model: body.model ?? state.modelId })
        .pipe(Effect.mapError(admissionError))
      return HttpServerResponse.unsafeJson(runObject(yield* handle.view), { status: 202 })
    })
  )

const findRun = (id: string) =>
  Effect.flatMap(ServerState, (state) =>
    Option.match(state.registry.get(id), {
      onNone: () =>
        Effect.fail(
          notFound(`no run ${JSON.stringify(id)} (finished runs are forgotten after a while).`, "id", "run_not_found")
        ),
      onSome: Effect.succeed
    })
  )

const getRun = (id: string) =>
  respond(
    Effect.map(
      Effect.flatMap(findRun(id), (h) => h.view),
      (v) => HttpServerResponse.unsafeJson(runObject(v))
    )
  )

const deleteRun = (id: string) =>
  respond(
    Effect.map(
      Effect.flatMap(findRun(id), (h) => h.interrupt),
      (v) => HttpServerResponse.unsafeJson(runObject(v))
    )
  )

const runEvents = (id: string, request: HttpServerRequest.HttpServerRequest) =>
  respond(
    Effect.gen(function* () {
      const handle = yield* findRun(id)
      const header = request.headers["last-event-id"]
      const after = header === undefined || header.trim() === "" ? 0 : /^\d+$/.test(header.trim()) ? Number(header) : -1
      if (!Number.isInteger(after) || after < 0) {
        return yield* invalid(
          `Last-Event-ID must be an event number, got ${JSON.stringify(header)}.`,
          "Last-Event-ID",
          "bad_last_event_id"
        )
      }
      const body = handle.events(after).pipe(
        Stream.map((item) =>
          encoder.encode(
            item._tag === "Event"
              ? `id: ${item.seq}\nevent: ${item.event._tag}\ndata: ${Trace.eventToJsonLine(item.event)}\n\n`
              : `id: ${item.seq}\nevent: end\ndata: ${JSON.stringify(runObject(item.view))}\n\n`
          )
        ),
        // A comment every 15 s keeps proxies from closing a quiet stream.
        Stream.merge(Stream.tick(Duration.seconds(15)).pipe(Stream.drop(1), Stream.as(encoder.encode(": ping\n\n"))), {
          haltStrategy: "left"
        })
      )
      return sseResponse(body)
    })
  )

const healthz = Effect.gen(function* () {
  const state = yield* ServerState
  const stats = yield* state.admission.stats
  return HttpServerResponse.unsafeJson({
    status: state.draining.value ? "draining" : "ok",
    runs: {
      running: stats.running,
      queued: stats.queued,
      max_concurrent: stats.maxConcurrent,
      max_queue: stats.maxQueue
    }
  })
})

const sessionsError = (e: Sessions.SessionsError): ApiError => {
  switch (e.reason) {
    case "NotFound":
      return notFound(e.message, "id", "session_not_found")
    case "InvalidState":
      return invalid(e.message, "resume", "invalid_state")
    case "TooMany":
      return new ApiError({
        status: 429,
        type: "rate_limit_error",
        code: "too_many_sessions",
        message: e.message,
        retryAfter: 60
      })
    case "Draining":
      return new ApiError({
        status: 503,
        type: "server_error",
        code: "shutting_down",
        message: e.message,
        retryAfter: 5
      })
    case "Failed":
      return new ApiError({ status: 500, type: "server_error", code: "session_failed", message: e.message })
  }
}

const sessionObject = (v: Sessions.SessionView) => ({
  id: v.id,
  object: "rlm.session" as const,
  turns: v.turns,
  created_at: Math.floor(v.createdAt / 1000),
  last_used_at: Math.floor(v.lastUsedAt / 1000)
})

const contextOf = (
  state: State,
  body: { readonly context?: string | ReadonlyArray<string> | undefined; readonly context_id?: string | undefined }
) =>
  body.context !== undefined && body.context_id !== undefined
    ? Effect.fail(invalid("give context or context_id, not both.", "context_id", "conflicting_context"))
    : body.context_id !== undefined
      ? Effect.map(
          state.store.get(body.context_id).pipe(Effect.mapError(contextError("context_id"))),
          (c): string | ReadonlyArray<string> | undefined => c
        )
      : Effect.succeed(body.context)

const createSession = (request: HttpServerRequest.HttpServerRequest) =>
  respond(
    Effect.gen(function* () {
      const state = yield* ServerState
      const body = yield* readJson(request, state.maxBodyBytes, SessionRequest)
      const context = yield* contextOf(state, body)
      const view = yield* state.sessions
        .create({
          ...(context !== undefined ? { context } : {}),
          ...(body.resume !== undefined ? { resume: body.resume } : {})
        })
        .pipe(Effect.mapError(sessionsError))
      return HttpServerResponse.unsafeJson(sessionObject(view), { status: 201 })
    })
  )

const getSession = (id: string) =>
  respond(
    Effect.flatMap(ServerState, (state) =>
      state.sessions.get(id).pipe(
        Effect.mapError(sessionsError),
        Effect.map((v) => HttpServerResponse.unsafeJson(sessionObject(v)))
      )
    )
  )

const askSession = (id: string, request: HttpServerRequest.HttpServerRequest) =>
  respond(
    Effect.gen(function* () {
      const state = yield* ServerState
      const body = yield* readJson(request, state.maxBodyBytes, AskRequest)
      if (body.query.trim().length === 0) return yield* invalid("query is empty.", "query", "missing_query")
      const context = yield* contextOf(state, body)
      const turn = yield* state.sessions.ask(id, body.query, context !== undefined ? { context } : undefined).pipe(
        Effect.catchTags({
          SessionsError: (e) => Effect.fail(sessionsError(e)),
          Overloaded: (e) => Effect.fail(admissionError(e)),
          TurnFailed: (e) =>
            Effect.fail(OpenAiChat.runError(RunRegistry.runErrorOf(e.error), `${e.sessionId} turn ${e.turn}`))
        })
      )
      return HttpServerResponse.unsafeJson({
        object: "rlm.session.answer",
        session_id: turn.sessionId,
        turn: turn.turn,
        answer: turn.result.answer,
        steps: turn.result.steps,
        usage: OpenAiChat.usageOf(turn.result.totals),
        trace_file: turn.tracePath
      })
    })
  )

const deleteSession = (id: string) =>
  respond(
    Effect.flatMap(ServerState, (state) =>
      state.sessions.remove(id).pipe(
        Effect.mapError(sessionsError),
        Effect.map(({ state: exported }) =>
          HttpServerResponse.unsafeJson({ id, object: "rlm.session.deleted", deleted: true, state: exported })
        )
      )
    )
  )

const SessionsHandlers = HttpApiBuilder.group(ServerApi, "sessions", (handlers) =>
  handlers
    .handleRaw("createSession", ({ request }) => createSession(request))
    .handleRaw("getSession", ({ path }) => getSession(path.id))
    .handleRaw("ask", ({ path, request }) => askSession(path.id, request))
    .handleRaw("deleteSession", ({ path }) => deleteSession(path.id))
)

const OpenAiHandlers = HttpApiBuilder.group(ServerApi, "openai", (handlers) =>
  handlers.handleRaw("chatCompletions", ({ request }) => chatCompletions(request)).handleRaw("models", () => models)
)

const RunsHandlers = HttpApiBuilder.group(ServerApi, "runs", (handlers) =>
  handlers
    .handleRaw("uploadContext", ({ request }) => uploadContext(request))
    .handleRaw("getContext", ({ path }) => getContext(path.id))
    .handleRaw("deleteContext", ({ path }) => deleteContext(path.id))
    .handleRaw("startRun", ({ request }) => startRun(request))
    .handleRaw("getRun", ({ path }) => getRun(path.id))
    .handleRaw("runEvents", ({ path, request }) => runEvents(path.id, request))
    .handleRaw("deleteRun", ({ path }) => deleteRun(path.id))
)

const HealthHandlers = HttpApiBuilder.group(ServerApi, "health", (handlers) =>
  handlers.handleRaw("healthz", () => healthz)
)

/** Auth, the JSON body limit for the platform's own readers, and OpenAI-shaped 404s and 500s. */
const guard =
  (token: Redacted.Redacted<string> | undefined, maxBodyBytes: number) =>
  <E, R>(app: HttpApp.Default<E, R>): HttpApp.Default<unknown, R | HttpServerRequest.HttpServerRequest> =>
    Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      if (token !== undefined && request.url.split("?")[0] !== "/healthz") {
        const header = request.headers.authorization
        // The scheme is case-insensitive (RFC 9110 §11.1); the token is everything after it, trimmed.
        const scheme = header === undefined ? undefined : /^bearer[ \t]+(\S.*)$/i.exec(header.trim())
        const given = scheme?.[1]?.trim()
        if (given === undefined) {
          return toResponse(
            new ApiError({
              status: 401,
              type: "authentication_error",
              code: "missing_token",
              message: "this server needs a bearer token: send Authorization: Bearer <RLM_SERVER_TOKEN>."
            })
          )
        }
        if (!tokenMatches(given, Redacted.value(token))) {
          return toResponse(
            new ApiError({
              status: 401,
              type: "authentication_error",
              code: "invalid_token",
              message: "the bearer token is not this server's."
            })
          )
        }
      }
      return yield* app.pipe(HttpIncomingMessage.withMaxBodySize(Option.some(maxBodyBytes)))
    }).pipe(
      Effect.catchAllCause((cause) => {
        const failure = Cause.failureOption(cause)
        if (Option.isSome(failure) && (failure.value as { _tag?: string })._tag === "RouteNotFound") {
          return Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
            Effect.succeed(
              toResponse(
                notFound(
                  `no endpoint ${request.method} ${request.url.split("?")[0]}; see GET /docs.`,
                  undefined,
                  "unknown_endpoint"
                )
              )
            )
          )
        }
        if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause)
        return Effect.zipRight(
          Effect.logError("rlm serve: request failed", cause),
          Effect.succeed(
            toResponse(
              new ApiError({ status: 500, type: "server_error", code: "internal", message: "internal server error." })
            )
          )
        )
      })
    )

/**
 * The server as a Layer (see the module's doc). Fails with
 * {@link ServerError}: "UnsafeBind" for a non-loopback `host` without a
 * `token`, "Listen" when the port cannot be bound, "Storage" when a
 * directory cannot be made.
 *
 * @since 0.1.0
 * @category Layers
 */
export const layer = (
  options: Options
): Layer.Layer<Server | HttpServer.HttpServer, ServerError, LlmAdapter | Sandbox> =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      const host = options.host ?? defaults.host
      const port = options.port ?? defaults.port
      if (options.token === undefined && !isLoopback(host)) {
        return yield* new ServerError({
          reason: "UnsafeBind",
          message: `refusing to serve on ${host} without a token: set RLM_SERVER_TOKEN (clients then send Authorization: Bearer <token>), or bind a loopback address such as 127.0.0.1.`
        })
      }
      if (options.token !== undefined && Redacted.value(options.token).length === 0) {
        return yield* new ServerError({ reason: "InvalidOptions", message: "the token is empty." })
      }
      const maxConcurrent = options.maxConcurrentRuns ?? defaults.maxConcurrentRuns
      const maxQueue = options.maxQueue ?? defaults.maxQueue
      if (!(Number.isInteger(maxConcurrent) && maxConcurrent >= 1) || !(Number.isInteger(maxQueue) && maxQueue >= 0)) {
        return yield* new ServerError({
          reason: "InvalidOptions",
          message: `maxConcurrentRuns must be an integer >= 1 and maxQueue >= 0, got ${maxConcurrent} and ${maxQueue}.`
        })
      }
      const admission = yield* Admission.make({ maxConcurrent, maxQueue })
      const lazy = <A, E, R>(self: Effect.Effect<A, E, R>) =>
        options.lazySandbox === false ? self : Effect.updateService(self, Sandbox, LazySandbox.make)
      const maxContextBytes = options.maxContextBytes ?? defaults.maxContextBytes
      const store = yield* ContextStore.make({ dir: options.contextsDir, maxBytes: maxContextBytes }).pipe(
        Effect.mapError((e) => new ServerError({ reason: "Storage", message: e.message }))
      )
      const registry = yield* RunRegistry.make({
        tracesDir: options.tracesDir,
        runOptions: options.runOptions ?? {},
        admission,
        maxRetained: options.maxRetainedRuns
      }).pipe(lazy)
      const sessions = yield* Sessions.make({
        tracesDir: options.tracesDir,
        runOptions: options.runOptions ?? {},
        admission,
        maxSessions: options.maxSessions,
        idleTimeout: options.sessionIdleTimeout
      }).pipe(lazy)
      const draining = { value: false }
      const modelId = options.modelId ?? defaults.modelId
      const maxBodyBytes = options.maxBodyBytes ?? defaults.maxBodyBytes
      const state: State = {
        modelId,
        createdAt: Date.now(),
        maxBodyBytes,
        maxContextBytes,
        registry,
        store,
        admission,
        sessions,
        draining
      }
      const handlers = Layer.mergeAll(OpenAiHandlers, RunsHandlers, SessionsHandlers, HealthHandlers).pipe(
        Layer.provide(Layer.succeed(ServerState, state))
      )
      const api = HttpApiBuilder.api(ServerApi).pipe(Layer.provide(handlers))
      const docs = Layer.mergeAll(
        HttpApiBuilder.middlewareOpenApi({ path: "/docs" }),
        HttpApiBuilder.middlewareOpenApi({ path: "/docs/openapi.json" })
      )
      const listener = NodeHttpServer.layer(createServer, { host, port }).pipe(
        Layer.mapError(
          (e) =>
            new ServerError({
              reason: "Listen",
              message: `could not listen on ${host}:${port}: ${e.cause instanceof Error ? e.cause.message : String(e.cause)}`
            })
        )
      )
      // `HttpApiBuilder.serve` with the guard around the app itself (a `serve` middleware only sees errors after
      // the platform has answered them): its 404s and 500s become OpenAI-shaped.
      const app = Layer.unwrapEffect(
        Effect.map(HttpApiBuilder.httpApp, (app) => HttpServer.serve(guard(options.token, maxBodyBytes)(app)))
      ).pipe(Layer.provide(docs), Layer.provide([HttpApiBuilder.Router.Live, HttpApiBuilder.Middleware.layer]))
      const served = app.pipe(Layer.provide(api), Layer.provideMerge(listener))
      const grace = options.shutdownGrace ?? defaults.shutdownGrace
      // Released before the listener closes: refuse new runs, let those in flight finish (their requests answered),
      // then interrupt the rest, their traces written.
      const drain = Layer.scoped(
        Server,
        Effect.gen(function* () {
          const server = yield* HttpServer.HttpServer
          const address = server.address
          const boundPort = address._tag === "TcpAddress" ? address.port : port
          yield* Effect.addFinalizer(() =>
            Effect.zipRight(
              Effect.sync(() => {
                draining.value = true
              }),
              Effect.all([registry.drain(grace), sessions.drain(grace)], { concurrency: 2, discard: true })
            )
          )
          const urlHost = host.includes(":") ? `[${host}]` : host
          return {
            url: `http://${urlHost}:${boundPort}`,
            host,
            port: boundPort,
            modelId,
            authenticated: options.token !== undefined,
            registry,
            store,
            admission,
            sessions
          }
        })
      )
      return Layer.provideMerge(drain, served)
    })
  )

/**
 * {@link layer} with the token read from the configuration:
 * `RLM_SERVER_TOKEN` (optional, redacted).
 *
 * @since 0.1.0
 * @category Layers
 */
export const layerConfig = (
  options: Omit<Options, "token">
): Layer.Layer<Server | HttpServer.HttpServer, ServerError | ConfigError.ConfigError, LlmAdapter | Sandbox> =>
  Layer.unwrapEffect(
    Effect.map(Config.option(Config.redacted("RLM_SERVER_TOKEN")), (token) =>
      layer({ ...options, token: Option.getOrUndefined(token) })
    )
  )
