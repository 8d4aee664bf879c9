/**
 * `rlm eval`: run the eval harness (`@rlm-runtime/eval`) over generated
 * tasks with the adapter, sandbox and policy flags of `rlm run`, and compare
 * methods on the same tasks:
 *
 * ```
 * rlm eval --task sniah,oolong --sizes 8k,32k,128k,1m --n 20 --seed 1 \
 *   --methods rlm,direct,rlm-no-subcalls [--window TOKENS] [--concurrency N] --out DIR
 * ```
 *
 * `--concurrency N` bounds the task × method runs at once (the eval's
 * concurrency); the per-run bound on model calls per depth level, which
 * `rlm run` calls `--concurrency`, is `--run-concurrency` here.
 *
 * Progress goes to stderr (one updating line on a terminal, one plain line
 * per finished run otherwise), the markdown summary table to stdout at the
 * end. Resumable: run the same command again to finish an interrupted eval.
 * Exit codes as `rlm run`: 2 for bad flags, 1 for an output that cannot be
 * written, 4 for `--isolation strict` without the OS wall, 130 on Ctrl-C.
 * A run that fails inside the eval is a result (score 0), not an exit code.
 *
 * @since 0.2.0
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import * as Method from "@rlm-runtime/eval/Method"
import * as Report from "@rlm-runtime/eval/Report"
import * as Runner from "@rlm-runtime/eval/Runner"
import * as Task from "@rlm-runtime/eval/Task"
import { Sandbox } from "@rlm-runtime/sandbox/Sandbox"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type * as Cli from "./Cli.js"
import { CliError } from "./CliError.js"
import * as backends from "./internal/backends.js"
import * as TerminalText from "./TerminalText.js"

/**
 * The flags of `rlm eval`, as parsed (before validation).
 *
 * @since 0.2.0
 * @category Models
 */
export interface EvalFlags extends Cli.BackendFlags {
  /** Comma-separated task kinds. */
  readonly task: string
  /** Comma-separated sizes (`8k,32k,1m`). */
  readonly sizes: string
  readonly n: number
  readonly seed: number
  /** Comma-separated methods. */
  readonly methods: string
  /** `direct`'s window: tokens, as a number or a size (`2k`). */
  readonly window: string | undefined
  /** Task × method runs at once. */
  readonly evalConcurrency: number
  readonly out: string
  readonly quiet: boolean
}

/**
 * Whether stderr is a terminal (the progress line then updates in place).
 * Read from `process.stderr.isTTY` unless provided.
 *
 * @since 0.2.0
 * @category References
 */
export class StderrIsTerminal extends Context.Reference<StderrIsTerminal>()(
  "@rlm-runtime/cli/EvalCommand/StderrIsTerminal",
  { defaultValue: () => process.stderr.isTTY === true }
) {}

const usage = (message: string) => new CliError({ reason: "Usage", message })

const list = (text: string) =>
  text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)

/**
 * The `--task`, `--sizes` and `--methods` lists, checked.
 *
 * @since 0.2.0
 * @category Validation
 */
export const parseLists = (
  flags: Pick<EvalFlags, "task" | "sizes" | "methods">
): Either.Either<
  {
    readonly kinds: ReadonlyArray<Task.Kind>
    readonly sizes: ReadonlyArray<number>
    readonly methods: ReadonlyArray<Method.Method>
  },
  CliError
> => {
  const kinds = list(flags.task)
  const badKind = kinds.find((k) => !(Task.kinds as ReadonlyArray<string>).includes(k))
  if (kinds.length === 0 || badKind !== undefined) {
    return Either.left(
      usage(`--task must be a comma-separated list of ${Task.kinds.join(", ")}; got ${JSON.stringify(flags.task)}.`)
    )
  }
  const methods = list(flags.methods)
  const badMethod = methods.find((m) => !(Method.methods as ReadonlyArray<string>).includes(m))
  if (methods.length === 0 || badMethod !== undefined) {
    return Either.left(
      usage(
        `--methods must be a comma-separated list of ${Method.methods.join(", ")}; got ${JSON.stringify(flags.methods)}.`
      )
    )
  }
  const sizes: Array<number> = []
  for (const s of list(flags.sizes)) {
    const parsed = Task.parseSize(s)
    if (Either.isLeft(parsed)) return Either.left(usage(`--sizes: ${parsed.left}.`))
    if (!sizes.includes(parsed.right)) sizes.push(parsed.right)
  }
  if (sizes.length === 0) return Either.left(usage("--sizes needs at least one size, e.g. --sizes 8k,32k."))
  return Either.right({
    kinds: [...new Set(kinds)] as Array<Task.Kind>,
    sizes: sizes.sort((a, b) => a - b),
    methods: [...new Set(methods)] as Array<Method.Method>
  })
}

