/**
 * Runs an eval: every task × method, concurrently up to a bound, each result
 * appended to `DIR/results.jsonl` as it finishes and each run's trace written
 * to `DIR/traces/<task-id>.<method>.jsonl` as it happens; then
 * `DIR/summary.json` and `DIR/report.html`.
 *
 * Resumable: a task × method already in `results.jsonl` is not run again
 * (a half-written last line, left by a killed eval, is dropped), so an
 * interrupted eval run again with the same flags finishes the rest and writes
 * the same results.
 *
 * The model and the sandbox come from the environment (`LlmAdapter`,
 * `Sandbox`), so any provider Layer works; `rlm` runs go through `Rlm.run`,
 * `direct` is one `LlmAdapter` chat call.
 *
 * @since 0.1.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import { LlmAdapter } from "@rlm-runtime/adapters/LlmAdapter"
import * as Budget from "@rlm-runtime/core/Budget"
import * as Policy from "@rlm-runtime/core/Policy"
import * as Rlm from "@rlm-runtime/core/Rlm"
import type { RlmError } from "@rlm-runtime/core/RlmError"
import { Sandbox } from "@rlm-runtime/sandbox/Sandbox"
import { sha256 } from "@rlm-runtime/trace/Hash"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import * as TraceRecorder from "@rlm-runtime/trace/TraceRecorder"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Method from "./Method.js"
import * as Report from "./Report.js"
import * as Result from "./Result.js"
import { type EvalTask, type Kind, taskId } from "./Task.js"
import * as Tasks from "./Tasks.js"

/**
 * Why an eval could not run or write its output.
 *
 * @since 0.1.0
 * @category Errors
 */
export class EvalFailure extends Schema.TaggedError<EvalFailure>("@rlm-runtime/eval/EvalFailure")("EvalFailure", {
  reason: Schema.Literal("Config", "Output", "Resume"),
  message: Schema.String
}) {}

/**
 * @since 0.1.0
 * @category Models
 */
export interface Config {
  readonly kinds: ReadonlyArray<Kind>
  /** Context sizes in tokens (see `Task.parseSize`). */
  readonly sizes: ReadonlyArray<number>
  /** Tasks per kind × size. */
  readonly n: number
  readonly seed: number
  readonly methods: ReadonlyArray<Method.Method>
  /** `direct`'s window in tokens; absent: the whole context is sent. */
  readonly window?: number | undefined
  /** Task × method runs at once (default 4). */
  readonly concurrency?: number | undefined
  /** The output directory. */
  readonly out: string
  /** The options of every `rlm` run (`rlm-no-subcalls` derives its own); their policy's prices also price `direct`. */
  readonly options?: Rlm.RunOptions | undefined
}

/**
 * How far an eval is.
 *
 * @since 0.1.0
 * @category Models
 */
export interface Progress {
  /** Task × method runs finished, resumed ones included. */
  readonly done: number
  readonly total: number
  /** Found done in `results.jsonl` at the start. */
  readonly resumed: number
  /** Mean score of the finished ones. */
  readonly meanScore: number
  readonly tokens: number
  readonly costUsd: number
  /** The run that just finished (absent for the first report, before anything ran). */
  readonly last?: Result.ResultLine | undefined
}

/**
 * @since 0.1.0
 * @category Models
 */
export interface RunnerOptions<E = never, R = never> {
  /** Told once at the start and after each finished run. */
  readonly onProgress?: ((progress: Progress) => Effect.Effect<void>) | undefined
  /**
   * Built afresh for each task × method, instead of the `LlmAdapter` in
   * context (a scripted fake then starts its script over for every run).
   */
  readonly adapter?: Layer.Layer<LlmAdapter, E, R> | undefined
}

/**
 * What an eval wrote.
 *
 * @since 0.1.0
 * @category Models
 */
