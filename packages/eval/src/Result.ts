/**
 * What an eval writes: one {@link ResultLine} per task × method in
 * `results.jsonl`, and the {@link Summary} of `summary.json`.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import { Method } from "./Method.js"
import { Kind } from "./Task.js"

/**
 * One task × method: a line of `results.jsonl`.
 *
 * @since 0.1.0
 * @category Models
 */
export class ResultLine extends Schema.Class<ResultLine>("@rlm-runtime/eval/ResultLine")({
  taskId: Schema.String,
  kind: Kind,
  /** Context size in tokens (chars / 4). */
  size: Schema.Int,
  seed: Schema.Int,
  index: Schema.Int,
  method: Method,
  /** In `[0, 1]`: the task's scorer on the answer (0 for a failed run). */
  score: Schema.Number,
  /** `answered`, or `failed` (the run or the call failed: `error` says why). */
  status: Schema.Literal("answered", "failed"),
  answer: Schema.String,
  truth: Schema.String,
  error: Schema.optional(Schema.String),
  /**
   * What failed: `Budget` (a policy limit, the run's wall time: a result like
   * any other), `Model` (the provider) or `Sandbox` (the interpreter), which
   * say nothing about the method and are run again when the eval resumes,
   * or `Other`.
   */
  failure: Schema.optional(Schema.Literal("Budget", "Model", "Sandbox", "Other")),
  inputTokens: Schema.Number,
  outputTokens: Schema.Number,
  totalTokens: Schema.Number,
  /** USD, for models with a price (`--prices`); 0 otherwise. */
  costUsd: Schema.Number,
  /** Wall time of the run (or the call), in milliseconds. */
  timeMs: Schema.Number,
  /** Root steps (1 for `direct`). */
  steps: Schema.Int,
  /** Sub-calls (`llm_query`, `rlm_query`) of the run tree. */
  subCalls: Schema.Int,
  /** `direct`: the window in tokens (absent: the whole context was sent) and the characters of the context shown. */
  window: Schema.optional(Schema.Int),
  shownChars: Schema.optional(Schema.Int),
  /** The trace, relative to the eval's directory (`traces/<task-id>.<method>.jsonl`). */
  trace: Schema.String
}) {}

/**
 * Whether a result is final: anything but a failure of the provider or the
 * sandbox, which a resumed eval runs again.
 *
 * @since 0.1.0
 * @category Utils
 */
export const isFinal = (line: ResultLine): boolean =>
  line.status === "answered" || (line.failure !== "Model" && line.failure !== "Sandbox")

/**
 * The key a result is found by when an eval resumes.
 *
 * @since 0.1.0
 * @category Utils
 */
export const keyOf = (line: { readonly taskId: string; readonly method: Method }): string =>
  `${line.taskId}\u0000${line.method}`

/**
 * Means over a group of results.
 *
 * @since 0.1.0
 * @category Models
 */
export const Cell = Schema.Struct({
  n: Schema.Int,
  /** Mean score in `[0, 1]`. */
  score: Schema.Number,
  /** Results that failed (counted with score 0). */
  failed: Schema.Int,
  meanTokens: Schema.Number,
  meanCostUsd: Schema.Number,
  meanTimeMs: Schema.Number,
  meanSteps: Schema.Number,
  meanSubCalls: Schema.Number
})

/**
 * @since 0.1.0
 * @category Models
 */
export type Cell = typeof Cell.Type

/**
 * One row of the summary: a kind × size × method.
 *
 * @since 0.1.0
 * @category Models
 */
export const Row = Schema.Struct({ kind: Kind, size: Schema.Int, method: Method, ...Cell.fields })

/**
 * @since 0.1.0
 * @category Models
 */
export type Row = typeof Row.Type

/**
 * `summary.json`.
 *
 * @since 0.1.0
 * @category Models
 */
export const Summary = Schema.Struct({
  kinds: Schema.Array(Kind),
  sizes: Schema.Array(Schema.Int),
  methods: Schema.Array(Method),
  n: Schema.Int,
  seed: Schema.Int,
  window: Schema.optional(Schema.Int),
  rows: Schema.Array(Row),
  /** Per method over every task. */
  overall: Schema.Array(Schema.Struct({ method: Method, ...Cell.fields })),
  totalCostUsd: Schema.Number,
  totalTokens: Schema.Number
})

/**
 * @since 0.1.0
 * @category Models
 */
export type Summary = typeof Summary.Type

const mean = (xs: ReadonlyArray<number>) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length)

/**
 * The means of a group of results.
 *
 * @since 0.1.0
 * @category Summaries
 */
export const cellOf = (lines: ReadonlyArray<ResultLine>): Cell => ({
  n: lines.length,
  score: mean(lines.map((l) => l.score)),
  failed: lines.filter((l) => l.status === "failed").length,
  meanTokens: mean(lines.map((l) => l.totalTokens)),
  meanCostUsd: mean(lines.map((l) => l.costUsd)),
  meanTimeMs: mean(lines.map((l) => l.timeMs)),
  meanSteps: mean(lines.map((l) => l.steps)),
  meanSubCalls: mean(lines.map((l) => l.subCalls))
})

/**
 * The summary of an eval's results (only the kinds, sizes and methods asked
 * for; rows without results are left out).
 *
 * @since 0.1.0
 * @category Summaries
 */
export const summarize = (
  config: {
    readonly kinds: ReadonlyArray<Kind>
    readonly sizes: ReadonlyArray<number>
    readonly methods: ReadonlyArray<Method>
    readonly n: number
    readonly seed: number
    readonly window?: number | undefined
  },
  lines: ReadonlyArray<ResultLine>
): Summary => {
  const rows: Array<Row> = []
  for (const kind of config.kinds) {
    for (const size of config.sizes) {
      for (const method of config.methods) {
        const group = lines.filter((l) => l.kind === kind && l.size === size && l.method === method)
        if (group.length > 0) rows.push({ kind, size, method, ...cellOf(group) })
      }
    }
  }
  return {
    kinds: config.kinds,
    sizes: config.sizes,
    methods: config.methods,
    n: config.n,
    seed: config.seed,
    ...(config.window !== undefined ? { window: config.window } : {}),
    rows,
    overall: config.methods.map((method) => ({ method, ...cellOf(lines.filter((l) => l.method === method)) })),
    totalCostUsd: lines.reduce((a, l) => a + l.costUsd, 0),
    totalTokens: lines.reduce((a, l) => a + l.totalTokens, 0)
  }
}
