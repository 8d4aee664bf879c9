/**
 * The `rlm` command line.
 *
 * `rlm run --context FILE --query TEXT [--fake SCRIPT.json] [--trace OUT.json] ...`
 * runs one RLM and prints only the final answer on stdout; progress lines and
 * errors go to stderr. `rlm replay TRACE` runs a recorded run again offline,
 * every model call answered from its trace. {@link run} is the whole program as an Effect, usable
 * in-process (tests) as well as from `bin.ts`.
 *
 * Text of the model's or the guest's never reaches a terminal as control
 * sequences: every stderr line goes through `TerminalText.sanitize`, and so
 * does the answer when stdout is a terminal ({@link StdoutIsTerminal}) unless
 * `--raw` is given. Piped or redirected, stdout carries the answer's exact
 * bytes.
 *
 * @since 0.1.0
 */

import { format as formatArgs } from "node:util"
import * as Args from "@effect/cli/Args"
import type * as CliApp from "@effect/cli/CliApp"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import type * as ValidationError from "@effect/cli/ValidationError"
import * as FileSystem from "@effect/platform/FileSystem"
import type * as KeyValueStore from "@effect/platform/KeyValueStore"
import * as Path from "@effect/platform/Path"
import type { Teardown } from "@effect/platform/Runtime"
import * as NodeKeyValueStore from "@effect/platform-node/NodeKeyValueStore"
import * as FakeAdapter from "@rlm-runtime/adapters/FakeAdapter"
import { LlmAdapter } from "@rlm-runtime/adapters/LlmAdapter"
import * as Policy from "@rlm-runtime/core/Policy"
import * as Prompts from "@rlm-runtime/core/Prompts"
import * as Rlm from "@rlm-runtime/core/Rlm"
import type { RlmError } from "@rlm-runtime/core/RlmError"
import { type Isolation, Sandbox } from "@rlm-runtime/sandbox/Sandbox"
import * as CachedAdapter from "@rlm-runtime/trace/CachedAdapter"
import { sha256 } from "@rlm-runtime/trace/Hash"
import * as PrivateFile from "@rlm-runtime/trace/PrivateFile"
import * as Replay from "@rlm-runtime/trace/Replay"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import * as TraceRecorderModule from "@rlm-runtime/trace/TraceRecorder"
import { TraceRecorder } from "@rlm-runtime/trace/TraceRecorder"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import { CliError, interruptedExitCode } from "./CliError.js"
import * as EvalCommand from "./EvalCommand.js"
import * as backends from "./internal/backends.js"
import * as Otlp from "./internal/otlp.js"
import * as Progress from "./Progress.js"
import * as ServeCommand from "./ServeCommand.js"
import * as TerminalText from "./TerminalText.js"
import * as TraceViewCommand from "./TraceViewCommand.js"

/**
 * The version `rlm --version` prints.
 *
 * @since 0.1.0
 * @category Constants
 */
export const version = "0.1.0"

/**
 * The flags that choose the adapter, the sandbox and the policy, as parsed
 * (before validation): {@link backendOptions}. A flag that was not given is
 * `undefined`.
 *
 * @since 0.2.0
 * @category Models
 */
export interface BackendFlags {
  /** A FakeAdapter script file (`{"script": [...], "rules": [...], "latencyMs"?: n}`). */
  readonly fake: string | undefined
  /** A directory caching sub-call responses across runs (`KeyValueStore` on the file system). */
  readonly cache?: string | undefined
  readonly sandbox: "python" | "js"
  /** How the root model replies: fenced code blocks (default) or the provider's tools API. */
  readonly protocol?: "fenced" | "tools" | undefined
  /** The wall asked for: `strict` refuses to run without the OS wall. */
  readonly isolation: backends.IsolationFlag
  /** Seconds per code block. */
  readonly execTimeout: number | undefined
  readonly memoryMb: number | undefined
  readonly maxSteps: number | undefined
  readonly maxSubcalls: number | undefined
  /** Total tokens (input + output) of the whole run tree. */
  readonly maxTokens: number | undefined
  /** USD; bounds only models with a price (see `prices`). */
  readonly maxCost: number | undefined
  /** A JSON file `{"model": {"inputPerMillion": n, "outputPerMillion": n}}`. */
  readonly prices: string | undefined
  /** Seconds of wall time for the whole run tree. */
  readonly timeout: number | undefined
  readonly maxDepth: number | undefined
  readonly concurrency: number | undefined
  readonly adapter: "openai-compat" | "generic" | "fake" | undefined
  readonly genericPreset: "anthropic" | "ollama" | undefined
  readonly baseUrl: string | undefined
  readonly model: string | undefined
  readonly subModel: string | undefined
  readonly llama: boolean
}

/**
 * The flags of `rlm run`, as parsed (before validation). A flag that was not
 * given is `undefined`.
 *
 * @since 0.1.0
 * @category Models
 */
export interface RunFlags extends BackendFlags {
  /** Path of the context file, or `-` for stdin. */
  readonly context: string
  readonly query: string
  /**
   * Where to write the trace: a `.jsonl` path gets each event appended as it
   * happens; any other path gets the JSON document at the end, with the
   * events appended to `<path>.partial.jsonl` while the run lasts.
   */
  readonly trace: string | undefined
  readonly quiet: boolean
  /** Print the answer's bytes on stdout even when it is a terminal. */
  readonly raw: boolean
  /** An OTLP/HTTP traces endpoint to export the run's spans to. */
  readonly otlp?: string | undefined
}

const optional = <A>(options: Options.Options<A>) => Options.optional(options)

/**
 * The flags of `rlm run` that choose the adapter, the sandbox and the policy:
 * what every command that runs RLMs takes (`rlm run`, `rlm serve`, `rlm eval`).
 * Use with {@link backendFlagsOf} and {@link planBackend}.
 *
 * @since 0.2.0
 * @category Options
 */
