/**
 * An eval task: a context, a question about it and the truth, generated
 * deterministically from `(kind, seed, size, index)`, with an exact scorer.
 *
 * Sizes are in tokens, estimated as the rest of the repo does
 * (`LlmAdapter.estimateTokens`: one token per four characters): a task of size
 * `n` has a context of about `4 n` characters. Size labels are binary, like the
 * paper's Figure 1 (2^13 … 2^18 tokens): `8k` = 8,192 tokens, `1m` =
 * 1,048,576 tokens.
 *
 * @since 0.1.0
 */
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"

/**
 * The task families.
 *
 * @since 0.1.0
 * @category Models
 */
export const Kind = Schema.Literal("sniah", "oolong", "pairs", "multidoc", "codeqa")

/**
 * @since 0.1.0
 * @category Models
 */
export type Kind = typeof Kind.Type

/**
 * Every kind, in the order the report lists them.
 *
 * @since 0.1.0
 * @category Constants
 */
export const kinds: ReadonlyArray<Kind> = Kind.literals

/**
 * One generated task.
 *
 * @since 0.1.0
 * @category Models
 */
export class EvalTask extends Schema.Class<EvalTask>("@rlm-runtime/eval/EvalTask")({
  /** `<kind>-<size label>-s<seed>-<index>`, e.g. `sniah-8k-s1-003`. */
  id: Schema.String,
  kind: Kind,
  /** Target size in tokens (chars / 4). */
  size: Schema.Int,
  seed: Schema.Int,
  index: Schema.Int,
  context: Schema.String,
  question: Schema.String,
  /** The expected answer, in the form the scorer reads (a number, a label, a letter, a list of pairs). */
  truth: Schema.String,
  /** Facts about how the task was made (needle depth, question type, …), for the report. */
  details: Schema.optionalWith(
    Schema.Record({ key: Schema.String, value: Schema.Union(Schema.String, Schema.Number) }),
    {
      default: () => ({})
    }
  )
}) {}

/**
 * What a generator is asked for.
 *
 * @since 0.1.0
 * @category Models
 */
export interface GenerateOptions {
  readonly seed: number
  /** Tokens (chars / 4) of the context. */
  readonly size: number
  /** Which task of the `(seed, size)` series (0, 1, …). */
  readonly index: number
}

/**
 * Makes tasks of one kind. `generate` is pure: equal options give equal tasks.
 *
 * @since 0.1.0
 * @category Models
 */
export interface Generator {
  readonly kind: Kind
  readonly generate: (options: GenerateOptions) => EvalTask
}

/**
 * Scores an answer to a task of its kind: a number in `[0, 1]`, `1` for the
 * truth.
 *
 * @since 0.1.0
 * @category Models
 */
export interface Scorer {
  readonly kind: Kind
  /** How the score is computed, for the report ("exact match", "F1", …). */
  readonly metric: string
  readonly score: (task: EvalTask, answer: string) => number
}

/**
 * A task family: its generator, its scorer and a reference solver that reads
 * only the context and the question (the proof, in the tests, that the truth
 * is recoverable from the context).
 *
 * @since 0.1.0
 * @category Models
 */
export interface Family extends Generator, Scorer {
  readonly solve: (context: string, question: string) => string
}

/**
 * The id of a task.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const taskId = (kind: Kind, options: GenerateOptions): string =>
  `${kind}-${formatSize(options.size)}-s${options.seed}-${String(options.index).padStart(3, "0")}`

/**
 * Characters of a context of `size` tokens.
 *
 * @since 0.1.0
 * @category Utils
 */
export const charsOf = (size: number): number => size * 4

const K = 1024
const M = 1024 * 1024
const UNITS: Record<string, number> = { "": 1, k: K, m: M }

/**
 * A size flag (`8k`, `32k`, `128k`, `1m`, `10m`, or a plain number of tokens)
 * as tokens; `Left` says what is wrong.
 *
 * @since 0.1.0
 * @category Parsing
 */
export const parseSize = (text: string): Either.Either<number, string> => {
  const m = /^(\d+(?:\.\d+)?)\s*([km]?)$/i.exec(text.trim())
  if (m === null) {
    return Either.left(
      `${JSON.stringify(text)} is not a size: use a number of tokens or k / m (8k, 32k, 128k, 1m, 10m)`
    )
  }
  const tokens = Math.round(Number(m[1]) * (UNITS[(m[2] ?? "").toLowerCase()] ?? 1))
  return tokens >= 64
    ? Either.right(tokens)
    : Either.left(`${JSON.stringify(text)} is too small: a context needs at least 64 tokens`)
}

/**
 * Tokens as the label `parseSize` reads back (`8192` → `8k`).
 *
 * @since 0.1.0
 * @category Utils
 */
export const formatSize = (tokens: number): string => {
  if (tokens >= M && tokens % M === 0) return `${tokens / M}m`
  if (tokens >= K && tokens % K === 0) return `${tokens / K}k`
  return String(tokens)
}
