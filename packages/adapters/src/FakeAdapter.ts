/**
 * A scripted, deterministic `LlmAdapter` for tests, examples and the CLI's
 * `--fake` flag.
 *
 * - Root-role calls consume `script` in order. An entry is a reply text, a
 *   list of tool calls (`[{ "name": "run_code", "arguments": { "code": "…" } }]`),
 *   or both (`{ "text": "…", "toolCalls": [...] }`).
 * - Sub-role calls reply with the first rule whose `match` is a substring of
 *   the request's prompt (all message contents joined with `"\n"`); a rule
 *   with `"match": ""` matches every prompt.
 * - Each call sleeps `latencyMs` first (with `Effect.sleep`, so `TestClock`
 *   drives it in `it.effect` tests).
 * - Usage is estimated as `ceil(characters / 4)` tokens, or reported unknown.
 *
 * @since 0.1.0
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as internal from "./internal/fakeAdapter.js"
import { type ChatRequest, LlmAdapter, type LlmError } from "./LlmAdapter.js"

/**
 * One sub-call rule: a request whose prompt contains `match` gets `reply`.
 *
 * @since 0.1.0
 * @category Models
 */
export class FakeRule extends Schema.Class<FakeRule>("@rlm-runtime/adapters/FakeRule")({
  match: Schema.String,
  reply: Schema.String
}) {}

type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }

const Json: Schema.Schema<Json> = Schema.suspend(() =>
  Schema.Union(
    Schema.Null,
    Schema.Boolean,
    Schema.JsonNumber,
    Schema.String,
    Schema.Array(Json),
    Schema.Record({ key: Schema.String, value: Json })
  )
)

/**
 * One scripted tool call. `arguments` is a JSON object, sent as its JSON
 * text, or a string, sent as is as the raw arguments text (so broken
 * arguments such as `"{code: 1"` can be scripted). Absent: `{}`. `id`
 * defaults to `call_<root call>_<index>`.
 *
 * @since 0.2.0
 * @category Models
 */
export class FakeToolCall extends Schema.Class<FakeToolCall>("@rlm-runtime/adapters/FakeToolCall")({
  id: Schema.optionalWith(Schema.String, { exact: true }),
  name: Schema.String,
  arguments: Schema.optionalWith(Schema.Union(Schema.String, Schema.Record({ key: Schema.String, value: Json })), {
    exact: true
  })
}) {}

/**
 * One scripted root reply: a text, a list of tool calls, or a text with tool
 * calls.
 *
 * @since 0.2.0
 * @category Models
 */
export const FakeReply = Schema.Union(
  Schema.String,
  Schema.Array(FakeToolCall),
  Schema.Struct({ text: Schema.String, toolCalls: Schema.Array(FakeToolCall) })
)

/**
 * @since 0.2.0
 * @category Models
 */
export type FakeReply = typeof FakeReply.Type

/**
 * How the fake reports token usage: `"estimated"` (`ceil(chars / 4)` for
 * input and output) or `"unknown"` (every field `undefined`).
 *
 * @since 0.1.0
 * @category Models
 */
export const UsageMode = Schema.Literal("estimated", "unknown")

/**
 * @since 0.1.0
 * @category Models
 */
export type UsageMode = typeof UsageMode.Type

/**
 * The JSON file format of the CLI's `--fake` flag:
 *
 * ```json
 * { "script": ["root reply 1", [{ "name": "final_answer", "arguments": { "answer": "done" } }]],
 *   "rules": [{ "match": "Summarize", "reply": "fake summary" }],
 *   "latencyMs": 50 }
 * ```
 *
 * `script` and `rules` default to `[]`; `latencyMs` defaults to 0; `usage`
 * defaults to `"estimated"`.
 *
 * @since 0.1.0
 * @category Models
 */
export class FakeScript extends Schema.Class<FakeScript>("@rlm-runtime/adapters/FakeScript")({
  script: Schema.optionalWith(Schema.Array(FakeReply), { default: () => [] }),
  rules: Schema.optionalWith(Schema.Array(FakeRule), { default: () => [] }),
  latencyMs: Schema.optionalWith(Schema.NonNegative.pipe(Schema.finite()), { exact: true }),
  usage: Schema.optionalWith(UsageMode, { exact: true })
}) {}

/**
 * A `--fake` script file that could not be read or decoded.
 *
 * @since 0.1.0
 * @category Errors
 */
