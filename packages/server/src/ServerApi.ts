/**
 * The HTTP API of `rlm serve`, as an `@effect/platform` `HttpApi`: its groups,
 * endpoints and the Schemas of requests, responses and errors. The OpenAPI
 * document (`GET /docs`, also `GET /docs/openapi.json`) is made from it.
 *
 * Every error is OpenAI's error JSON (`ApiError.ErrorBody`). The bodies are
 * read and checked by the server itself (`Server.ts`), not by `HttpApi`'s
 * decoder, so that a malformed body gets an OpenAI-shaped 400 and a big one a
 * 413 before it is read to the end.
 *
 * @since 0.1.0
 */
import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as OpenApi from "@effect/platform/OpenApi"
import * as Schema from "effect/Schema"
import { ErrorBody } from "./ApiError.js"

// ---------------------------------------------------------------------------
// chat completions
// ---------------------------------------------------------------------------

/**
 * A content part of a chat message; only `text` parts can be read.
 *
 * @since 0.1.0
 * @category Schemas
 */
export const ContentPart = Schema.Struct({
  type: Schema.String,
  text: Schema.optional(Schema.String)
})

/**
 * @since 0.1.0
 * @category Schemas
 */
export const ChatMessage = Schema.Struct({
  role: Schema.Literal("system", "developer", "user", "assistant", "tool"),
  content: Schema.optionalWith(Schema.NullOr(Schema.Union(Schema.String, Schema.Array(ContentPart))), {
    exact: true
  }),
  name: Schema.optional(Schema.String)
})

/**
 * @since 0.1.0
 * @category Schemas
 */
export type ChatMessage = typeof ChatMessage.Type

/**
 * `POST /v1/chat/completions`: OpenAI's request; fields other than these
 * (`temperature`, `max_tokens`, …) are accepted and ignored. The last message
 * must be the `user` query; the ones before it are the context, unless
 * `context_id` names an uploaded context.
 *
 * @since 0.1.0
 * @category Schemas
 */
export const ChatCompletionRequest = Schema.Struct({
  model: Schema.optional(Schema.String),
  messages: Schema.Array(ChatMessage),
  stream: Schema.optional(Schema.NullOr(Schema.Boolean)),
  stream_options: Schema.optional(Schema.NullOr(Schema.Struct({ include_usage: Schema.optional(Schema.Boolean) }))),
  context_id: Schema.optional(Schema.NullOr(Schema.String))
}).annotations({ identifier: "ChatCompletionRequest" })

/**
 * @since 0.1.0
 * @category Schemas
 */
export type ChatCompletionRequest = typeof ChatCompletionRequest.Type

/**
 * OpenAI's `usage`, for the whole run tree (root calls and every sub-call).
 *
 * @since 0.1.0
 * @category Schemas
 */
export const Usage = Schema.Struct({
  prompt_tokens: Schema.Number,
  completion_tokens: Schema.Number,
  total_tokens: Schema.Number
})

/**
 * @since 0.1.0
 * @category Schemas
 */
export type Usage = typeof Usage.Type

/**
 * What the run did, beside OpenAI's fields.
 *
 * @since 0.1.0
 * @category Schemas
 */
export const RunSummary = Schema.Struct({
  run_id: Schema.String,
  steps: Schema.Number,
  root_calls: Schema.Number,
  sub_calls: Schema.Number
})

/**
 * @since 0.1.0
 * @category Schemas
 */
export const ChatCompletion = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("chat.completion"),
  created: Schema.Number,
  model: Schema.String,
  choices: Schema.Array(
    Schema.Struct({
      index: Schema.Number,
      message: Schema.Struct({ role: Schema.Literal("assistant"), content: Schema.String }),
      finish_reason: Schema.Literal("stop")
    })
  ),
  usage: Usage,
  rlm: RunSummary
}).annotations({ identifier: "ChatCompletion" })

/**
 * @since 0.1.0
 * @category Schemas
 */
export type ChatCompletion = typeof ChatCompletion.Type

/**
 * One `data:` chunk of a streamed chat completion.
 *
 * @since 0.1.0
 * @category Schemas
 */
export const ChatCompletionChunk = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("chat.completion.chunk"),
  created: Schema.Number,
  model: Schema.String,
  choices: Schema.Array(
    Schema.Struct({
      index: Schema.Number,
      delta: Schema.Struct({
        role: Schema.optional(Schema.Literal("assistant")),
        content: Schema.optional(Schema.String),
        reasoning_content: Schema.optional(Schema.String)
      }),
      finish_reason: Schema.NullOr(Schema.String)
    })
  ),
  usage: Schema.optional(Schema.NullOr(Usage))
}).annotations({ identifier: "ChatCompletionChunk" })

/**
 * @since 0.1.0
 * @category Schemas
 */
export type ChatCompletionChunk = typeof ChatCompletionChunk.Type

/**
 * @since 0.1.0
 * @category Schemas
 */
