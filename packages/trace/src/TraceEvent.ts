/**
 * Trace events: everything a run did, as Schema-defined data.
 *
 * Every number is a `Schema.JsonNumber` (finite): `NaN` and `Infinity` have no
 * JSON form, so they are rejected when an event is built rather than silently
 * turning into `null` in an exported trace that can no longer be decoded.
 *
 * @since 0.1.0
 */
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"

/**
 * Token usage; a field the provider did not report is absent (unknown).
 *
 * @since 0.1.0
 * @category Models
 */
export const TokenUsage = Schema.Struct({
  inputTokens: Schema.optional(Schema.JsonNumber),
  outputTokens: Schema.optional(Schema.JsonNumber),
  totalTokens: Schema.optional(Schema.JsonNumber)
})

/**
 * @since 0.1.0
 * @category Models
 */
export type TokenUsage = typeof TokenUsage.Type

/**
 * Add two usages field by field. A field stays absent (unknown) unless one
 * side reports it.
 *
 * @since 0.1.0
 * @category Combinators
 */
export const addUsage = (a: TokenUsage, b: TokenUsage): TokenUsage => {
  const sum = (x: number | undefined, y: number | undefined) => (x === undefined ? y : y === undefined ? x : x + y)
  const inputTokens = sum(a.inputTokens, b.inputTokens)
  const outputTokens = sum(a.outputTokens, b.outputTokens)
  const totalTokens = sum(a.totalTokens, b.totalTokens)
  return {
    ...(inputTokens !== undefined ? { inputTokens } : {}),
    ...(outputTokens !== undefined ? { outputTokens } : {}),
    ...(totalTokens !== undefined ? { totalTokens } : {})
  }
}

/**
 * What the root model is told about the context.
 *
 * @since 0.1.0
 * @category Models
 */
export const ContextMetadata = Schema.Struct({
  type: Schema.Literal("text", "documents"),
  totalChars: Schema.JsonNumber,
  documentCount: Schema.JsonNumber,
  documentLengths: Schema.Array(Schema.JsonNumber),
  preview: Schema.String
})

/**
 * @since 0.1.0
 * @category Models
 */
export type ContextMetadata = typeof ContextMetadata.Type

/**
 * @since 0.1.0
 * @category Models
 */
export const CodeBlock = Schema.Struct({
  code: Schema.String,
  stdout: Schema.String,
  stderr: Schema.String,
  error: Schema.optional(Schema.String),
  truncated: Schema.Boolean,
  durationMs: Schema.JsonNumber
})

/**
 * @since 0.1.0
 * @category Models
 */
export type CodeBlock = typeof CodeBlock.Type

/**
 * The wall a run's interpreter ran behind (the sandbox service's
 * `isolation`): `"namespace"`, an OS sandbox (own network and PID
 * namespaces) under the process wall; `"process"`, a locked-down separate
 * process only.
 *
 * @since 0.2.0
 * @category Models
 */
export const Isolation = Schema.Literal("namespace", "process")

/**
 * @since 0.2.0
 * @category Models
 */
export type Isolation = typeof Isolation.Type

/**
 * A run (root or child) started. `parentRunId`/`parentStep` place a child RLM
 * under the step of its parent that started it.
 *
 * @since 0.1.0
 * @category Events
 */
export class RunStarted extends Schema.TaggedClass<RunStarted>()("RunStarted", {
  runId: Schema.String,
  parentRunId: Schema.optional(Schema.String),
  parentStep: Schema.optional(Schema.JsonNumber),
  depth: Schema.JsonNumber,
  query: Schema.String,
  context: ContextMetadata,
  model: Schema.String,
  language: Schema.String,
  /**
   * The wall its interpreter ran behind. Required when built and always
   * written; read as `"process"` when absent, as in format-1 traces, which
   * were all written before the OS wall existed.
   */
  isolation: Schema.optionalToRequired(Isolation, Isolation, {
    decode: Option.getOrElse(() => "process" as const),
    encode: Option.some
  }),
  timestamp: Schema.JsonNumber
}) {}

/**
 * The interpreter died during a step (a crash such as a stack overflow, out of
 * memory, killed past its time limit, a protocol violation) and was replaced
 * with a fresh one, its variables lost. `reason` is the sandbox error's
 * reason, `message` its text, `restarts` the run's interpreter losses so far,
 * this one included.
 *
 * @since 0.2.0
 * @category Models
 */