export class FakeScriptError extends Schema.TaggedError<FakeScriptError>("@rlm-runtime/adapters/FakeScriptError")(
  "FakeScriptError",
  {
    reason: Schema.Literal("InvalidJson", "InvalidShape", "FileError"),
    message: Schema.String
  }
) {}

/**
 * @since 0.1.0
 * @category Models
 */
export interface Options {
  /** Replies for root-role calls, consumed in order: texts, tool calls, or both (see {@link FakeReply}). */
  readonly script?:
    | ReadonlyArray<
        | string
        | ReadonlyArray<internal.ScriptedCall>
        | { readonly text: string; readonly toolCalls: ReadonlyArray<internal.ScriptedCall> }
      >
    | undefined
  /** Rules for sub-role calls; the first rule whose `match` occurs in the prompt wins. */
  readonly rules?: ReadonlyArray<{ readonly match: string; readonly reply: string }> | undefined
  /** Simulated latency of every call, in milliseconds (default 0). */
  readonly latencyMs?: number | undefined
  /** `"estimated"` (default) or `"unknown"` usage. */
  readonly usage?: UsageMode | undefined
  /** The model name reported for both roles (default `"fake"`). */
  readonly model?: string | undefined
}

/**
 * A snapshot of what an instrumented fake has seen.
 *
 * @since 0.1.0
 * @category Models
 */
export interface Stats {
  /** Calls started, by role. */
  readonly calls: { readonly root: number; readonly sub: number }
  /** Calls that completed successfully / failed (interrupted calls count in neither). */
  readonly succeeded: number
  readonly failed: number
  /** Calls currently in flight (started, not yet finished, failed or interrupted). */
  readonly inFlight: number
  /** The largest number of calls that were ever in flight at the same time. */
  readonly maxInFlight: number
  /** Every request seen, in the order the calls started. */
  readonly requests: ReadonlyArray<ChatRequest>
}

/**
 * Read access to an instrumented fake's counters.
 *
 * @since 0.1.0
 * @category Models
 */
export interface Instrumentation {
  /** The current counters. */
  readonly stats: Effect.Effect<Stats>
  /** Zero every counter (`inFlight` included, so only call it between runs). */
  readonly reset: Effect.Effect<void>
}

/**
 * The instrumentation of the fake provided by {@link layerInstrumented}.
 *
 * @since 0.1.0
 * @category Tags
 */
export class FakeInstrumentation extends Context.Tag("@rlm-runtime/adapters/FakeAdapter/FakeInstrumentation")<
  FakeInstrumentation,
  Instrumentation
>() {}

const emptyStats: Stats = {
  calls: { root: 0, sub: 0 },
  succeeded: 0,
  failed: 0,
  inFlight: 0,
  maxInFlight: 0,
  requests: []
}

/**
 * Build a fake adapter together with counters of calls by role, in-flight
 * calls (current and maximum) and the requests seen.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const makeInstrumented = (
  options: Options
): Effect.Effect<{ readonly adapter: LlmAdapter.Service } & Instrumentation> =>
  Effect.gen(function* () {
    const cursor = yield* Ref.make(0)
    const stats = yield* Ref.make(emptyStats)
    // The requests seen, in order, appended in place: copying the list into every new `Stats` made each call
    // O(calls so far) (1,000 sub-calls copied ~500,000 entries). `stats` hands out a copy.
    const seen: Array<ChatRequest> = []
    const latency = Duration.millis(Math.max(0, options.latencyMs ?? 0))
    const script = options.script ?? []
    const rules = options.rules ?? []
    const usageMode = options.usage ?? "estimated"
    const model = options.model ?? "fake"

    const start = (request: ChatRequest) =>
      Ref.update(stats, (s) => {
        const inFlight = s.inFlight + 1
        return {
          ...s,
          calls: { ...s.calls, [request.role]: s.calls[request.role] + 1 },
          inFlight,
          maxInFlight: Math.max(s.maxInFlight, inFlight)
        }
      }).pipe(
        Effect.zipRight(
          Effect.sync(() => {
            seen.push(request)
          })
        )
      )

    const reply = (request: ChatRequest): Effect.Effect<internal.Scripted, LlmError> =>
      request.role === "root"
        ? Effect.flatMap(
            Ref.getAndUpdate(cursor, (n) => n + 1),
            (index) => internal.scriptReply(script, index)
          )
        : Effect.map(internal.ruleReply(rules, request), (text) => ({ text, toolCalls: [] }))

    const chat = (request: ChatRequest) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.zipRight(
          start(request),
          restore(
            Effect.zipRight(
              Duration.toMillis(latency) > 0 ? Effect.sleep(latency) : Effect.void,
              Effect.map(reply(request), (scripted) => internal.response(request, scripted, model, usageMode))
            )
          ).pipe(
            Effect.onExit((exit) =>
              Ref.update(stats, (s) => ({
                ...s,
                inFlight: s.inFlight - 1,
                succeeded: s.succeeded + (exit._tag === "Success" ? 1 : 0),
                failed: s.failed + (exit._tag === "Failure" && !internal.isInterruptedOnly(exit.cause) ? 1 : 0)
              }))
            )
          )
        )
      )

    return {
      adapter: { model: () => model, chat },
      stats: Effect.map(Ref.get(stats), (s): Stats => ({ ...s, requests: [...seen] })),
      reset: Effect.zipRight(
        Ref.set(stats, emptyStats),
        Effect.sync(() => {
          seen.length = 0
        })
      )
    }
  })

/**
 * Build a fake adapter service.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = (options: Options): Effect.Effect<LlmAdapter.Service> =>
  Effect.map(makeInstrumented(options), (_) => _.adapter)

/**
 * @since 0.1.0
 * @category Layers
 */