export const backendOptions = {
  fake: optional(
    Options.text("fake").pipe(
      Options.withDescription(
        'Drive the run with a scripted fake model: a JSON file {"script": [root replies...], "rules": [{"match": "...", "reply": "..."}], "latencyMs": n}.'
      )
    )
  ),
  cache: optional(
    Options.text("cache").pipe(
      Options.withDescription(
        "A directory caching sub-call (llm_query) responses across runs, keyed by the request: a prompt asked before is answered from it and costs nothing."
      )
    )
  ),
  sandbox: Options.choice("sandbox", ["python", "js"]).pipe(
    Options.withDefault("python" as const),
    Options.withDescription("The REPL language.")
  ),
  protocol: Options.choice("protocol", ["fenced", "tools"]).pipe(
    Options.withDefault("fenced" as const),
    Options.withDescription(
      "How the root model replies: fenced (code in ```repl blocks, FINAL(...) / FINAL_VAR(name) in the text) or tools (the provider's tools API: a run_code and a final_answer tool, for models that follow tool calls better than fences)."
    )
  ),
  isolation: Options.choice("isolation", ["auto", "strict", "process"]).pipe(
    Options.withDefault("auto" as const),
    Options.withDescription(
      "The wall around the interpreter: auto (the OS wall, bubblewrap or unshare, where the machine has it, else the process wall), strict (refuse to run without the OS wall, exit 4), process (the process wall only). The first progress line says which one the run got."
    )
  ),
  execTimeout: optional(
    Options.float("exec-timeout").pipe(Options.withDescription("Seconds each code block may run (default 30)."))
  ),
  memoryMb: optional(
    Options.integer("memory-mb").pipe(Options.withDescription("Memory limit of the interpreter, in MB."))
  ),
  maxSteps: optional(Options.integer("max-steps").pipe(Options.withDescription("Root iterations (default 20)."))),
  maxSubcalls: optional(
    Options.integer("max-subcalls").pipe(Options.withDescription("Sub-calls in the whole run tree (default 1000)."))
  ),
  maxTokens: optional(
    Options.integer("max-tokens").pipe(Options.withDescription("Total tokens (input + output) of the whole run."))
  ),
  maxCost: optional(
    Options.float("max-cost").pipe(Options.withDescription("USD for the whole run; needs --prices for the model."))
  ),
  prices: optional(
    Options.text("prices").pipe(
      Options.withDescription(
        'JSON file of prices per model: {"model": {"inputPerMillion": 0.5, "outputPerMillion": 1.5}}.'
      )
    )
  ),
  timeout: optional(Options.float("timeout").pipe(Options.withDescription("Seconds of wall time for the whole run."))),
  maxDepth: optional(
    Options.integer("max-depth").pipe(Options.withDescription("Deepest child RLM (rlm_query); 0 disables them."))
  ),
  concurrency: optional(
    Options.integer("concurrency").pipe(Options.withDescription("Concurrent model calls per depth level (default 16)."))
  ),
  adapter: optional(
    Options.choice("adapter", ["openai-compat", "generic", "fake"]).pipe(
      Options.withDescription("The model provider (default: fake with --fake, else openai-compat).")
    )
  ),
  genericPreset: optional(
    Options.choice("generic-preset", ["anthropic", "ollama"]).pipe(
      Options.withDescription("The request/response shape of the generic adapter.")
    )
  ),
  baseUrl: optional(
    Options.text("base-url").pipe(
      Options.withDescription("The provider's base URL (else LLM_BASE_URL / OPENAI_BASE_URL / the provider default).")
    )
  ),
  model: optional(
    Options.text("model").pipe(
      Options.withDescription(
        "The root model. Optional for --adapter openai-compat: without it no model is named and the server uses its own (llama-server)."
      )
    )
  ),
  subModel: optional(
    Options.text("sub-model").pipe(Options.withDescription("A different model for sub-calls (llm_query)."))
  ),
  llama: Options.boolean("llama").pipe(
    Options.withDescription(
      "Settings for local Llama-family models: the stricter LLAMA_SYSTEM_PROMPT and no final answer before REPL output."
    )
  )
} as const

const runOptions = {
  context: Options.text("context").pipe(
    Options.withAlias("c"),
    Options.withDescription("File holding the context (the long prompt); - reads it from stdin.")
  ),
  query: Options.text("query").pipe(Options.withAlias("q"), Options.withDescription("The question to answer.")),
  trace: optional(
    Options.text("trace").pipe(
      Options.withDescription(
        "Write the run's trace to this file (also when the run fails or is killed). FILE.jsonl: each event is appended as it happens. Any other name: the JSON document, written atomically at the end, with the events appended to FILE.partial.jsonl while the run lasts."
      )
    )
  ),
  ...backendOptions,
  quiet: Options.boolean("quiet").pipe(Options.withDescription("No progress lines on stderr.")),
  raw: Options.boolean("raw").pipe(
    Options.withDescription(
      "Print the answer's exact bytes on stdout even when it is a terminal (by default control characters and escape sequences are removed there; stderr is always cleaned)."
    )
  ),
  otlp: optional(
    Options.text("otlp").pipe(
      Options.withDescription(
        "Export the run's spans (runs, steps, model calls, code blocks, sub-calls) as OpenTelemetry traces to this OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318/v1/traces (a collector, Jaeger); sent before rlm exits, also on failure and Ctrl-C."
      )
    )
  )
} as const

type ParsedRunOptions = Command.Command.ParseConfig<typeof runOptions>

const replayOptions = {
  trace: Args.text({ name: "TRACE" }).pipe(
    Args.withDescription("The trace file written by rlm run --trace (JSON or JSONL).")
  ),
  sandbox: optional(
    Options.choice("sandbox", ["python", "js"]).pipe(
      Options.withDescription("The REPL language (default: the one the trace recorded).")
    )
  ),
  quiet: runOptions.quiet,
  raw: runOptions.raw
} as const

/**
 * The backend flags out of any parsed options record that spreads
 * {@link backendOptions}.
 *
 * @since 0.2.0
 * @category Options
 */
