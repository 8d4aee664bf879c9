/**
 * `rlm serve [--host 127.0.0.1] [--port 8080] [...]`: an RLM behind an
 * OpenAI-compatible HTTP endpoint (`@rlm-runtime/server`), with every
 * adapter, sandbox and policy flag of `rlm run`. One line on stderr says where
 * it listens; SIGINT/SIGTERM shut it down gracefully (runs in flight get
 * `--shutdown-grace` seconds to finish, the rest are interrupted with their
 * traces written), and it exits 130 like every interrupted `rlm` command.
 *
 * The bearer token is read from `RLM_SERVER_TOKEN`; without it, only a
 * loopback `--host` is served.
 *
 * @since 0.2.0
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import type * as FileSystem from "@effect/platform/FileSystem"
import * as Server from "@rlm-runtime/server/Server"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Cli from "./Cli.js"
import { CliError } from "./CliError.js"
import * as backends from "./internal/backends.js"

/**
 * Defaults of the serve-only flags.
 *
 * @since 0.2.0
 * @category Constants
 */
export const defaults = {
  host: "127.0.0.1",
  port: 8080,
  maxConcurrentRuns: 4,
  maxQueue: 64,
  maxBodyMb: 16,
  maxContextMb: 4096,
  contextsDir: ".rlm-serve/contexts",
  tracesDir: ".rlm-serve/traces",
  modelId: "rlm",
  shutdownGrace: 10,
  maxSessions: 100,
  sessionIdle: 1800
} as const

// A function: `Cli.ts` imports this module and this module reads `Cli.backendOptions`, so nothing of `Cli` may be
// read while the modules load; `Cli.makeCommand` calls `make()` once both have.
const serveOptions = () => ({
  host: Options.text("host").pipe(
    Options.withDefault(defaults.host),
    Options.withDescription(
      "The address to listen on. Anything but loopback needs RLM_SERVER_TOKEN (clients send Authorization: Bearer <token>)."
    )
  ),
  port: Options.integer("port").pipe(
    Options.withDefault(defaults.port),
    Options.withDescription("The port; 0 picks a free one (the listening line says which).")
  ),
  maxConcurrentRuns: Options.integer("max-concurrent-runs").pipe(
    Options.withDefault(defaults.maxConcurrentRuns),
    Options.withDescription("Runs at the same time; the others wait in the queue.")
  ),
  maxQueue: Options.integer("max-queue").pipe(
    Options.withDefault(defaults.maxQueue),
    Options.withDescription("Runs waiting for a place; past it requests get 429 with Retry-After.")
  ),
  maxBodyMb: Options.float("max-body-mb").pipe(
    Options.withDefault(defaults.maxBodyMb),
    Options.withDescription("Largest JSON request body, in MB (413 past it). Upload big contexts to /v1/contexts.")
  ),
  maxContextMb: Options.float("max-context-mb").pipe(
    Options.withDefault(defaults.maxContextMb),
    Options.withDescription("Largest context uploaded to POST /v1/contexts, in MB.")
  ),
  contextsDir: Options.text("contexts-dir").pipe(
    Options.withDefault(defaults.contextsDir),
    Options.withDescription("Where uploaded contexts are stored (created, mode 0700).")
  ),
  tracesDir: Options.text("traces-dir").pipe(
    Options.withDefault(defaults.tracesDir),
    Options.withDescription(
      "Where each run's trace is written as it happens, <run id>.jsonl (created, mode 0700); an interrupted run's partial trace stays."
    )
  ),
  poolSize: Options.optional(
    Options.integer("pool-size").pipe(
      Options.withDescription(
        "Python interpreters kept started and waiting (--sandbox python; default: --max-concurrent-runs)."
      )
    )
  ),
  modelId: Options.text("model-id").pipe(
    Options.withDefault(defaults.modelId),
    Options.withDescription(
      "The model id GET /v1/models lists. A request's model is accepted and echoed whatever it is."
    )
  ),
  shutdownGrace: Options.float("shutdown-grace").pipe(
    Options.withDefault(defaults.shutdownGrace),
    Options.withDescription("Seconds runs in flight may go on at SIGINT/SIGTERM before they are interrupted.")
  ),
  maxSessions: Options.integer("max-sessions").pipe(
    Options.withDefault(defaults.maxSessions),
    Options.withDescription("Open sessions (POST /v1/sessions) at most; past it, 429.")
  ),
  sessionIdle: Options.float("session-idle").pipe(
    Options.withDefault(defaults.sessionIdle),
    Options.withDescription("Seconds a session may go unused before it is closed.")
  ),
  ...Cli.backendOptions
})

