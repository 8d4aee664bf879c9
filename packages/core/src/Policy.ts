/**
 * The limits of a run: steps, sub-calls, tokens, cost, wall time, depth,
 * concurrency, consecutive errors, interpreter restarts, and the sizes the
 * host takes from the guest. One budget built from a policy is shared
 * by a whole run tree (root, batches, child RLMs).
 *
 * @since 0.1.0
 */
import * as Sandbox from "@rlm-runtime/sandbox/Sandbox"
import * as Schema from "effect/Schema"

/** A finite, non-negative number: what a price or a cost limit can be, and what JSON can carry. */
const FiniteNonNegative = Schema.Number.pipe(Schema.finite(), Schema.nonNegative())

/**
 * USD per million tokens, by direction.
 *
 * @since 0.1.0
 * @category Models
 */
export const ModelPrice = Schema.Struct({
  inputPerMillion: FiniteNonNegative,
  outputPerMillion: FiniteNonNegative
})

/**
 * @since 0.1.0
 * @category Models
 */
export type ModelPrice = typeof ModelPrice.Type

const PositiveInt = Schema.Int.pipe(Schema.positive())
const NonNegativeInt = Schema.Int.pipe(Schema.nonNegative())

/**
 * A run's limits. Every field has a default; `undefined` on an optional limit
 * means "not bounded".
 *
 * @since 0.1.0
 * @category Models
 */
export class Policy extends Schema.Class<Policy>("@rlm-runtime/core/Policy")({
  /** Root iterations of each run (root and each child). */
  maxSteps: Schema.optionalWith(PositiveInt, { default: () => 20 }),
  /** Sub-calls (`llm_query` and `rlm_query` prompts) in the whole run tree. */
  maxSubCalls: Schema.optionalWith(NonNegativeInt, { default: () => 1_000 }),
  maxInputTokens: Schema.optional(NonNegativeInt),
  maxOutputTokens: Schema.optional(NonNegativeInt),
  maxTotalTokens: Schema.optional(NonNegativeInt),
  /** Bounded only for models with a known price. */
  maxCostUsd: Schema.optional(FiniteNonNegative),
  /** Wall-clock limit of the whole run tree, in milliseconds. */
  timeoutMs: Schema.optional(PositiveInt),
  /** Per model call, in milliseconds. */
  callTimeoutMs: Schema.optional(PositiveInt),
  /** Deepest child RLM: 0 disables `rlm_query` (it falls back to `llm_query`). */
  maxDepth: Schema.optionalWith(NonNegativeInt, { default: () => 1 }),
  /** Concurrent model calls per depth level (default 16, the official implementation's fixed batch width). */
  concurrency: Schema.optionalWith(PositiveInt, { default: () => 16 }),
  /** Consecutive root steps whose code all failed (or that had nothing to run). */
  maxConsecutiveErrors: Schema.optionalWith(PositiveInt, { default: () => 5 }),
  /** On a budget hit: fail, or grant one last "answer now" root call. */
  onBudgetExceeded: Schema.optionalWith(Schema.Literal("fail", "answer-now"), { default: () => "fail" as const }),
  /** A failed prompt in a batch: an error string in its slot, or fail the whole batch. */
  batchFailure: Schema.optionalWith(Schema.Literal("error-string", "fail-all"), {
    default: () => "error-string" as const
  }),
  /**
   * Longest prompt of one sub-call (`llm_query`, `rlm_query`, each prompt of a
   * batch), in characters. A longer one fails that call, which model code sees
   * as an error; the model is not called. Also given to the sandbox.
   */
  maxPromptChars: Schema.optionalWith(PositiveInt, { default: () => Sandbox.DEFAULT_MAX_PROMPT_CHARS }),
  /**
   * Longest final answer, in characters (from `FINAL(...)` in the reply,
   * `FINAL_VAR`, or model code). A longer one is rejected and the model told
   * to answer with less; the run goes on. Also given to the sandbox.
   */
  maxAnswerChars: Schema.optionalWith(PositiveInt, { default: () => Sandbox.DEFAULT_MAX_ANSWER_CHARS }),
  /** Longest message line the sandbox reads from an interpreter process, in bytes (every JSON-lines channel). */
  maxLineBytes: Schema.optionalWith(PositiveInt, { default: () => Sandbox.DEFAULT_MAX_LINE_BYTES }),
  /**
   * Interpreter losses (crash, out of memory, killed past its time limit,
   * protocol violation) a run survives: each time, the model is told, and the
   * run goes on in a fresh interpreter with the context reloaded and its
   * variables gone. The next loss fails the run (`RunFailed`
   * "SandboxRestarts"). Counted per run: the root and each child RLM have
   * their own interpreter and their own count.
   */
  maxSandboxRestarts: Schema.optionalWith(NonNegativeInt, { default: () => 3 }),
  /** Price per model name, for `maxCostUsd`. */
  prices: Schema.optionalWith(Schema.Record({ key: Schema.String, value: ModelPrice }), { default: () => ({}) })
}) {}

/**
 * The policy with every default.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const defaults: Policy = new Policy({})

/**
 * @since 0.1.0
 * @category Constructors
 */
export const make = (options: ConstructorParameters<typeof Policy>[0] = {}): Policy => new Policy(options)