export const backendFlagsOf = (parsed: Command.Command.ParseConfig<typeof backendOptions>): BackendFlags => ({
  fake: Option.getOrUndefined(parsed.fake),
  cache: Option.getOrUndefined(parsed.cache),
  sandbox: parsed.sandbox,
  protocol: parsed.protocol,
  isolation: parsed.isolation,
  execTimeout: Option.getOrUndefined(parsed.execTimeout),
  memoryMb: Option.getOrUndefined(parsed.memoryMb),
  maxSteps: Option.getOrUndefined(parsed.maxSteps),
  maxSubcalls: Option.getOrUndefined(parsed.maxSubcalls),
  maxTokens: Option.getOrUndefined(parsed.maxTokens),
  maxCost: Option.getOrUndefined(parsed.maxCost),
  prices: Option.getOrUndefined(parsed.prices),
  timeout: Option.getOrUndefined(parsed.timeout),
  maxDepth: Option.getOrUndefined(parsed.maxDepth),
  concurrency: Option.getOrUndefined(parsed.concurrency),
  adapter: Option.getOrUndefined(parsed.adapter),
  genericPreset: Option.getOrUndefined(parsed.genericPreset),
  baseUrl: Option.getOrUndefined(parsed.baseUrl),
  model: Option.getOrUndefined(parsed.model),
  subModel: Option.getOrUndefined(parsed.subModel),
  llama: parsed.llama
})

const toFlags = (parsed: ParsedRunOptions): RunFlags => ({
  ...backendFlagsOf(parsed),
  context: parsed.context,
  query: parsed.query,
  trace: Option.getOrUndefined(parsed.trace),
  quiet: parsed.quiet,
  raw: parsed.raw,
  ...(Option.isSome(parsed.otlp) ? { otlp: parsed.otlp.value } : {})
})

/**
 * The command tree (`rlm` with its `run` subcommand) with `run` handled by
 * `execute`. {@link command} is this with the real run; tests pass their own
 * handler to see what was parsed.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const makeCommand = <E, R, E2 = CliError, R2 = FileSystem.FileSystem>(
  execute: (flags: RunFlags) => Effect.Effect<void, E, R>,
  replay?: (flags: ReplayFlags) => Effect.Effect<void, E2, R2>
) => {
  const runCommand = Command.make("run", runOptions, (parsed) => execute(toFlags(parsed))).pipe(
    Command.withDescription("Run an RLM over a context and print the final answer on stdout (progress goes to stderr).")
  )
  const replayHandler = (replay ?? replayFlags) as (flags: ReplayFlags) => Effect.Effect<void, E2, R2>
  const replayCommand = Command.make("replay", replayOptions, (parsed) =>
    replayHandler({
      trace: parsed.trace,
      sandbox: Option.getOrUndefined(parsed.sandbox),
      quiet: parsed.quiet,
      raw: parsed.raw
    })
  ).pipe(
    Command.withDescription(
      "Run a recorded run again offline, every model call answered from its trace (written by rlm run --trace, JSON or JSONL), and print the answer. Exit 0 when the answer and the calls match the trace, 5 when they do not or the trace was changed."
    )
  )
  return Command.make("rlm", {}, () =>
    Effect.fail(new CliError({ reason: "Usage", message: "missing command: try `rlm run --help`." }))
  ).pipe(
    Command.withDescription("Recursive Language Models: answer questions about prompts too long to read at once."),
    Command.withSubcommands([
      runCommand,
      replayCommand,
      TraceViewCommand.command,
      EvalCommand.make(backendOptions),
      ServeCommand.make()
    ])
  )
}

/**
 * What `--isolation strict` asks of the sandbox: fails with a `CliError`
 * "Isolation" (exit 4) when the sandbox it got runs behind the process wall
 * only. `rlm run` checks it before the run starts, whatever the sandbox said.
 *
 * @since 0.2.0
 * @category Isolation
 */
export const checkIsolation: (settings: backends.SandboxSettings, got: Isolation) => Effect.Effect<void, CliError> =
  backends.checkIsolation

/**
 * The `CliError` for a sandbox that could not start: "Isolation" (exit 4, with
 * how to get bubblewrap) for a `SandboxError` "StartFailed" under
 * `--isolation strict`, else "Sandbox" (exit 1).
 *
 * @since 0.2.0
 * @category Isolation
 */
export const sandboxStartError: (settings: backends.SandboxSettings, error: unknown) => CliError = backends.startError

// ---------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------

const usage = (message: string) => new CliError({ reason: "Usage", message })
const input = (message: string) => new CliError({ reason: "Input", message })

const checkInt = (flag: string, value: number | undefined, min: number): Effect.Effect<number | undefined, CliError> =>
  value === undefined || (Number.isInteger(value) && value >= min)
    ? Effect.succeed(value)
    : Effect.fail(usage(`${flag} must be an integer >= ${min}, got ${value}.`))

const checkSeconds = (flag: string, value: number | undefined): Effect.Effect<number | undefined, CliError> =>
  value === undefined || (Number.isFinite(value) && value > 0)
    ? Effect.succeed(value)
    : Effect.fail(usage(`${flag} must be a number of seconds > 0, got ${value}.`))

const Prices = Schema.Record({ key: Schema.String, value: Policy.ModelPrice })

const readPrices = (path: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs
      .readFileString(path)
      .pipe(Effect.mapError((e) => input(`could not read the --prices file ${JSON.stringify(path)}: ${e.message}`)))
    return yield* Schema.decodeUnknown(Schema.parseJson(Prices))(text).pipe(
      Effect.mapError((e) =>
        input(
          `the --prices file ${JSON.stringify(path)} is not {"<model>": {"inputPerMillion": n, "outputPerMillion": n}}: ${ParseResult.TreeFormatter.formatErrorSync(e)}`
        )
      )
    )
  })