export const layer = (options: Options): Layer.Layer<LlmAdapter> => Layer.effect(LlmAdapter, make(options))

/**
 * The fake adapter plus its {@link FakeInstrumentation}.
 *
 * @since 0.1.0
 * @category Layers
 */
export const layerInstrumented = (options: Options): Layer.Layer<LlmAdapter | FakeInstrumentation> =>
  Layer.effectContext(
    Effect.map(makeInstrumented(options), ({ adapter, reset, stats }) =>
      Context.make(LlmAdapter, adapter).pipe(Context.add(FakeInstrumentation, { stats, reset }))
    )
  )

const decodeJson = Schema.decodeUnknown(Schema.parseJson())
const decodeShape = Schema.decodeUnknown(FakeScript, { onExcessProperty: "error" })

/**
 * Decode a `--fake` script from JSON text. Fails with a {@link FakeScriptError}
 * that says what is wrong and where.
 *
 * @since 0.1.0
 * @category Decoding
 */
export const decodeScript = (text: string): Effect.Effect<FakeScript, FakeScriptError> =>
  decodeJson(text).pipe(
    Effect.mapError(
      (error) =>
        new FakeScriptError({
          reason: "InvalidJson",
          message: `The fake script is not valid JSON (${ParseResult.TreeFormatter.formatErrorSync(error)}). Expected ${internal.shapeHint}.`
        })
    ),
    Effect.flatMap((json) =>
      decodeShape(json).pipe(
        Effect.mapError(
          (error) =>
            new FakeScriptError({
              reason: "InvalidShape",
              message: `The fake script does not have the expected shape ${internal.shapeHint}:\n${ParseResult.TreeFormatter.formatErrorSync(error)}`
            })
        )
      )
    )
  )

/**
 * Encode a script as JSON text (the inverse of {@link decodeScript}).
 *
 * @since 0.1.0
 * @category Decoding
 */
export const encodeScript = (script: FakeScript): string =>
  JSON.stringify(Schema.encodeSync(FakeScript)(script), null, 2)

/**
 * Read and decode a `--fake` script file.
 *
 * @since 0.1.0
 * @category Decoding
 */
export const readScript = (path: string): Effect.Effect<FakeScript, FakeScriptError, FileSystem.FileSystem> =>
  internal.readFile(path).pipe(
    Effect.mapError(
      (error) =>
        new FakeScriptError({
          reason: "FileError",
          message: `Could not read the fake script file ${JSON.stringify(path)}: ${error.message}`
        })
    ),
    Effect.flatMap(decodeScript)
  )

/**
 * A fake adapter from a `--fake` script file. `latencyMs` and `usage` given
 * in `options` (for example from CLI flags) win over the file's.
 *
 * @since 0.1.0
 * @category Layers
 */
export const layerFromFile = (
  path: string,
  options?: Omit<Options, "script" | "rules">
): Layer.Layer<LlmAdapter, FakeScriptError, FileSystem.FileSystem> =>
  Layer.effect(
    LlmAdapter,
    Effect.flatMap(readScript(path), (file) =>
      make({
        script: file.script,
        rules: file.rules,
        latencyMs: options?.latencyMs ?? file.latencyMs,
        usage: options?.usage ?? file.usage,
        model: options?.model
      })
    )
  )