export interface Outcome {
  /** Every result of the eval's tasks × methods, in plan order. */
  readonly results: ReadonlyArray<Result.ResultLine>
  readonly summary: Result.Summary
  /** The markdown summary table. */
  readonly markdown: string
  readonly resumed: number
}

/**
 * One task × method of the plan.
 *
 * @since 0.1.0
 * @category Models
 */
export interface Unit {
  readonly kind: Kind
  readonly size: number
  readonly index: number
  readonly method: Method.Method
  readonly taskId: string
}

/**
 * Every task × method of a config, in order (kind, size, index, method).
 *
 * @since 0.1.0
 * @category Planning
 */
export const plan = (config: Config): ReadonlyArray<Unit> =>
  config.kinds.flatMap((kind) =>
    config.sizes.flatMap((size) =>
      Array.from({ length: config.n }, (_, index) =>
        config.methods.map((method) => ({
          kind,
          size,
          index,
          method,
          taskId: taskId(kind, { seed: config.seed, size, index })
        }))
      ).flat()
    )
  )

/**
 * The trace path of a task × method, relative to the eval's directory.
 *
 * @since 0.1.0
 * @category Planning
 */
export const tracePath = (taskId: string, method: Method.Method): string => `traces/${taskId}.${method}.jsonl`

const decodeLine = Schema.decodeUnknownEither(Schema.parseJson(Result.ResultLine))
const encodeLine = Schema.encodeSync(Result.ResultLine)

/**
 * The results already in `results.jsonl`: its complete, decodable lines. A
 * last line without its newline (a killed eval) or that does not decode is
 * dropped, and the file rewritten without it so new lines append cleanly; a
 * bad line before the last fails with `EvalFailure` "Resume".
 *
 * @since 0.1.0
 * @category Resuming
 */
export const readResults = Effect.fn("Runner.readResults")(function* (file: string) {
  const fs = yield* FileSystem.FileSystem
  const exists = yield* fs.exists(file).pipe(Effect.orElseSucceed(() => false))
  if (!exists) return [] as ReadonlyArray<Result.ResultLine>
  const text = yield* fs
    .readFileString(file)
    .pipe(
      Effect.mapError((e) => new EvalFailure({ reason: "Resume", message: `could not read ${file}: ${e.message}` }))
    )
  const lines = text.split("\n")
  const complete = text.endsWith("\n") ? lines.slice(0, -1) : lines
  const out: Array<Result.ResultLine> = []
  let dropped = !text.endsWith("\n") && text.length > 0
  for (let i = 0; i < complete.length; i++) {
    const line = complete[i] ?? ""
    if (line.trim() === "") continue
    const decoded = decodeLine(line)
    if (Either.isRight(decoded)) {
      out.push(decoded.right)
    } else if (i === complete.length - 1) {
      dropped = true
    } else {
      return yield* new EvalFailure({
        reason: "Resume",
        message: `${file} line ${i + 1} is not a result line; move the file away to start the eval over.`
      })
    }
  }
  if (dropped) {
    yield* fs
      .writeFileString(file, out.map((l) => `${JSON.stringify(encodeLine(l))}\n`).join(""))
      .pipe(Effect.mapError((e) => outputFailed(file, e)))
  }
  return out as ReadonlyArray<Result.ResultLine>
})

const outputFailed = (path: string, e: { readonly message: string }) =>
  new EvalFailure({ reason: "Output", message: `could not write ${path}: ${e.message}` })

const languageOf = (language: string) => (language === "javascript" ? "js" : language)