const readStdin: Effect.Effect<string, CliError> = Effect.tryPromise({
  try: async () => {
    const chunks: Array<Buffer> = []
    for await (const chunk of process.stdin) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk)
    return Buffer.concat(chunks).toString("utf8")
  },
  catch: (e) => input(`could not read the context from stdin: ${e instanceof Error ? e.message : String(e)}`)
})

const readContext = (path: string) =>
  path === "-"
    ? Effect.zipRight(
        process.stdin.isTTY === true
          ? Console.error("rlm: reading the context from stdin (end it with Ctrl-D)")
          : Effect.void,
        readStdin
      )
    : Effect.flatMap(FileSystem.FileSystem, (fs) =>
        fs
          .readFileString(path)
          .pipe(
            Effect.mapError((e) => input(`could not read the --context file ${JSON.stringify(path)}: ${e.message}`))
          )
      )

/**
 * What a validated set of {@link BackendFlags} chooses: the policy and run
 * options, the adapter and the sandbox.
 *
 * @since 0.2.0
 * @category Models
 */
export interface BackendPlan {
  readonly policy: Policy.Policy
  readonly options: Rlm.RunOptions
  readonly adapter: backends.AdapterSettings
  readonly sandbox: backends.SandboxSettings
  /** The `--cache` directory. */
  readonly cache?: string | undefined
  /** Notes for the user (ignored flags, unbounded limits), printed to stderr. */
  readonly notes: ReadonlyArray<string>
}

/**
 * Everything a validated `rlm run` needs.
 *
 * @since 0.1.0
 * @category Models
 */
export interface RunPlan extends BackendPlan {
  readonly query: string
  readonly context: string
  readonly trace: string | undefined
  readonly quiet: boolean
  /** Print the answer unsanitized even on a terminal (`--raw`). */
  readonly raw: boolean
  /** The OTLP/HTTP traces endpoint the run's spans are exported to (`--otlp`). */
  readonly otlp?: string | undefined
}

/**
 * Check the backend flags and read their files (`--fake`, `--prices`): the
 * part of {@link plan} every command that runs RLMs shares.
 *
 * @since 0.2.0
 * @category Validation
 */
export const planBackend = (flags: BackendFlags): Effect.Effect<BackendPlan, CliError, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    const notes: Array<string> = []
    const maxSteps = yield* checkInt("--max-steps", flags.maxSteps, 1)
    const maxSubCalls = yield* checkInt("--max-subcalls", flags.maxSubcalls, 0)
    const maxTotalTokens = yield* checkInt("--max-tokens", flags.maxTokens, 0)
    const maxDepth = yield* checkInt("--max-depth", flags.maxDepth, 0)
    const concurrency = yield* checkInt("--concurrency", flags.concurrency, 1)
    const memoryMb = yield* checkInt("--memory-mb", flags.memoryMb, 1)
    const timeout = yield* checkSeconds("--timeout", flags.timeout)
    const execTimeout = yield* checkSeconds("--exec-timeout", flags.execTimeout)
    if (flags.maxCost !== undefined && !(Number.isFinite(flags.maxCost) && flags.maxCost >= 0)) {
      return yield* Effect.fail(usage(`--max-cost must be a number of USD >= 0, got ${flags.maxCost}.`))
    }
    const prices = flags.prices === undefined ? undefined : yield* readPrices(flags.prices)
    const kind = flags.adapter ?? (flags.fake !== undefined ? "fake" : "openai-compat")
    let adapter: backends.AdapterSettings
    if (kind === "fake") {
      if (flags.fake === undefined) {
        return yield* Effect.fail(usage("--adapter fake needs --fake SCRIPT.json (the scripted replies)."))
      }
      const script = yield* FakeAdapter.readScript(flags.fake).pipe(
        Effect.mapError((e) => input(`bad --fake file ${JSON.stringify(flags.fake)}: ${e.message}`))
      )
      if (flags.subModel !== undefined) notes.push("--sub-model is ignored by the fake adapter.")
      if (flags.baseUrl !== undefined) notes.push("--base-url is ignored by the fake adapter.")
      adapter = { kind: "fake", script, model: flags.model }
    } else {
      if (flags.fake !== undefined) {
        return yield* Effect.fail(
          usage(`--fake only works with the fake adapter, but --adapter ${kind} was given; drop one of them.`)
        )
      }
      if (kind === "generic" && flags.genericPreset === undefined) {
        return yield* Effect.fail(usage("--adapter generic needs --generic-preset anthropic|ollama."))
      }
      if (kind === "generic") {
        if (flags.model === undefined) {
          return yield* Effect.fail(
            usage(
              `--adapter ${kind} needs --model NAME (the root model; --sub-model NAME for sub-calls), or --fake SCRIPT.json for a scripted run.`
            )
          )
        }
        adapter = {
          kind: "generic",
          preset: flags.genericPreset ?? "ollama",
          baseUrl: flags.baseUrl,
          model: flags.model,
          subModel: flags.subModel
        }
      } else {
        // Without --model no model is named: a server serving one model (llama-server) answers with it.
        adapter = { kind: "openai-compat", baseUrl: flags.baseUrl, model: flags.model, subModel: flags.subModel }
      }
    }
    if (kind !== "generic" && flags.genericPreset !== undefined) {
      notes.push(`--generic-preset is ignored by the ${kind} adapter.`)
    }
    if (flags.maxCost !== undefined && prices === undefined) {
      notes.push(
        "--max-cost bounds only models with a known price and no --prices file was given: cost is not bounded."
      )
    }

    const policy = yield* Schema.decodeUnknown(Policy.Policy)({
      ...(maxSteps !== undefined ? { maxSteps } : {}),
      ...(maxSubCalls !== undefined ? { maxSubCalls } : {}),
      ...(maxTotalTokens !== undefined ? { maxTotalTokens } : {}),
      ...(flags.maxCost !== undefined ? { maxCostUsd: flags.maxCost } : {}),
      ...(timeout !== undefined ? { timeoutMs: Math.max(1, Math.round(timeout * 1000)) } : {}),
      ...(maxDepth !== undefined ? { maxDepth } : {}),
      ...(concurrency !== undefined ? { concurrency } : {}),
      ...(prices !== undefined ? { prices } : {})
    }).pipe(Effect.mapError((e) => usage(`invalid limits: ${ParseResult.TreeFormatter.formatErrorSync(e)}`)))

    const tools = flags.protocol === "tools"
    if (flags.llama && flags.sandbox !== "python") {
      notes.push(
        "--llama: LLAMA_SYSTEM_PROMPT is written for Python; with --sandbox js only the final-answer rule applies."
      )
    } else if (flags.llama && tools) {
      notes.push(
        "--llama: LLAMA_SYSTEM_PROMPT is written for fenced replies; with --protocol tools only the final-answer rule applies."
      )
    }
    const execTimeoutDuration = execTimeout === undefined ? undefined : Duration.millis(Math.round(execTimeout * 1000))
    const options: Rlm.RunOptions = {
      policy,
      ...(tools ? { protocol: "tools" as const } : {}),
      ...(flags.llama && flags.sandbox === "python" && !tools ? { systemPrompt: Prompts.LLAMA_SYSTEM_PROMPT } : {}),
      ...(flags.llama ? { requireReplBeforeFinal: true } : {}),
      ...(execTimeoutDuration !== undefined ? { execTimeout: execTimeoutDuration } : {})
    }

    return {
      policy,
      options,
      adapter,
      sandbox: {
        kind: flags.sandbox,
        execTimeout: execTimeoutDuration,
        memoryMb,
        isolation: backends.isolationModes[flags.isolation]
      },
      ...(flags.cache !== undefined ? { cache: flags.cache } : {}),
      notes
    }
  })

