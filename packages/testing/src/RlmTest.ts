/**
 * Record a run once, replay it in a test.
 *
 * - {@link record} runs `Rlm.run` with whatever `LlmAdapter` and `Sandbox`
 *   are provided (a real model once, or the Fake adapter) and keeps the
 *   query, context, options, outcome and trace together as a
 *   {@link Recorded} value.
 * - {@link replay} reruns it with no model at all: under
 *   `Replay.make(trace)` (the adapter of `Replay.layer`), then
 *   `Replay.check` and `Replay.checkAnswer`.
 * - {@link layer} is the Fake adapter and a sandbox as one test Layer.
 *
 * @since 0.2.0
 */
import * as FakeAdapter from "@rlm-runtime/adapters/FakeAdapter"
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import type * as Policy from "@rlm-runtime/core/Policy"
import * as Rlm from "@rlm-runtime/core/Rlm"
import type * as RlmContext from "@rlm-runtime/core/RlmContext"
import type * as RlmError from "@rlm-runtime/core/RlmError"
import * as JavascriptSandbox from "@rlm-runtime/sandbox/JavascriptSandbox"
import * as PythonSandbox from "@rlm-runtime/sandbox/PythonSandbox"
import type * as Sandbox from "@rlm-runtime/sandbox/Sandbox"
import type { SandboxError } from "@rlm-runtime/sandbox/Sandbox"
import * as Replay from "@rlm-runtime/trace/Replay"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"

/**
 * The options a recorded run is made with: `Rlm.RunOptions` without an
 * `output` Schema or user tools (their handlers are not part of a trace).
 *
 * @since 0.2.0
 * @category Models
 */
export type RunOptions = Omit<Rlm.RunOptions<string>, "output" | "tools">

/**
 * A run and what it gave: the inputs to run it again, its outcome (the
 * `RunResult`, or the `RlmError` it ended with) and its trace (the error's
 * partial trace when it failed).
 *
 * @since 0.2.0
 * @category Models
 */
export interface Recorded {
  readonly query: string
  readonly context: RlmContext.Input
  readonly options: RunOptions
  readonly result: Either.Either<Rlm.RunResult<string>, RlmError.RlmError>
  readonly trace: Trace.Trace
}

/**
 * The trace an outcome carries: the result's, or the error's partial trace
 * (empty when the run failed before it recorded anything).
 *
 * @since 0.2.0
 * @category Utils
 */
export const traceOf = (result: Either.Either<Rlm.RunResult<string>, RlmError.RlmError>): Trace.Trace =>
  Either.isRight(result) ? result.right.trace : (result.left.trace ?? Trace.empty)

/**
 * Run `Rlm.run(query, context, options)` with the adapter and sandbox in
 * context and keep everything needed to replay it. Never fails: a run that
 * ends with an `RlmError` is recorded too.
 *
 * @since 0.2.0
 * @category Recording
 */
export const record = (
  query: string,
  context: RlmContext.Input,
  options: RunOptions = {}
): Effect.Effect<Recorded, never, LlmAdapter.LlmAdapter | Sandbox.Sandbox> =>
  Effect.map(Effect.either(Rlm.run(query, context, options)), (result) => ({
    query,
    context,
    options,
    result,
    trace: traceOf(result)
  }))

/**
 * @since 0.2.0
 * @category Models
 */
export interface ReplayOptions {
  /** The policy of the replay (default: the recorded run's). */
  readonly policy?: Policy.Policy | ConstructorParameters<typeof Policy.Policy>[0] | undefined
  /**
   * `true` (default): the replay must make every recorded call and, when it
   * answers, give the recorded answer (`Replay.check`, `Replay.checkAnswer`).
   * `false`: it may stop early (a smaller budget), but every call it makes
   * must be one the trace holds.
   */
  readonly complete?: boolean | undefined
}

/**
 * A replayed run: its outcome, its trace and the calls it asked, in order.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Replayed {
  readonly result: Either.Either<Rlm.RunResult<string>, RlmError.RlmError>
  readonly trace: Trace.Trace
  readonly calls: ReadonlyArray<Replay.ReplayedCall>
}

/**
 * Run a recorded run again from its trace alone, with the sandbox in context
 * and no model. Fails with `ReplayDivergence` when the replay asked for a
 * call the trace does not hold, left a recorded call unasked or answered
 * differently (see {@link ReplayOptions.complete}), and with `TraceTampered`
 * when the trace does not match its own hashes.
 *
 * @since 0.2.0
 * @category Replaying
 */
export const replay = (
  recorded: Recorded,
  options: ReplayOptions = {}
): Effect.Effect<Replayed, Replay.ReplayDivergence | Replay.TraceTampered, Sandbox.Sandbox> =>
  Effect.gen(function* () {
    const replayer = yield* Replay.make(recorded.trace)
    const runOptions: RunOptions =
      options.policy === undefined ? recorded.options : { ...recorded.options, policy: options.policy }
    const result = yield* Effect.either(Rlm.run(recorded.query, recorded.context, runOptions)).pipe(
      Effect.provideService(LlmAdapter.LlmAdapter, replayer.adapter)
    )
    if (options.complete === false) {
      const divergence = yield* replayer.divergence
      if (Option.isSome(divergence)) return yield* divergence.value
    } else {
      yield* replayer.check
      if (Either.isRight(result)) yield* Replay.checkAnswer(recorded.trace, result.right.answer)
    }
    return { result, trace: traceOf(result), calls: yield* replayer.calls }
  })

/**
 * The sandbox languages of {@link layer}.
 *
 * @since 0.2.0
 * @category Models
 */
export type Language = "js" | "python"

/**
 * @since 0.2.0
 * @category Models
 */
export interface LayerOptions extends FakeAdapter.Options {
  /** `"js"` (default): `JavascriptSandbox.layer()`; `"python"`: `PythonSandbox.layer()`. */
  readonly sandbox?: Language | undefined
}

/**
 * The sandbox of a language, with its defaults.
 *
 * @since 0.2.0
 * @category Layers
 */
export const sandboxLayer = (language: Language = "js"): Layer.Layer<Sandbox.Sandbox, SandboxError> =>
  language === "python" ? PythonSandbox.layer() : JavascriptSandbox.layer()

/**
 * The Fake adapter (`FakeAdapter.layer` with the script, rules, latency and
 * usage given) and a sandbox, as one Layer for a test.
 *
 * @since 0.2.0
 * @category Layers
 */
export const layer = (
  options: LayerOptions = {}
): Layer.Layer<LlmAdapter.LlmAdapter | Sandbox.Sandbox, SandboxError> => {
  const { sandbox, ...fake } = options
  return Layer.merge(FakeAdapter.layer(fake), sandboxLayer(sandbox))
}