/** The `RunInput` event first, as `rlm run --trace` records it, so `rlm replay` can run the trace again. */
const runInput = (task: EvalTask, options: Rlm.RunOptions, language: string, models: { root: string; sub: string }) => {
  const policy = options.policy instanceof Policy.Policy ? options.policy : Policy.make(options.policy ?? {})
  const exec = options.execTimeout === undefined ? undefined : Duration.toMillis(Duration.decode(options.execTimeout))
  return new TraceEvent.RunInput({
    runId: "run",
    query: task.question,
    context: task.context,
    contextSha256: sha256(task.context),
    language: languageOf(language),
    protocol: options.protocol ?? "fenced",
    policy: JSON.parse(JSON.stringify(Schema.encodeSync(Policy.Policy)(policy))) as Record<string, TraceEvent.Json>,
    ...(options.systemPrompt !== undefined ? { systemPrompt: options.systemPrompt } : {}),
    ...(options.requireReplBeforeFinal !== undefined ? { requireReplBeforeFinal: options.requireReplBeforeFinal } : {}),
    ...(options.subCalls === false ? { subCalls: false } : {}),
    ...(exec !== undefined ? { execTimeoutMs: exec } : {}),
    models
  })
}

interface Measured {
  readonly answer: string
  readonly status: "answered" | "failed"
  readonly error?: string | undefined
  readonly failure?: Result.ResultLine["failure"]
  readonly usage: TraceEvent.TokenUsage
  readonly costUsd: number
  readonly steps: number
  readonly subCalls: number
  readonly shownChars?: number | undefined
}

const errorText = (e: RlmError) => e.message || e._tag

const failureOf = (e: RlmError): NonNullable<Result.ResultLine["failure"]> =>
  e._tag === "BudgetExceeded"
    ? "Budget"
    : e.reason === "Timeout"
      ? "Budget"
      : e.reason === "Model"
        ? "Model"
        : e.reason === "Sandbox" || e.reason === "SandboxRestarts"
          ? "Sandbox"
          : "Other"

/** An `rlm` or `rlm-no-subcalls` run through `Rlm.run`, its events recorded. */
const runRlm = Effect.fn("Runner.runRlm")(function* (
  task: EvalTask,
  options: Rlm.RunOptions,
  recorder: TraceRecorder.TraceRecorder.Service
) {
  const adapter = yield* LlmAdapter
  const sandbox = yield* Sandbox
  yield* recorder.record(
    runInput(task, options, sandbox.language, { root: adapter.model("root"), sub: adapter.model("sub") })
  )
  const result = yield* Rlm.run(task.question, task.context, options).pipe(
    Effect.provideService(TraceRecorder.TraceRecorder, recorder),
    Effect.either
  )
  if (Either.isRight(result)) {
    const r = result.right
    return {
      answer: r.answer,
      status: "answered",
      usage: {
        inputTokens: r.totals.inputTokens,
        outputTokens: r.totals.outputTokens,
        totalTokens: r.totals.totalTokens
      },
      costUsd: r.totals.costUsd,
      steps: r.steps,
      subCalls: r.totals.subCalls
    } satisfies Measured
  }
  const events = yield* recorder.events
  const finished = events.find((e): e is TraceEvent.RunFinished => e._tag === "RunFinished" && e.runId === "run")
  return {
    answer: "",
    status: "failed",
    error: errorText(result.left),
    failure: failureOf(result.left),
    usage: Trace.totalUsage(events),
    costUsd: finished?.costUsd ?? 0,
    steps: events.filter((e) => e._tag === "StepCompleted" && e.runId === "run").length,
    subCalls: events.filter((e) => e._tag === "SubCall").length
  } satisfies Measured
})