/**
 * Check the flags and read the inputs (`--context`, `--fake`, `--prices`).
 * Nothing runs and no file is written yet.
 *
 * @since 0.1.0
 * @category Validation
 */
export const plan = (flags: RunFlags): Effect.Effect<RunPlan, CliError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function* () {
    const backend = yield* planBackend(flags)
    const otlpEndpoint = flags.otlp === undefined ? undefined : Otlp.endpoint(flags.otlp)
    if (otlpEndpoint !== undefined && "error" in otlpEndpoint) {
      return yield* Effect.fail(usage(`${otlpEndpoint.error}; e.g. --otlp http://127.0.0.1:4318/v1/traces.`))
    }

    if (flags.trace !== undefined) {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const dir = path.dirname(path.resolve(flags.trace))
      const exists = yield* fs.exists(dir).pipe(Effect.orElseSucceed(() => false))
      if (!exists) {
        return yield* Effect.fail(
          input(`the --trace directory ${JSON.stringify(dir)} does not exist; create it or pick another path.`)
        )
      }
    }

    const context = yield* readContext(flags.context)
    return {
      ...backend,
      query: flags.query,
      context,
      trace: flags.trace,
      quiet: flags.quiet,
      raw: flags.raw,
      ...(otlpEndpoint !== undefined ? { otlp: otlpEndpoint.url } : {})
    }
  })

// ---------------------------------------------------------------------------
// running
// ---------------------------------------------------------------------------

const flagOfLimit: Record<string, string> = {
  maxSteps: "--max-steps",
  maxSubCalls: "--max-subcalls",
  maxTotalTokens: "--max-tokens",
  maxCostUsd: "--max-cost",
  timeoutMs: "--timeout",
  maxInputTokens: "policy.maxInputTokens",
  maxOutputTokens: "policy.maxOutputTokens",
  maxConsecutiveErrors: "policy.maxConsecutiveErrors"
}

const messageOf = (u: unknown): string =>
  typeof u === "object" && u !== null && "message" in u && typeof u.message === "string" ? u.message : ""

const fromRunError = (
  e: RlmError | CliError,
  recorded: string | undefined,
  sandbox: backends.SandboxSettings
): CliError => {
  switch (e._tag) {
    case "CliError":
      return e
    case "BudgetExceeded": {
      const flag = flagOfLimit[e.limit] ?? e.limit
      // The core's own explanation when it has one; it says which policy field to raise.
      const detail = e.message.replace(/^Budget exceeded:\s*/, "")
      return new CliError({
        reason: "Budget",
        message: `budget exceeded: ${e.limit} (${flag}): ${
          detail.length > 0
            ? detail
            : `the limit is ${e.value} and the run needed ${e.used}. Raise ${flag} to allow more.`
        }`
      })
    }
    case "RunFailed": {
      // A sandbox that could not start an interpreter under --isolation strict: the Isolation advice.
      if (
        e.reason === "Sandbox" &&
        sandbox.isolation === "require-namespace" &&
        typeof e.cause === "object" &&
        e.cause !== null &&
        "reason" in e.cause &&
        e.cause.reason === "StartFailed"
      ) {
        return backends.startError(sandbox, e.cause)
      }
      const cause = messageOf(e.cause) || (recorded ?? "")
      const sandboxFailure = e.reason === "Sandbox" || e.reason === "SandboxRestarts"
      const what = sandboxFailure
        ? "the sandbox failed"
        : e.reason === "Model"
          ? "the model call failed"
          : "the run failed"
      return new CliError({
        reason: sandboxFailure ? "Sandbox" : "Model",
        message: e.message.length > 0 ? e.message : cause.length > 0 ? cause : `${what} (no details were given).`
      })
    }
  }
}

const partialAnswerOf = (e: RlmError | CliError): Option.Option<string> =>
  e._tag === "CliError" ? Option.none() : e.partialAnswer

/**
 * Whether stdout is a terminal, which decides if the answer is sanitized
 * (see `TerminalText`). Read from `process.stdout.isTTY` unless provided (tests
 * provide it).
 *
 * @since 0.2.0
 * @category References
 */
export class StdoutIsTerminal extends Context.Reference<StdoutIsTerminal>()("@rlm-runtime/cli/Cli/StdoutIsTerminal", {
  defaultValue: () => process.stdout.isTTY === true
}) {}