export const ModelList = Schema.Struct({
  object: Schema.Literal("list"),
  data: Schema.Array(
    Schema.Struct({
      id: Schema.String,
      object: Schema.Literal("model"),
      created: Schema.Number,
      owned_by: Schema.String
    })
  )
}).annotations({ identifier: "ModelList" })

// ---------------------------------------------------------------------------
// contexts, runs
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category Schemas
 */
export const ContextObject = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("rlm.context"),
  bytes: Schema.Number,
  sha256: Schema.String,
  created_at: Schema.Number
}).annotations({ identifier: "Context" })

/**
 * `POST /v1/runs`: a query over a context given inline or by id (not both;
 * neither: an empty context).
 *
 * @since 0.1.0
 * @category Schemas
 */
export const RunRequest = Schema.Struct({
  query: Schema.String,
  context: Schema.optional(Schema.Union(Schema.String, Schema.Array(Schema.String))),
  context_id: Schema.optional(Schema.String),
  model: Schema.optional(Schema.String)
}).annotations({ identifier: "RunRequest" })

/**
 * @since 0.1.0
 * @category Schemas
 */
export type RunRequest = typeof RunRequest.Type

/**
 * A run's state (`GET /v1/runs/:id`).
 *
 * @since 0.1.0
 * @category Schemas
 */
export const RunObject = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("rlm.run"),
  status: Schema.Literal("queued", "running", "succeeded", "failed", "interrupted"),
  model: Schema.String,
  query: Schema.String,
  created_at: Schema.Number,
  started_at: Schema.NullOr(Schema.Number),
  finished_at: Schema.NullOr(Schema.Number),
  answer: Schema.NullOr(Schema.String),
  partial_answer: Schema.NullOr(Schema.String),
  steps: Schema.NullOr(Schema.Number),
  usage: Schema.NullOr(Usage),
  error: Schema.NullOr(
    Schema.Struct({ message: Schema.String, type: Schema.String, code: Schema.NullOr(Schema.String) })
  ),
  events: Schema.Number,
  trace_file: Schema.String
}).annotations({ identifier: "Run" })

/**
 * @since 0.1.0
 * @category Schemas
 */
export type RunObject = typeof RunObject.Type

/**
 * @since 0.1.0
 * @category Schemas
 */
export const Health = Schema.Struct({
  status: Schema.Literal("ok", "draining"),
  runs: Schema.Struct({
    running: Schema.Number,
    queued: Schema.Number,
    max_concurrent: Schema.Number,
    max_queue: Schema.Number
  })
}).annotations({ identifier: "Health" })

const IdPath = Schema.Struct({ id: Schema.String })

const errors = <E extends HttpApiEndpoint.HttpApiEndpoint.Any>(endpoint: E, statuses: ReadonlyArray<number>): E =>
  statuses.reduce<any>((e, status) => e.addError(ErrorBody, { status }), endpoint)

const sse = "text/event-stream: `data:` lines, ended by `data: [DONE]`"

/**
 * The OpenAI-compatible endpoints.
 *
 * @since 0.1.0
 * @category Api
 */
export class OpenAiGroup extends HttpApiGroup.make("openai")
  .add(
    errors(
      HttpApiEndpoint.post("chatCompletions", "/v1/chat/completions")
        .setPayload(ChatCompletionRequest)
        .addSuccess(ChatCompletion)
        .annotate(
          OpenApi.Description,
          `The last user message is the query; the earlier messages, or the uploaded context named by context_id, are the context. With stream: true the reply is ${sse} (chat.completion.chunk: the steps as delta.reasoning_content, then the answer as delta.content).`
        ),
      [400, 401, 404, 413, 422, 429, 500, 502, 503, 504]
    )
  )
  .add(errors(HttpApiEndpoint.get("models", "/v1/models").addSuccess(ModelList), [401])) {}

/**
 * Contexts and runs.
 *
 * @since 0.1.0
 * @category Api
 */
export class RunsGroup extends HttpApiGroup.make("runs")
  .add(
    errors(
      HttpApiEndpoint.post("uploadContext", "/v1/contexts")
        .addSuccess(ContextObject, { status: 201 })
        .annotate(OpenApi.Description, "The request body is the context text (UTF-8), streamed to disk."),
      [400, 401, 413]
    )
  )
  .add(
    errors(HttpApiEndpoint.get("getContext", "/v1/contexts/:id").setPath(IdPath).addSuccess(ContextObject), [401, 404])
  )
  .add(errors(HttpApiEndpoint.del("deleteContext", "/v1/contexts/:id").setPath(IdPath), [401, 404]))
  .add(
    errors(
      HttpApiEndpoint.post("startRun", "/v1/runs")
        .setPayload(RunRequest)
        .addSuccess(RunObject, { status: 202 })
        .annotate(OpenApi.Description, "Start a run and return at once."),
      [400, 401, 404, 413, 429, 503]
    )
  )
  .add(errors(HttpApiEndpoint.get("getRun", "/v1/runs/:id").setPath(IdPath).addSuccess(RunObject), [401, 404]))
  .add(
    errors(
      HttpApiEndpoint.get("runEvents", "/v1/runs/:id/events")
        .setPath(IdPath)
        .annotate(
          OpenApi.Description,
          "text/event-stream of the run's trace events (`id:` numbered from 1, `event:` the event's tag, `data:` its JSON), then `event: end` with the run. Send Last-Event-ID to resume after that event."
        ),
      [401, 404]
    )
  )
  .add(
    errors(
      HttpApiEndpoint.del("deleteRun", "/v1/runs/:id")
        .setPath(IdPath)
        .addSuccess(RunObject)
        .annotate(OpenApi.Description, "Interrupt the run; its partial trace is kept (trace_file)."),
      [401, 404]
    )
  ) {}