/** A `direct` call, recorded as a one-step run (no code) so the trace viewer shows it. */
const runDirect = Effect.fn("Runner.runDirect")(function* (
  task: EvalTask,
  window: number | undefined,
  policy: Policy.Policy,
  recorder: TraceRecorder.TraceRecorder.Service
) {
  const adapter = yield* LlmAdapter
  const { request, shownChars } = Method.directRequest(task, window)
  const model = adapter.model("root")
  const started = yield* Clock.currentTimeMillis
  yield* recorder.record(
    new TraceEvent.RunStarted({
      runId: "run",
      depth: 0,
      query: task.question,
      context: {
        type: "text",
        totalChars: shownChars,
        documentCount: 1,
        documentLengths: [shownChars],
        preview: task.context.slice(0, 200)
      },
      model,
      language: "direct",
      isolation: "process",
      timestamp: started
    })
  )
  const call = adapter.chat(request)
  const timed = policy.callTimeoutMs === undefined ? call : Effect.timeout(call, Duration.millis(policy.callTimeoutMs))
  const response = yield* Effect.either(timed)
  const ended = yield* Clock.currentTimeMillis
  if (Either.isLeft(response)) {
    const error = response.left.message
    const failure = response.left._tag === "TimeoutException" ? ("Budget" as const) : ("Model" as const)
    yield* recorder.record(
      new TraceEvent.RunFinished({
        runId: "run",
        status: "failed",
        steps: 0,
        subCalls: 0,
        usage: {},
        durationMs: ended - started,
        error
      })
    )
    return {
      answer: "",
      status: "failed",
      error,
      failure,
      usage: {},
      costUsd: 0,
      steps: 0,
      subCalls: 0,
      shownChars
    } satisfies Measured
  }
  const r = response.right
  const usage: TraceEvent.TokenUsage = {
    ...(r.usage.inputTokens !== undefined ? { inputTokens: r.usage.inputTokens } : {}),
    ...(r.usage.outputTokens !== undefined ? { outputTokens: r.usage.outputTokens } : {}),
    ...(r.usage.totalTokens !== undefined
      ? { totalTokens: r.usage.totalTokens }
      : r.usage.inputTokens !== undefined || r.usage.outputTokens !== undefined
        ? { totalTokens: (r.usage.inputTokens ?? 0) + (r.usage.outputTokens ?? 0) }
        : {})
  }
  const cost = Budget.costOf(policy, model, r.usage.inputTokens ?? 0, r.usage.outputTokens ?? 0)
  const answer = r.text.trim()
  yield* recorder.record(
    new TraceEvent.StepCompleted({
      runId: "run",
      step: 1,
      reply: r.text,
      blocks: [],
      usage,
      model: r.model,
      modelMs: ended - started,
      durationMs: ended - started,
      ...(r.finishReason !== undefined ? { finishReason: r.finishReason } : {})
    })
  )
  yield* recorder.record(new TraceEvent.FinalAnswer({ runId: "run", step: 1, source: "FINAL", answer }))
  yield* recorder.record(
    new TraceEvent.RunFinished({
      runId: "run",
      status: "answered",
      steps: 1,
      subCalls: 0,
      usage,
      ...(cost !== undefined ? { costUsd: cost } : {}),
      durationMs: ended - started
    })
  )
  return { answer, status: "answered", usage, costUsd: cost ?? 0, steps: 1, subCalls: 0, shownChars } satisfies Measured
})

const policyOf = (options: Rlm.RunOptions | undefined) =>
  options?.policy instanceof Policy.Policy ? options.policy : Policy.make(options?.policy ?? {})

/**
 * Run one task × method: generate the task, run it with its trace recorded,
 * score the answer.
 *
 * @since 0.1.0
 * @category Running
 */