/**
 * Where a `--trace FILE` that is not `.jsonl` gets its events while the run
 * lasts: `FILE.partial.jsonl`. It is replaced by `FILE` (the JSON document)
 * when the run ends, and left behind, holding every event up to then, when
 * the process is killed.
 *
 * @since 0.2.0
 * @category Tracing
 */
export const partialTracePath = (path: string): string => `${path}.partial.jsonl`

/**
 * Whether a `--trace` path is written as JSONL (each event appended as it
 * happens) rather than as one JSON document.
 *
 * @since 0.2.0
 * @category Tracing
 */
export const isJsonlPath = (path: string): boolean => path.toLowerCase().endsWith(".jsonl")

/**
 * The `RunInput` event `rlm run --trace` records first: what `rlm replay`
 * needs to run the same run again.
 *
 * @since 0.2.0
 * @category Tracing
 */
export const runInputOf = (p: RunPlan, models?: { readonly root: string; readonly sub: string }): TraceEvent.RunInput =>
  new TraceEvent.RunInput({
    runId: "run",
    query: p.query,
    context: p.context,
    contextSha256: sha256(p.context),
    language: p.sandbox.kind,
    protocol: p.options.protocol ?? "fenced",
    // Through JSON: the encoded policy's absent fields are `undefined`, which JSON drops.
    policy: JSON.parse(JSON.stringify(Schema.encodeSync(Policy.Policy)(p.policy))) as Record<string, TraceEvent.Json>,
    ...(p.options.systemPrompt !== undefined ? { systemPrompt: p.options.systemPrompt } : {}),
    ...(p.options.requireReplBeforeFinal !== undefined
      ? { requireReplBeforeFinal: p.options.requireReplBeforeFinal }
      : {}),
    ...(p.options.subCalls === false ? { subCalls: false } : {}),
    ...(p.sandbox.execTimeout !== undefined ? { execTimeoutMs: Duration.toMillis(p.sandbox.execTimeout) } : {}),
    ...(models !== undefined ? { models: { root: models.root, sub: models.sub } } : {})
  })

const traceFailed = (path: string, e: { readonly message: string }) =>
  new CliError({ reason: "Trace", message: `could not write the --trace file ${JSON.stringify(path)}: ${e.message}` })

/**
 * The `--cache DIR` store: a `KeyValueStore` on the file system, its
 * directory made private (`0700`) when it is created: it holds prompts and
 * replies.
 */
const cacheStore = (dir: string): Layer.Layer<KeyValueStore.KeyValueStore, CliError, FileSystem.FileSystem> => {
  const failed = (e: { readonly message: string }) =>
    input(`could not open the --cache directory ${JSON.stringify(dir)}: ${e.message}`)
  const made = Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const exists = yield* fs.exists(dir).pipe(Effect.orElseSucceed(() => false))
    if (!exists) yield* fs.makeDirectory(dir, { recursive: true, mode: 0o700 })
    return NodeKeyValueStore.layerFileSystem(dir)
  }).pipe(Effect.mapError(failed))
  return Layer.unwrapEffect(made).pipe(Layer.mapError((e) => (e instanceof CliError ? e : failed(e))))
}

/** The plan's adapter, behind the `--cache` store when one is given. */
const planAdapter = (p: BackendPlan): Layer.Layer<LlmAdapter, CliError, FileSystem.FileSystem> => {
  const base = backends.adapterLayer(p.adapter)
  return p.cache === undefined
    ? base
    : CachedAdapter.layerStore().pipe(Layer.provide(base), Layer.provide(cacheStore(p.cache)))
}

/**
 * The adapter (behind the `--cache` store when one is given) and the sandbox
 * a {@link BackendPlan} chose, as one Layer.
 *
 * @since 0.2.0
 * @category Layers
 */
export const backendLayer = (p: BackendPlan): Layer.Layer<LlmAdapter | Sandbox, CliError, FileSystem.FileSystem> =>
  Layer.merge(planAdapter(p), backends.sandboxLayer(p.sandbox))

/**
 * Run a validated plan: the RLM with its adapter, sandbox and a progress
 * recorder; print the answer on stdout; write the trace (also on failure and
 * interruption). With `--trace FILE.jsonl` every event is appended to the
 * file as it happens; with another name the events go to
 * {@link partialTracePath} while the run lasts and the JSON document
 * replaces it atomically at the end. Either way a killed run leaves every
 * event recorded until it died. With `--otlp`, the run's spans are exported,
 * the last of them before it returns (also on failure and interruption).
 *
 * @since 0.1.0
 * @category Running
 */