const bar = (done: number, total: number, width = 20) => {
  const full = total === 0 ? width : Math.round((done / total) * width)
  return `[${"#".repeat(full)}${"-".repeat(width - full)}]`
}

/**
 * One progress line.
 *
 * @since 0.2.0
 * @category Progress
 */
export const progressLine = (p: Runner.Progress, terminal: boolean): string => {
  const totals = `score so far ${(p.meanScore * 100).toFixed(1)}% · ${p.tokens} tokens · ${Report.formatCost(p.costUsd) === "-" ? "$0" : Report.formatCost(p.costUsd)}`
  const count = `${p.done}/${p.total} tasks done${p.resumed > 0 ? ` (${p.resumed} resumed)` : ""}`
  if (terminal) return `rlm eval: ${bar(p.done, p.total)} ${count} · ${totals}`
  const last =
    p.last === undefined
      ? ""
      : ` · ${p.last.taskId} ${p.last.method}: ${p.last.status === "failed" ? "failed" : `score ${(p.last.score * 100).toFixed(1)}%`} in ${Report.formatTime(p.last.timeMs)}`
  return `rlm eval: ${count}${last} · ${totals}`
}

const fromEvalFailure = (e: Runner.EvalFailure) =>
  new CliError({
    reason: e.reason === "Config" ? "Usage" : e.reason === "Resume" ? "Input" : "Trace",
    message: e.message
  })

// `Cli.ts` imports this module to register the command: the functions of `Cli` are imported when the command runs,
// not at load time, so neither module needs the other half-loaded.
const loadCli = Effect.promise(() => import("./Cli.js"))

/**
 * The `rlm eval` handler: check the flags, plan the backend, run the eval
 * (`Runner.run`) and print the markdown table.
 *
 * @since 0.2.0
 * @category Running
 */
export const evalFlags = (flags: EvalFlags): Effect.Effect<void, CliError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function* () {
    const Cli = yield* loadCli
    const lists = yield* Either.match(parseLists(flags), { onLeft: Effect.fail, onRight: Effect.succeed })
    if (!Number.isInteger(flags.n) || flags.n < 1)
      return yield* Effect.fail(usage(`--n must be an integer >= 1, got ${flags.n}.`))
    const window = flags.window === undefined ? undefined : Task.parseSize(flags.window)
    if (window !== undefined && Either.isLeft(window)) return yield* Effect.fail(usage(`--window: ${window.left}.`))
    if (!Number.isInteger(flags.evalConcurrency) || flags.evalConcurrency < 1) {
      return yield* Effect.fail(usage(`--concurrency must be an integer >= 1, got ${flags.evalConcurrency}.`))
    }
    const plan = yield* Cli.planBackend(flags)
    for (const note of plan.notes) yield* Console.error(`rlm: note: ${note}`)
    if (lists.methods.includes("direct") && flags.window === undefined) {
      yield* Console.error("rlm: note: no --window: direct is sent the whole context, however long.")
    }
    const terminal = yield* StderrIsTerminal
    const onProgress = (p: Runner.Progress) =>
      flags.quiet
        ? Effect.void
        : terminal
          ? Effect.sync(() => {
              process.stderr.write(
                `\r\u001b[2K${TerminalText.sanitize(progressLine(p, true))}${p.done === p.total ? "\n" : ""}`
              )
            })
          : Console.error(progressLine(p, false))
    const config: Runner.Config = {
      ...lists,
      n: flags.n,
      seed: flags.seed,
      window: window === undefined ? undefined : window.right,
      concurrency: flags.evalConcurrency,
      out: flags.out,
      options: plan.options
    }
    // A scripted fake starts its script over for every run: each task × method gets a fresh one.
    const fresh = plan.adapter.kind === "fake" ? backends.adapterLayer(plan.adapter) : undefined
    const outcome = yield* Effect.flatMap(Sandbox, (sandbox) =>
      Effect.zipRight(
        backends.checkIsolation(plan.sandbox, sandbox.isolation),
        Runner.run(config, { onProgress, adapter: fresh }).pipe(
          Effect.mapError((e) => (e instanceof CliError ? e : fromEvalFailure(e)))
        )
      )
    ).pipe(Effect.provide(Cli.backendLayer(plan)))
    if (!flags.quiet) {
      yield* Console.error(
        `rlm eval: ${outcome.results.length} results (${outcome.resumed} resumed) in ${flags.out}: results.jsonl, summary.json, report.html, traces/`
      )
    }
    yield* Console.log(outcome.markdown)
    // Every run failed on the provider: the eval measured nothing (a server down, a bad key); say so with its code.
    const first = outcome.results[0]
    if (first !== undefined && outcome.results.every((r) => r.failure === "Model")) {
      return yield* Effect.fail(
        new CliError({
          reason: "Model",
          message: `every run failed on the model provider (${outcome.results.length} runs; they run again when the eval resumes): ${first.error ?? "no details"}`
        })
      )
    }
  })