export const runUnit = Effect.fn("Runner.runUnit")(function* (config: Config, unit: Unit) {
  const path = yield* Path.Path
  const task = Tasks.generate(unit.kind, { seed: config.seed, size: unit.size, index: unit.index })
  const relative = tracePath(task.id, unit.method)
  const file = path.join(config.out, relative)
  const recorder = yield* TraceRecorder.makeJsonl(file).pipe(Effect.mapError((e) => outputFailed(file, e)))
  const started = yield* Clock.currentTimeMillis
  const options = config.options ?? {}
  let measured: Measured
  if (unit.method === "direct") {
    measured = yield* runDirect(task, config.window, policyOf(options), recorder)
  } else if (unit.method === "rlm") {
    measured = yield* runRlm(task, options, recorder)
  } else {
    const sandbox = yield* Sandbox
    measured = yield* runRlm(task, Method.noSubcallsOptions(options), recorder)
  }
  const ended = yield* Clock.currentTimeMillis
  const input = measured.usage.inputTokens ?? 0
  const output = measured.usage.outputTokens ?? 0
  return new Result.ResultLine({
    taskId: task.id,
    kind: task.kind,
    size: task.size,
    seed: task.seed,
    index: task.index,
    method: unit.method,
    score: measured.status === "answered" ? Tasks.score(task, measured.answer) : 0,
    status: measured.status,
    answer: measured.answer,
    truth: task.truth,
    ...(measured.error !== undefined ? { error: measured.error } : {}),
    ...(measured.failure !== undefined ? { failure: measured.failure } : {}),
    inputTokens: input,
    outputTokens: output,
    totalTokens: measured.usage.totalTokens ?? input + output,
    costUsd: measured.costUsd,
    timeMs: ended - started,
    steps: measured.steps,
    subCalls: measured.subCalls,
    ...(unit.method === "direct" && config.window !== undefined ? { window: config.window } : {}),
    ...(measured.shownChars !== undefined ? { shownChars: measured.shownChars } : {}),
    trace: relative
  })
}, Effect.scoped)

const checkConfig = (config: Config): Effect.Effect<void, EvalFailure> => {
  const bad = (message: string) => Effect.fail(new EvalFailure({ reason: "Config", message }))
  if (config.kinds.length === 0) return bad("no task kind was given")
  if (config.sizes.length === 0) return bad("no size was given")
  if (config.methods.length === 0) return bad("no method was given")
  if (!Number.isInteger(config.n) || config.n < 1) return bad(`n must be an integer >= 1, got ${config.n}`)
  if (!Number.isInteger(config.seed)) return bad(`seed must be an integer, got ${config.seed}`)
  if (config.window !== undefined && !(Number.isInteger(config.window) && config.window >= 1)) {
    return bad(`window must be an integer >= 1 (tokens), got ${config.window}`)
  }
  if (config.concurrency !== undefined && !(Number.isInteger(config.concurrency) && config.concurrency >= 1)) {
    return bad(`concurrency must be an integer >= 1, got ${config.concurrency}`)
  }
  return Effect.void
}

/**
 * Run the eval: the tasks × methods not yet in `DIR/results.jsonl`, each
 * result appended as it finishes; then `summary.json` and `report.html` over
 * every result of the config. Fails with {@link EvalFailure} for a bad config or
 * an output that cannot be written; a run that fails is a result (score 0,
 * `status: "failed"`), not a failure of the eval.
 *
 * @since 0.1.0
 * @category Running
 */