export const execute = (p: RunPlan): Effect.Effect<void, CliError, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    for (const note of p.notes) yield* Console.error(`rlm: note: ${note}`)
    const progress = yield* Progress.make({ quiet: p.quiet })
    const path = p.trace
    const live = path === undefined ? undefined : isJsonlPath(path) ? path : partialTracePath(path)
    const recorder =
      live === undefined
        ? progress
        : yield* TraceRecorderModule.tee(progress, live).pipe(Effect.mapError((e) => traceFailed(live, e)))
    const traceError = yield* Ref.make(Option.none<CliError>())
    /** Write the trace; a failure is kept to fail a successful run, or printed beside the run's own error. */
    const writeTrace = (path: string, runSucceeded: boolean) =>
      recorder.snapshot.pipe(
        Effect.flatMap((trace) =>
          (isJsonlPath(path)
            ? Effect.void
            : Effect.try({
                try: () => Trace.toJson(trace),
                catch: (e) => new CliError({ reason: "Trace", message: `could not encode the trace: ${String(e)}` })
              }).pipe(
                Effect.flatMap((json) =>
                  // Atomic (a temporary file renamed over the target): the document is whole or absent.
                  PrivateFile.writeFileString(path, `${json}\n`).pipe(Effect.mapError((e) => traceFailed(path, e)))
                ),
                Effect.zipRight(
                  fs.remove(partialTracePath(path)).pipe(Effect.mapError((e) => traceFailed(partialTracePath(path), e)))
                )
              )
          ).pipe(
            Effect.zipRight(
              p.quiet ? Effect.void : Console.error(`rlm: trace written to ${path} (${trace.events.length} events)`)
            )
          )
        ),
        Effect.catchAll((e) =>
          runSucceeded ? Ref.set(traceError, Option.some(e)) : Console.error(`rlm: ${oneLine(e.message)}`)
        )
      )
    // The run's input first, with the model names the adapter was configured with: what `rlm replay` needs.
    const recordInput =
      path === undefined
        ? Effect.void
        : Effect.flatMap(LlmAdapter, (adapter) =>
            recorder.record(runInputOf(p, { root: adapter.model("root"), sub: adapter.model("sub") }))
          )
    const result = yield* Effect.flatMap(Sandbox, (sandbox) =>
      progress
        .setIsolation(sandbox.isolation)
        .pipe(
          Effect.zipRight(backends.checkIsolation(p.sandbox, sandbox.isolation)),
          Effect.zipRight(recordInput),
          Effect.zipRight(Rlm.run(p.query, p.context, p.options))
        )
    ).pipe(
      Effect.provide(backendLayer(p)),
      Effect.provideService(TraceRecorder, recorder),
      Effect.tapError((e) =>
        Option.match(partialAnswerOf(e), {
          onNone: () => Effect.void,
          onSome: (answer) =>
            Console.error(`rlm: best partial answer (not final): ${oneLine(TerminalText.sanitize(answer), 300)}`)
        })
      ),
      Effect.catchAll((e) =>
        Effect.flatMap(recorder.events, (events) => {
          // The error the root run recorded when it finished: a fallback for an error whose message was lost.
          const finished = [...events].reverse().find((event) => event._tag === "RunFinished" && event.runId === "run")
          return Effect.fail(fromRunError(e, finished?._tag === "RunFinished" ? finished.error : undefined, p.sandbox))
        })
      ),
      (self) => (path === undefined ? self : Effect.onExit(self, (exit) => writeTrace(path, Exit.isSuccess(exit))))
    )
    const terminal = yield* StdoutIsTerminal
    yield* Console.log(terminal && !p.raw ? TerminalText.sanitize(result.answer) : result.answer)
    const failedTrace = yield* Ref.get(traceError)
    if (Option.isSome(failedTrace)) return yield* Effect.fail(failedTrace.value)
  }).pipe(
    Effect.scoped,
    // The exporter sends the last spans when its scope closes: once the run has ended (however it did), the answer
    // is printed and the trace written.
    (self) => (p.otlp === undefined ? self : Effect.provide(self, Otlp.layer(p.otlp, version)))
  )

const oneLine = (text: string, max = Number.POSITIVE_INFINITY) => {
  const flat = text.replace(/\s*\n\s*/g, " ").trim()
  return flat.length > max ? `${flat.slice(0, max)}…` : flat
}

// ---------------------------------------------------------------------------
// replay
// ---------------------------------------------------------------------------

/**
 * The arguments of `rlm replay`.
 *
 * @since 0.2.0
 * @category Models
 */
export interface ReplayFlags {
  /** The trace file (JSON or JSONL) written by `rlm run --trace`. */
  readonly trace: string
  /** The REPL language; default: the one the trace recorded. */
  readonly sandbox: "python" | "js" | undefined
  readonly quiet: boolean
  readonly raw: boolean
}

const replayFailed = (e: { readonly message: string }) => new CliError({ reason: "Replay", message: e.message })

/**
 * `rlm replay TRACE`: run the recorded run again offline, every model call
 * answered from the trace (`Replay`), and print the answer. Fails with a
 * `CliError` "Replay" (exit 5) when the trace was changed after it was
 * recorded (`TraceTampered`), or when the replay left the recorded run: a call
 * the trace does not hold, a recorded call never made, another answer
 * (`ReplayDivergence`). A recorded run that failed replays to the same
 * failure, with the same exit code as `rlm run`.
 *
 * @since 0.2.0
 * @category Running
 */
export const replayFlags = (flags: ReplayFlags): Effect.Effect<void, CliError, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs
      .readFileString(flags.trace)
      .pipe(Effect.mapError((e) => input(`could not read the trace ${JSON.stringify(flags.trace)}: ${e.message}`)))
    const trace = yield* Trace.decodeText(text).pipe(
      Effect.mapError((e) => input(`the trace ${JSON.stringify(flags.trace)} could not be decoded: ${e.message}`))
    )
    const recorded = trace.events.find((event): event is TraceEvent.RunInput => event._tag === "RunInput")
    if (recorded === undefined) {
      return yield* Effect.fail(
        input(
          `the trace ${JSON.stringify(flags.trace)} holds no RunInput event (the query, context and options of the run): only a trace written by \`rlm run --trace\` of this version can be replayed from the command line. A library run replays with Replay.layer(trace).`
        )
      )
    }
    // Refuse a changed trace before anything runs.
    const replay = yield* Replay.make(trace).pipe(Effect.mapError(replayFailed))
    const language = flags.sandbox ?? recorded.language
    if (language !== "python" && language !== "js") {
      return yield* Effect.fail(
        input(`the trace records the sandbox ${JSON.stringify(language)}; pass --sandbox python|js.`)
      )
    }
    const policy = yield* Schema.decodeUnknown(Policy.Policy)(recorded.policy).pipe(
      Effect.mapError((e) => input(`the trace's policy is invalid: ${ParseResult.TreeFormatter.formatErrorSync(e)}`))
    )
    const execTimeout = recorded.execTimeoutMs === undefined ? undefined : Duration.millis(recorded.execTimeoutMs)
    const options: Rlm.RunOptions = {
      policy,
      ...(recorded.protocol === "tools" ? { protocol: "tools" as const } : {}),
      ...(recorded.systemPrompt !== undefined ? { systemPrompt: recorded.systemPrompt } : {}),
      ...(recorded.requireReplBeforeFinal !== undefined
        ? { requireReplBeforeFinal: recorded.requireReplBeforeFinal }
        : {}),
      ...(recorded.subCalls === false ? { subCalls: false } : {}),
      ...(execTimeout !== undefined ? { execTimeout } : {})
    }
    const sandbox: backends.SandboxSettings = {
      kind: language,
      execTimeout,
      memoryMb: undefined,
      isolation: backends.isolationModes.auto
    }
    const progress = yield* Progress.make({ quiet: flags.quiet })
    const result = yield* Effect.flatMap(Sandbox, (s) =>
      Effect.zipRight(progress.setIsolation(s.isolation), Rlm.run(recorded.query, recorded.context, options))
    ).pipe(
      Effect.provide(backends.sandboxLayer(sandbox)),
      Effect.provideService(LlmAdapter, replay.adapter),
      Effect.provideService(TraceRecorder, progress),
      Effect.catchAll((e) =>
        // A divergence (or a recorded call never made) explains the failure better than the error it caused;
        // else the recorded run failed the same way, and this is its error.
        Effect.zipRight(
          replay.check.pipe(Effect.mapError(replayFailed)),
          Effect.fail(e._tag === "CliError" ? e : fromRunError(e, undefined, sandbox))
        )
      )
    )
    yield* replay.check.pipe(Effect.mapError(replayFailed))
    yield* Replay.checkAnswer(trace, result.answer).pipe(Effect.mapError(replayFailed))
    if (!flags.quiet) {
      const calls = yield* replay.calls
      yield* Console.error(`rlm: replay matches the trace (${calls.length} model calls answered from it)`)
    }
    const terminal = yield* StdoutIsTerminal
    yield* Console.log(terminal && !flags.raw ? TerminalText.sanitize(result.answer) : result.answer)
  })