/**
 * The parsed flags of `rlm serve`.
 *
 * @since 0.2.0
 * @category Models
 */
export interface ServeFlags {
  readonly backend: Cli.BackendFlags
  readonly host: string
  readonly port: number
  readonly maxConcurrentRuns: number
  readonly maxQueue: number
  readonly maxBodyMb: number
  readonly maxContextMb: number
  readonly contextsDir: string
  readonly tracesDir: string
  readonly poolSize: number | undefined
  readonly modelId: string
  readonly shutdownGrace: number
  readonly maxSessions: number
  readonly sessionIdle: number
}

const usage = (message: string) => new CliError({ reason: "Usage", message })

const check = (ok: boolean, message: string) => (ok ? Effect.void : Effect.fail(usage(message)))

/**
 * The sandbox of the server: for Python a warm pool of `size` interpreters
 * (`PythonSandbox.layerPool`), for JavaScript the plan's sandbox.
 */
const sandboxLayer = (plan: Cli.BackendPlan, size: number) =>
  plan.sandbox.kind === "js"
    ? Layer.empty
    : Layer.unwrapEffect(
        Effect.map(
          Effect.promise(() => import("@rlm-runtime/sandbox/PythonSandbox")),
          (m) =>
            m
              .layerPool({
                size,
                isolation: plan.sandbox.isolation,
                ...(plan.sandbox.execTimeout !== undefined ? { execTimeout: plan.sandbox.execTimeout } : {}),
                ...(plan.sandbox.memoryMb !== undefined ? { memoryMb: plan.sandbox.memoryMb } : {})
              })
              .pipe(Layer.mapError((e) => backends.startError(plan.sandbox, e)))
        )
      )

/**
 * Validate the flags, start the server and serve until interrupted.
 *
 * @since 0.2.0
 * @category Running
 */