/**
 * `POST /v1/sessions`: a session over a context given inline or by id, or
 * resumed from a state a `DELETE` returned.
 *
 * @since 0.1.0
 * @category Schemas
 */
export const SessionRequest = Schema.Struct({
  context: Schema.optional(Schema.Union(Schema.String, Schema.Array(Schema.String))),
  context_id: Schema.optional(Schema.String),
  resume: Schema.optional(Schema.Unknown)
}).annotations({ identifier: "SessionRequest" })

/**
 * @since 0.1.0
 * @category Schemas
 */
export const SessionObject = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("rlm.session"),
  turns: Schema.Number,
  created_at: Schema.Number,
  last_used_at: Schema.Number
}).annotations({ identifier: "Session" })

/**
 * `POST /v1/sessions/:id/ask`: the next question; `context` / `context_id`
 * switch the session to a new context from this turn on.
 *
 * @since 0.1.0
 * @category Schemas
 */
export const AskRequest = Schema.Struct({
  query: Schema.String,
  context: Schema.optional(Schema.Union(Schema.String, Schema.Array(Schema.String))),
  context_id: Schema.optional(Schema.String)
}).annotations({ identifier: "AskRequest" })

/**
 * @since 0.1.0
 * @category Schemas
 */
export const AskResponse = Schema.Struct({
  object: Schema.Literal("rlm.session.answer"),
  session_id: Schema.String,
  turn: Schema.Number,
  answer: Schema.String,
  steps: Schema.Number,
  usage: Usage,
  trace_file: Schema.String
}).annotations({ identifier: "AskResponse" })

/**
 * @since 0.1.0
 * @category Schemas
 */
export const SessionDeleted = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("rlm.session.deleted"),
  deleted: Schema.Literal(true),
  state: Schema.Unknown
}).annotations({ identifier: "SessionDeleted" })

/**
 * Multi-turn sessions.
 *
 * @since 0.1.0
 * @category Api
 */
export class SessionsGroup extends HttpApiGroup.make("sessions")
  .add(
    errors(
      HttpApiEndpoint.post("createSession", "/v1/sessions")
        .setPayload(SessionRequest)
        .addSuccess(SessionObject, { status: 201 })
        .annotate(OpenApi.Description, "Open a session: one REPL and one conversation over many asks."),
      [400, 401, 404, 413, 429, 503]
    )
  )
  .add(
    errors(HttpApiEndpoint.get("getSession", "/v1/sessions/:id").setPath(IdPath).addSuccess(SessionObject), [401, 404])
  )
  .add(
    errors(
      HttpApiEndpoint.post("ask", "/v1/sessions/:id/ask")
        .setPath(IdPath)
        .setPayload(AskRequest)
        .addSuccess(AskResponse)
        .annotate(OpenApi.Description, "Ask the next question; turns of one session run one at a time."),
      [400, 401, 404, 413, 422, 429, 500, 502, 503, 504]
    )
  )
  .add(
    errors(
      HttpApiEndpoint.del("deleteSession", "/v1/sessions/:id")
        .setPath(IdPath)
        .addSuccess(SessionDeleted)
        .annotate(OpenApi.Description, "Close the session; `state` is its export, to pass as `resume` later."),
      [401, 404]
    )
  ) {}

/**
 * @since 0.1.0
 * @category Api
 */
export class HealthGroup extends HttpApiGroup.make("health").add(
  HttpApiEndpoint.get("healthz", "/healthz").addSuccess(Health)
) {}

/**
 * The whole API.
 *
 * @since 0.1.0
 * @category Api
 */
export class ServerApi extends HttpApi.make("rlm")
  .add(OpenAiGroup)
  .add(RunsGroup)
  .add(SessionsGroup)
  .add(HealthGroup)
  .annotate(OpenApi.Title, "rlm serve")
  .annotate(
    OpenApi.Description,
    "A Recursive Language Model behind an OpenAI-compatible HTTP API. Send `Authorization: Bearer <RLM_SERVER_TOKEN>` when the server has a token."
  ) {}