export const run = <E = never, R = never>(
  config: Config,
  runner: RunnerOptions<E, R> = {}
): Effect.Effect<Outcome, EvalFailure | E, LlmAdapter | Sandbox | FileSystem.FileSystem | Path.Path | R> =>
  Effect.gen(function* () {
    yield* checkConfig(config)
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const tracesDir = path.join(config.out, "traces")
    yield* fs.makeDirectory(tracesDir, { recursive: true }).pipe(Effect.mapError((e) => outputFailed(tracesDir, e)))
    const resultsFile = path.join(config.out, "results.jsonl")
    const units = plan(config)
    const existing = yield* readResults(resultsFile)
    const byKey = new Map(existing.map((line) => [Result.keyOf(line), line]))
    // Done: a final result (not a provider or sandbox failure); for direct, with the same window.
    const isDone = (unit: Unit) => {
      const line = byKey.get(Result.keyOf(unit))
      return line !== undefined && Result.isFinal(line) && (unit.method !== "direct" || line.window === config.window)
    }
    const todo = units.filter((unit) => !isDone(unit))
    // The lines of the units to run again (a provider or sandbox failure, another window) leave the file first:
    // results.jsonl keeps one line per task × method.
    const rerun = new Set(todo.map(Result.keyOf))
    const kept = existing.filter((line) => !rerun.has(Result.keyOf(line)))
    if (kept.length < existing.length) {
      yield* fs
        .writeFileString(resultsFile, kept.map((l) => `${JSON.stringify(encodeLine(l))}\n`).join(""))
        .pipe(Effect.mapError((e) => outputFailed(resultsFile, e)))
    }
    const resumed = units.length - todo.length
    const doneLines = units.filter(isDone).flatMap((unit) => {
      const line = byKey.get(Result.keyOf(unit))
      return line === undefined ? [] : [line]
    })
    const state = yield* Ref.make({
      done: resumed,
      scoreSum: doneLines.reduce((a, l) => a + l.score, 0),
      tokens: doneLines.reduce((a, l) => a + l.totalTokens, 0),
      costUsd: doneLines.reduce((a, l) => a + l.costUsd, 0)
    })
    const onProgress = runner.onProgress
    const report = (last?: Result.ResultLine) =>
      onProgress === undefined
        ? Effect.void
        : Effect.flatMap(Ref.get(state), (s) =>
            onProgress({
              done: s.done,
              total: units.length,
              resumed,
              meanScore: s.done === 0 ? 0 : s.scoreSum / s.done,
              tokens: s.tokens,
              costUsd: s.costUsd,
              last
            })
          )
    yield* report()
    const lock = yield* Effect.makeSemaphore(1)
    const fresh = new Map<string, Result.ResultLine>()
    const append = (line: Result.ResultLine) =>
      lock.withPermits(1)(
        Effect.uninterruptible(
          fs.writeFileString(resultsFile, `${JSON.stringify(encodeLine(line))}\n`, { flag: "a" }).pipe(
            Effect.mapError((e) => outputFailed(resultsFile, e)),
            Effect.zipRight(
              Ref.update(state, (s) => ({
                done: s.done + 1,
                scoreSum: s.scoreSum + line.score,
                tokens: s.tokens + line.totalTokens,
                costUsd: s.costUsd + line.costUsd
              }))
            ),
            Effect.zipRight(Effect.sync(() => fresh.set(Result.keyOf(line), line))),
            Effect.zipRight(report(line))
          )
        )
      )
    const adapterLayer = runner.adapter
    const one = (
      unit: Unit
    ): Effect.Effect<void, EvalFailure | E, LlmAdapter | Sandbox | FileSystem.FileSystem | Path.Path | R> => {
      const effect = runUnit(config, unit)
      const provided: Effect.Effect<
        Result.ResultLine,
        EvalFailure | E,
        LlmAdapter | Sandbox | FileSystem.FileSystem | Path.Path | R
      > = adapterLayer === undefined ? effect : Effect.provide(effect, adapterLayer)
      return Effect.flatMap(provided, append)
    }
    yield* Effect.forEach(todo, one, { concurrency: config.concurrency ?? 4, discard: true })
    const results = units.flatMap((unit) => {
      const line = fresh.get(Result.keyOf(unit)) ?? byKey.get(Result.keyOf(unit))
      return line === undefined ? [] : [line]
    })
    const summary = Result.summarize(config, results)
    const summaryFile = path.join(config.out, "summary.json")
    yield* fs
      .writeFileString(summaryFile, `${JSON.stringify(Schema.encodeSync(Result.Summary)(summary), null, 2)}\n`)
      .pipe(Effect.mapError((e) => outputFailed(summaryFile, e)))
    const reportFile = path.join(config.out, "report.html")
    yield* fs
      .writeFileString(reportFile, Report.html(summary, results))
      .pipe(Effect.mapError((e) => outputFailed(reportFile, e)))
    return { results, summary, markdown: Report.markdown(summary), resumed } satisfies Outcome
  })
