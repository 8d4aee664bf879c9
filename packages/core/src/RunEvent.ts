/**
 * The events of a run tree as they happen: what `Rlm.stream` emits.
 *
 * A `RunEvent` is either a trace event (`RunStarted`, `StepCompleted`,
 * `SubCall`, `ModelCallRetried`, `FinalAnswer`, `RunFinished` — what a trace
 * keeps) or a live
 * event a progress view needs and a trace does not keep (a model call or a
 * block starting, a block finishing, a session's compaction), or the last event of a run that
 * answered, `Answered`, carrying its result.
 *
 * ## Ordering
 *
 * Per run (the root and each child, told apart by `runId`):
 * - `RunStarted` comes first and `RunFinished` last;
 * - steps come in order: step *n*'s events (`ModelCallStarted` and `ModelCallRetried` of its root
 *   call, then `BlockStarted`/`BlockFinished` of each block in order, the
 *   `SubCall`s its blocks made, the child runs they started) come after
 *   `StepCompleted` of step *n − 1* and before `StepCompleted` of step *n*;
 * - a `SubCall` comes after its sub-call ended: for `rlm_query`, after the
 *   child's `RunFinished`;
 * - `FinalAnswer` comes right after the `StepCompleted` of the step that
 *   answered, before `RunFinished`.
 *
 * Across runs, and across the concurrent sub-calls of one block, events
 * interleave in the order they happened. `Answered` is the last event of the
 * stream of a run that answered; a run that fails ends the stream with its
 * error (carrying the trace) instead.
 *
 * @since 0.2.0
 */
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import * as Schema from "effect/Schema"

/**
 * A model call was sent (its budget reserved and its permit held): a root
 * call of step `step`, or a sub-call (`llm_query`) made by a block of step
 * `step`.
 *
 * @since 0.2.0
 * @category Events
 */
export class ModelCallStarted extends Schema.TaggedClass<ModelCallStarted>()("ModelCallStarted", {
  runId: Schema.String,
  step: Schema.Number,
  role: LlmAdapter.CallRole,
  model: Schema.String
}) {}

/**
 * Block `index` (from 0) of step `step`'s reply started running.
 *
 * @since 0.2.0
 * @category Events
 */
export class BlockStarted extends Schema.TaggedClass<BlockStarted>()("BlockStarted", {
  runId: Schema.String,
  step: Schema.Number,
  index: Schema.Number,
  /** Blocks in the reply. */
  total: Schema.Number,
  code: Schema.String
}) {}

/**
 * Block `index` of step `step` finished; `failed` when it raised or could not
 * run.
 *
 * @since 0.2.0
 * @category Events
 */
export class BlockFinished extends Schema.TaggedClass<BlockFinished>()("BlockFinished", {
  runId: Schema.String,
  step: Schema.Number,
  index: Schema.Number,
  failed: Schema.Boolean,
  durationMs: Schema.Number
}) {}

/**
 * The run tree's usage (`Budget.Totals`).
 *
 * @since 0.2.0
 * @category Models
 */
export const Totals = Schema.Struct({
  rootCalls: Schema.Number,
  subCalls: Schema.Number,
  inputTokens: Schema.Number,
  outputTokens: Schema.Number,
  totalTokens: Schema.Number,
  costUsd: Schema.Number,
  unknownUsageCalls: Schema.Number,
  unpricedCalls: Schema.Number
})

/**
 * The top-level run answered: the last event of the stream. `value` is the
 * answer decoded with the run's `output` Schema (the text when there is none).
 *
 * @since 0.2.0
 * @category Events
 */
export class Answered extends Schema.TaggedClass<Answered>()("Answered", {
  answer: Schema.String,
  value: Schema.Unknown,
  source: Schema.Literal("FINAL", "FINAL_VAR", "forced"),
  steps: Schema.Number,
  totals: Totals
}) {}

/**
 * A session turn compacted its root history before its first step (see
 * `Session`): one root call (the `ModelCallStarted` of step 0 before it)
 * summarized the `turns` earlier turns not summarized yet, together with any
 * earlier summary, and the conversation goes on from the system prompt, the
 * summary and the `keptTurns` most recent turns. `usage` is that call's
 * (counted in the run's totals and its `RunFinished`, though no trace event
 * carries it); `tokensBefore`/`tokensAfter` are the estimated tokens
 * (characters / 4) of the root history.
 *
 * @since 0.3.0
 * @category Events
 */
export class SessionCompacted extends Schema.TaggedClass<SessionCompacted>()("SessionCompacted", {
  runId: Schema.String,
  /** Turns summarized by this compaction. */
  turns: Schema.Number,
  /** Turns the summary covers now, from the first. */
  summarizedTurns: Schema.Number,
  keptTurns: Schema.Number,
  tokensBefore: Schema.Number,
  tokensAfter: Schema.Number,
  summaryChars: Schema.Number,
  model: Schema.String,
  usage: TraceEvent.TokenUsage
}) {}

/**
 * @since 0.2.0
 * @category Models
 */
export const RunEvent = Schema.Union(
  TraceEvent.TraceEvent,
  ModelCallStarted,
  BlockStarted,
  BlockFinished,
  SessionCompacted,
  Answered
)

/**
 * @since 0.2.0
 * @category Models
 */
export type RunEvent = typeof RunEvent.Type

const traceTags: ReadonlySet<string> = new Set<TraceEvent.Tag>([
  "RunInput",
  "RunStarted",
  "StepCompleted",
  "SubCall",
  "ModelCallRetried",
  "FinalAnswer",
  "RunFinished"
])

/**
 * Whether an event is one a trace keeps.
 *
 * @since 0.2.0
 * @category Guards
 */
export const isTraceEvent = (event: RunEvent): event is TraceEvent.TraceEvent => traceTags.has(event._tag)