export const InterpreterLost = Schema.Struct({
  reason: Schema.String,
  message: Schema.String,
  restarts: Schema.JsonNumber
})

/**
 * @since 0.2.0
 * @category Models
 */
export type InterpreterLost = typeof InterpreterLost.Type

/**
 * One tool call of the root model's reply (the tools protocol): the
 * provider's call id, the tool's name and the arguments as the model wrote
 * them (JSON text, possibly broken).
 *
 * @since 0.2.0
 * @category Models
 */
export const ToolCall = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  arguments: Schema.String
})

/**
 * @since 0.2.0
 * @category Models
 */
export type ToolCall = typeof ToolCall.Type

/**
 * One root iteration: the model's reply and the code blocks run from it.
 * Under the tools protocol, `toolCalls` holds the reply's tool calls (its
 * `run_code` calls are the blocks, in order), so a run can be replayed.
 *
 * @since 0.1.0
 * @category Events
 */
export class StepCompleted extends Schema.TaggedClass<StepCompleted>()("StepCompleted", {
  runId: Schema.String,
  step: Schema.JsonNumber,
  reply: Schema.String,
  blocks: Schema.Array(CodeBlock),
  /** A message told to the model that is not REPL output (a rejected final answer, a parse problem). */
  feedback: Schema.optional(Schema.String),
  /** Set when the interpreter was lost during this step (blocks after the lost one were not run). */
  interpreterLost: Schema.optional(InterpreterLost),
  /** The tool calls of the reply, in order (the tools protocol; format 3). Absent: none. */
  toolCalls: Schema.optional(Schema.Array(ToolCall)),
  usage: TokenUsage,
  /** The model that answered: the name the server reported, else the one configured. */
  model: Schema.String,
  modelMs: Schema.JsonNumber,
  durationMs: Schema.JsonNumber,
  /** Why the root model stopped, when the adapter could tell (format 3). */
  finishReason: Schema.optional(LlmAdapter.FinishReason),
  /**
   * SHA-256 of the root request's messages, the key `LlmCache.keyOf` gives
   * it (format 3): replay checks the request it is asked against it.
   */
  promptSha256: Schema.optional(Schema.String),
  /** SHA-256 of `reply` (format 3): replay refuses a trace whose reply does not match it. */
  replySha256: Schema.optional(Schema.String)
}) {}

/**
 * A JSON value.
 *
 * @since 0.2.0
 * @category Models
 */
export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }

/**
 * A JSON value (numbers finite).
 *
 * @since 0.2.0
 * @category Models
 */