/**
 * The arguments of `rlm` with `rlm eval`'s `--n N` (also `--n=N`) read as
 * `-n N`: `@effect/cli` names a one-letter option `-n` only, and the issue's
 * command line says `--n`. Other commands' arguments are left alone.
 *
 * @since 0.2.0
 * @category Parsing
 */
export const argv = (args: ReadonlyArray<string>): ReadonlyArray<string> =>
  args[0] === "eval" ? args.map((a) => (a === "--n" ? "-n" : a.startsWith("--n=") ? `-n=${a.slice(4)}` : a)) : args

/**
 * The `rlm eval` command, with the adapter, sandbox and policy flags of
 * `rlm run` (`Cli.backendOptions`, which `Cli.ts` passes when it registers
 * the command) and its own `--concurrency` (task × method runs at once) in
 * place of theirs, which is `--run-concurrency` here.
 *
 * @since 0.2.0
 * @category Commands
 */
export const make = (backendOptions: typeof Cli.backendOptions) => {
  const options = {
    task: Options.text("task").pipe(
      Options.withDefault("sniah"),
      Options.withDescription(
        `Comma-separated task kinds: ${["sniah", "oolong", "pairs", "multidoc", "codeqa"].join(", ")}.`
      )
    ),
    sizes: Options.text("sizes").pipe(
      Options.withDefault("8k,32k"),
      Options.withDescription(
        "Comma-separated context sizes in tokens (chars / 4): 8k, 32k, 128k, 1m, 10m (k = 1024) or a number."
      )
    ),
    n: Options.integer("n").pipe(
      Options.withDefault(5),
      Options.withDescription("Tasks per kind and size (--n N or -n N).")
    ),
    seed: Options.integer("seed").pipe(Options.withDefault(1), Options.withDescription("Seed of the task generators.")),
    methods: Options.text("methods").pipe(
      Options.withDefault("rlm,direct"),
      Options.withDescription(
        "Comma-separated methods: rlm, direct (the base model, the context in one call cut to --window), rlm-no-subcalls (the REPL without llm_query)."
      )
    ),
    window: Options.optional(
      Options.text("window").pipe(
        Options.withDescription(
          "direct's context window in tokens (chars / 4), a number or a size (2k, 128k): the context is cut to fit. Default: no cut."
        )
      )
    ),
    ...backendOptions,
    concurrency: Options.integer("concurrency").pipe(
      Options.withDefault(4),
      Options.withDescription(
        "Task × method runs at once (the model calls of one run are bounded by --run-concurrency)."
      )
    ),
    runConcurrency: Options.optional(
      Options.integer("run-concurrency").pipe(
        Options.withDescription(
          "Concurrent model calls per depth level within one run (rlm run's --concurrency; default 16)."
        )
      )
    ),
    out: Options.text("out").pipe(
      Options.withAlias("o"),
      Options.withDescription(
        "The output directory: results.jsonl, summary.json, report.html, traces/. Run again to resume."
      )
    ),
    quiet: Options.boolean("quiet").pipe(Options.withDescription("No progress on stderr."))
  } as const
  return Command.make("eval", options, (parsed) =>
    Effect.flatMap(loadCli, (Cli) =>
      evalFlags({
        ...Cli.backendFlagsOf({ ...parsed, concurrency: parsed.runConcurrency }),
        task: parsed.task,
        sizes: parsed.sizes,
        n: parsed.n,
        seed: parsed.seed,
        methods: parsed.methods,
        window: Option.getOrUndefined(parsed.window),
        evalConcurrency: parsed.concurrency,
        out: parsed.out,
        quiet: parsed.quiet
      })
    )
  ).pipe(
    Command.withDescription(
      "Run generated tasks (sniah, oolong, pairs, multidoc, codeqa) with rlm, direct and rlm-no-subcalls on your model; write DIR/results.jsonl, summary.json, report.html and traces/, and print a markdown table. Run again to resume."
    )
  )
}