/**
 * The real `rlm run` handler: {@link plan} then {@link execute}.
 *
 * @since 0.1.0
 * @category Running
 */
export const runFlags = (flags: RunFlags): Effect.Effect<void, CliError, FileSystem.FileSystem | Path.Path> =>
  Effect.flatMap(plan(flags), execute)

/**
 * The `rlm` command tree.
 *
 * @since 0.1.0
 * @category Commands
 */
export const command = makeCommand(runFlags)

const app = Command.run(command, { name: "rlm", version, executable: "rlm" })

/**
 * The services `rlm` needs from its platform (`NodeContext.layer` provides them).
 *
 * @since 0.1.0
 * @category Models
 */
export type Environment = CliApp.CliApp.Environment

/**
 * Run `rlm` with its arguments (without the `node` and script path: for
 * `rlm run --query q`, pass `["run", "--query", "q"]`).
 *
 * Only the answer is printed to stdout (through `Console.log`); progress,
 * notes, log lines and the one-line error (`rlm: ...`) go to stderr (through
 * `Console.error`), so a test can capture both with `Effect.withConsole`.
 * Fails with a {@link CliError} (already printed) or the parser's
 * `ValidationError` (already printed with the usage).
 *
 * @since 0.1.0
 * @category Running
 */
export const run = (
  args: ReadonlyArray<string>
): Effect.Effect<void, CliError | ValidationError.ValidationError, Environment> =>
  app(["node", "rlm", ...EvalCommand.argv(args)]).pipe(
    Effect.catchAllDefect((defect) =>
      Effect.fail(
        new CliError({
          reason: "Internal",
          message: `internal error (please report it): ${oneLine(Cause.pretty(Cause.die(defect)), 2000)}`
        })
      )
    ),
    Effect.tapError((e) =>
      // The parser has already printed what is wrong with the arguments.
      Console.error(
        e._tag === "CliError" ? `rlm: ${oneLine(e.message)}` : "rlm: invalid arguments; see `rlm run --help`."
      )
    ),
    Effect.onInterrupt(() => Console.error("rlm: interrupted")),
    Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))),
    (self) => Effect.flatMap(Effect.console, (console) => Effect.withConsole(self, sanitizedStderr(console)))
  )

/**
 * `console` with every stderr method (`error`, `warn`, `debug`, `trace`, and
 * their `unsafe` forms, which the logger uses) writing its formatted arguments
 * through `TerminalText.sanitize`. stdout (`log`, `info`) is left alone: the
 * answer is sanitized where it is printed, as `--raw` and the TTY decide.
 *
 * @since 0.2.0
 * @category Running
 */
export const sanitizedStderr = (console: Console.Console): Console.Console => {
  const clean = (args: ReadonlyArray<unknown>) => TerminalText.sanitize(formatArgs(...args))
  return {
    ...console,
    error: (...args) => console.error(clean(args)),
    warn: (...args) => console.warn(clean(args)),
    debug: (...args) => console.debug(clean(args)),
    trace: (...args) => console.trace(clean(args)),
    unsafe: {
      ...console.unsafe,
      error: (...args) => console.unsafe.error(clean(args)),
      warn: (...args) => console.unsafe.warn(clean(args)),
      debug: (...args) => console.unsafe.debug(clean(args)),
      trace: (...args) => console.unsafe.trace(clean(args))
    }
  }
}

/**
 * The process exit code for the outcome of {@link run}: 0 on success, the
 * {@link CliError}'s code, 2 for a usage error found by the parser, 130 when
 * interrupted.
 *
 * @since 0.1.0
 * @category Running
 */
export const exitCode = <A>(exit: Exit.Exit<A, unknown>): number => {
  if (Exit.isSuccess(exit)) return 0
  if (Cause.isInterruptedOnly(exit.cause)) return interruptedExitCode
  return Option.match(Cause.failureOption(exit.cause), {
    onNone: () => 70,
    onSome: (e) => (e instanceof CliError ? e.exitCode : 2)
  })
}

/**
 * A `runMain` teardown exiting with {@link exitCode}.
 *
 * @since 0.1.0
 * @category Running
 */
export const teardown: Teardown = (exit, onExit) => onExit(exitCode(exit))