export const serve = (flags: ServeFlags): Effect.Effect<void, CliError, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    yield* check(flags.port >= 0 && flags.port <= 65535, `--port must be 0..65535, got ${flags.port}.`)
    yield* check(flags.maxConcurrentRuns >= 1, `--max-concurrent-runs must be >= 1, got ${flags.maxConcurrentRuns}.`)
    yield* check(flags.maxQueue >= 0, `--max-queue must be >= 0, got ${flags.maxQueue}.`)
    yield* check(flags.maxBodyMb > 0, `--max-body-mb must be > 0, got ${flags.maxBodyMb}.`)
    yield* check(flags.maxContextMb > 0, `--max-context-mb must be > 0, got ${flags.maxContextMb}.`)
    yield* check(flags.shutdownGrace >= 0, `--shutdown-grace must be >= 0 seconds, got ${flags.shutdownGrace}.`)
    yield* check(flags.maxSessions >= 0, `--max-sessions must be >= 0, got ${flags.maxSessions}.`)
    yield* check(flags.sessionIdle > 0, `--session-idle must be > 0 seconds, got ${flags.sessionIdle}.`)
    yield* check(
      flags.poolSize === undefined || flags.poolSize >= 1,
      `--pool-size must be >= 1, got ${flags.poolSize}.`
    )
    const plan = yield* Cli.planBackend(flags.backend)
    for (const note of plan.notes) yield* Console.error(`rlm: note: ${note}`)
    if (flags.poolSize !== undefined && plan.sandbox.kind === "js") {
      yield* Console.error("rlm: note: --pool-size is for --sandbox python; the JavaScript sandbox has no pool.")
    }
    const token = yield* Config.option(Config.redacted("RLM_SERVER_TOKEN")).pipe(
      Effect.mapError((e) => usage(`bad RLM_SERVER_TOKEN: ${e.message}`))
    )
    const poolSize = flags.poolSize ?? flags.maxConcurrentRuns
    const backend = Layer.merge(Cli.backendLayer(plan), sandboxLayer(plan, poolSize))
    const mb = 1024 * 1024
    const serverLayer = Server.layer({
      host: flags.host,
      port: flags.port,
      token: Option.getOrUndefined(token),
      maxConcurrentRuns: flags.maxConcurrentRuns,
      maxQueue: flags.maxQueue,
      maxBodyBytes: Math.round(flags.maxBodyMb * mb),
      maxContextBytes: Math.round(flags.maxContextMb * mb),
      contextsDir: flags.contextsDir,
      tracesDir: flags.tracesDir,
      modelId: flags.modelId,
      runOptions: plan.options,
      shutdownGrace: Duration.millis(Math.round(flags.shutdownGrace * 1000)),
      maxSessions: flags.maxSessions,
      sessionIdleTimeout: Duration.millis(Math.round(flags.sessionIdle * 1000))
    }).pipe(
      Layer.mapError(
        (e) =>
          new CliError({
            reason: e.reason === "UnsafeBind" || e.reason === "InvalidOptions" ? "Usage" : "Input",
            message: e.message
          })
      ),
      Layer.provide(backend)
    )
    yield* Effect.scoped(
      Effect.gen(function* () {
        const context = yield* Layer.build(serverLayer)
        const server = Context.get(context, Server.Server)
        const sandbox = plan.sandbox.kind === "python" ? `python sandbox, ${poolSize} warm interpreters` : "js sandbox"
        yield* Console.error(
          `rlm: serving on ${server.url} (model ${server.modelId}, ${sandbox}, ${flags.maxConcurrentRuns} concurrent runs, queue ${flags.maxQueue}, ${
            server.authenticated ? "bearer token required" : "no token: loopback only"
          }, traces in ${server.registry.tracesDir})`
        )
        yield* Effect.never.pipe(
          Effect.onInterrupt(() => Console.error("rlm: shutting down: finishing the runs in flight"))
        )
      })
    ).pipe(Effect.onInterrupt(() => Console.error("rlm: server stopped")))
  })

/**
 * The `rlm serve` command (made on call: see `serveOptions`).
 *
 * @since 0.2.0
 * @category Commands
 */
export const make = () =>
  Command.make("serve", serveOptions(), (parsed) =>
    serve({
      backend: Cli.backendFlagsOf(parsed),
      host: parsed.host,
      port: parsed.port,
      maxConcurrentRuns: parsed.maxConcurrentRuns,
      maxQueue: parsed.maxQueue,
      maxBodyMb: parsed.maxBodyMb,
      maxContextMb: parsed.maxContextMb,
      contextsDir: parsed.contextsDir,
      tracesDir: parsed.tracesDir,
      poolSize: Option.getOrUndefined(parsed.poolSize),
      modelId: parsed.modelId,
      shutdownGrace: parsed.shutdownGrace,
      maxSessions: parsed.maxSessions,
      sessionIdle: parsed.sessionIdle
    })
  ).pipe(
    Command.withDescription(
      "Serve an RLM behind an OpenAI-compatible HTTP API: POST /v1/chat/completions (stream: true for Server-Sent Events), GET /v1/models, POST /v1/contexts, /v1/runs, /v1/sessions, GET /healthz, the OpenAPI document at /docs. Takes every adapter, sandbox and policy flag of rlm run."
    )
  )