export const Json: Schema.Schema<Json> = Schema.suspend(() =>
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
 * What a run was started with, so it can be run again from its trace alone
 * (`rlm replay`): the query, the whole context, the REPL language and the
 * options. Written first by `rlm run --trace`; a library run does not record
 * it (its caller knows its inputs). The context makes the trace as large as
 * the context: trace files are private (mode `0600`). New in format 3.
 *
 * @since 0.2.0
 * @category Events
 */
export class RunInput extends Schema.TaggedClass<RunInput>()("RunInput", {
  runId: Schema.String,
  query: Schema.String,
  context: Schema.String,
  /** SHA-256 of `context`: replay refuses a trace whose context does not match it. */
  contextSha256: Schema.String,
  language: Schema.String,
  protocol: Schema.optional(Schema.Literal("fenced", "tools")),
  /** The run's policy in its encoded (JSON) form, as `@rlm-runtime/core/Policy` writes it. */
  policy: Schema.Record({ key: Schema.String, value: Json }),
  systemPrompt: Schema.optional(Schema.String),
  requireReplBeforeFinal: Schema.optional(Schema.Boolean),
  /** `false` when the run had no sub-call functions (`RunOptions.subCalls`; since 0.3.0). */
  subCalls: Schema.optional(Schema.Boolean),
  execTimeoutMs: Schema.optional(Schema.JsonNumber),
  /**
   * The model names the adapter was configured with, by role (what budgets
   * and prices are keyed on; a reply's `model` is the name the server
   * reported, which may differ).
   */
  models: Schema.optional(Schema.Struct({ root: Schema.String, sub: Schema.String }))
}) {}

/**
 * One sub-call made from model code (`llm_query`, `rlm_query`).
 *
 * @since 0.1.0
 * @category Events
 */
export class SubCall extends Schema.TaggedClass<SubCall>()("SubCall", {
  runId: Schema.String,
  parentStep: Schema.JsonNumber,
  kind: Schema.Literal("llm_query", "rlm_query"),
  model: Schema.String,
  prompt: Schema.String,
  promptSha256: Schema.String,
  promptChars: Schema.JsonNumber,
  reply: Schema.optional(Schema.String),
  replySha256: Schema.optional(Schema.String),
  replyChars: Schema.optional(Schema.JsonNumber),
  error: Schema.optional(Schema.String),
  /** Why a failed `llm_query` failed: the adapter's `LlmError` reason (format 3, since 0.3.0). */
  errorReason: Schema.optional(Schema.String),
  usage: TokenUsage,
  /** When the call started (epoch milliseconds); traces written before 0.3.0 do not have it (format 3). */
  timestamp: Schema.optional(Schema.JsonNumber),
  durationMs: Schema.JsonNumber,
  /** For `rlm_query`: the child run's id. */
  childRunId: Schema.optional(Schema.String),
  /** For `llm_query`: why the sub-model stopped, when the adapter could tell (format 3). */
  finishReason: Schema.optional(LlmAdapter.FinishReason)
}) {}

/**
 * One failed attempt of a model call that the adapter retried (a 429, a 5xx,
 * a timeout, a dropped connection): the root call of step `step`, or a
 * sub-call made by a block of step `step`. `attempt` counts from 1; the next
 * attempt is sent after `delayMs`. `usage` is what the failed attempt's
 * response reported (usually nothing): it is counted in the budget and in
 * {@link Trace.totalUsage}, apart from the usage of the call's
 * `StepCompleted` or `SubCall`, which is the last attempt's. New in format 3.
 *
 * @since 0.2.0
 * @category Events
 */
export class ModelCallRetried extends Schema.TaggedClass<ModelCallRetried>()("ModelCallRetried", {
  runId: Schema.String,
  step: Schema.JsonNumber,
  role: Schema.Literal("root", "sub"),
  model: Schema.String,
  attempt: Schema.JsonNumber,
  reason: Schema.String,
  message: Schema.String,
  status: Schema.optional(Schema.JsonNumber),
  delayMs: Schema.JsonNumber,
  usage: TokenUsage
}) {}

/**
 * @since 0.1.0
 * @category Events
 */
export class FinalAnswer extends Schema.TaggedClass<FinalAnswer>()("FinalAnswer", {
  runId: Schema.String,
  step: Schema.JsonNumber,
  source: Schema.Literal("FINAL", "FINAL_VAR", "forced"),
  answer: Schema.String
}) {}

/**
 * @since 0.1.0
 * @category Events
 */
export class RunFinished extends Schema.TaggedClass<RunFinished>()("RunFinished", {
  runId: Schema.String,
  status: Schema.Literal("answered", "failed", "budget_exceeded", "interrupted"),
  steps: Schema.JsonNumber,
  subCalls: Schema.JsonNumber,
  usage: TokenUsage,
  costUsd: Schema.optional(Schema.JsonNumber),
  durationMs: Schema.JsonNumber,
  error: Schema.optional(Schema.String)
}) {}

/**
 * @since 0.1.0
 * @category Models
 */
export const TraceEvent = Schema.Union(
  RunInput,
  RunStarted,
  StepCompleted,
  SubCall,
  ModelCallRetried,
  FinalAnswer,
  RunFinished
)

/**
 * @since 0.1.0
 * @category Models
 */
export type TraceEvent = typeof TraceEvent.Type

/**
 * The JSON-ready form of a {@link TraceEvent}.
 *
 * @since 0.1.0
 * @category Models
 */
export type Encoded = typeof TraceEvent.Encoded

/**
 * The `_tag` of a trace event.
 *
 * @since 0.1.0
 * @category Models
 */
export type Tag = TraceEvent["_tag"]

/**
 * Check whether an unknown value is a (decoded) trace event.
 *
 * @since 0.1.0
 * @category Guards
 */
export const isTraceEvent: (u: unknown) => u is TraceEvent = Schema.is(TraceEvent)
