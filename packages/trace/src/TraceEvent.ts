/**
 * Trace events: everything a run did, as Schema-defined data.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * Token usage; a field the provider did not report is absent (unknown).
 *
 * @since 0.1.0
 * @category Models
 */
export const TokenUsage = Schema.Struct({
  inputTokens: Schema.optional(Schema.Number),
  outputTokens: Schema.optional(Schema.Number),
  totalTokens: Schema.optional(Schema.Number)
})

/**
 * @since 0.1.0
 * @category Models
 */
export type TokenUsage = typeof TokenUsage.Type

/**
 * What the root model is told about the context.
 *
 * @since 0.1.0
 * @category Models
 */
export const ContextMetadata = Schema.Struct({
  type: Schema.Literal("text", "documents"),
  totalChars: Schema.Number,
  documentCount: Schema.Number,
  documentLengths: Schema.Array(Schema.Number),
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
  durationMs: Schema.Number
})

/**
 * @since 0.1.0
 * @category Models
 */
export type CodeBlock = typeof CodeBlock.Type

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
  parentStep: Schema.optional(Schema.Number),
  depth: Schema.Number,
  query: Schema.String,
  context: ContextMetadata,
  model: Schema.String,
  language: Schema.String,
  timestamp: Schema.Number
}) {}

/**
 * One root iteration: the model's reply and the code blocks run from it.
 *
 * @since 0.1.0
 * @category Events
 */
export class StepCompleted extends Schema.TaggedClass<StepCompleted>()("StepCompleted", {
  runId: Schema.String,
  step: Schema.Number,
  reply: Schema.String,
  blocks: Schema.Array(CodeBlock),
  /** A message told to the model that is not REPL output (a rejected final answer, a parse problem). */
  feedback: Schema.optional(Schema.String),
  usage: TokenUsage,
  model: Schema.String,
  modelMs: Schema.Number,
  durationMs: Schema.Number
}) {}

/**
 * One sub-call made from model code (`llm_query`, `rlm_query`).
 *
 * @since 0.1.0
 * @category Events
 */
export class SubCall extends Schema.TaggedClass<SubCall>()("SubCall", {
  runId: Schema.String,
  parentStep: Schema.Number,
  kind: Schema.Literal("llm_query", "rlm_query"),
  model: Schema.String,
  prompt: Schema.String,
  promptSha256: Schema.String,
  promptChars: Schema.Number,
  reply: Schema.optional(Schema.String),
  replySha256: Schema.optional(Schema.String),
  replyChars: Schema.optional(Schema.Number),
  error: Schema.optional(Schema.String),
  usage: TokenUsage,
  durationMs: Schema.Number,
  /** For `rlm_query`: the child run's id. */
  childRunId: Schema.optional(Schema.String)
}) {}

/**
 * @since 0.1.0
 * @category Events
 */
export class FinalAnswer extends Schema.TaggedClass<FinalAnswer>()("FinalAnswer", {
  runId: Schema.String,
  step: Schema.Number,
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
  steps: Schema.Number,
  subCalls: Schema.Number,
  usage: TokenUsage,
  costUsd: Schema.optional(Schema.Number),
  durationMs: Schema.Number,
  error: Schema.optional(Schema.String)
}) {}

/**
 * @since 0.1.0
 * @category Models
 */
export const TraceEvent = Schema.Union(RunStarted, StepCompleted, SubCall, FinalAnswer, RunFinished)

/**
 * @since 0.1.0
 * @category Models
 */
export type TraceEvent = typeof TraceEvent.Type
