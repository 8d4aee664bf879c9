/**
 * Host side of the JavaScript sandbox: each session's QuickJS interpreter runs
 * in its own locked-down child Node process (`runtime/javascript-child.mjs`),
 * behind the OS wall where the machine has one. The host talks to it over
 * plain pipes carrying JSON lines, read with a cap on every line, and decodes
 * every message with a Schema capped in size: nothing the child sends is
 * trusted, and no guest code ever runs on the host's thread.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, readFileSync, realpathSync } from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Output from "../Output.js"
import * as Sandbox from "../Sandbox.js"
import { checkOpen, hostReply } from "./hostCall.js"
import { killTree, resolveWall, terminateSpawned, type Wall } from "./isolation.js"
import { rewriteTopLevel } from "./javascriptRewrite.js"
import { onJsonLines } from "./jsonLines.js"
import { writeUtf8 } from "./utf8Stream.js"
import { Watchdog } from "./watchdog.js"

/** @internal */
export interface Options {
  readonly isolation?: Sandbox.IsolationMode | undefined
  readonly memoryMb?: number | undefined
  readonly execTimeout?: Duration.DurationInput | undefined
  readonly maxStackSizeBytes?: number | undefined
  readonly gracePeriod?: Duration.DurationInput | undefined
  readonly startTimeout?: Duration.DurationInput | undefined
  readonly nodePath?: string | undefined
  /** Tests only: another child script speaking the same protocol (a forger). */
  readonly childScript?: string | undefined
}

const DEFAULT_MEMORY_MB = 2048
const DEFAULT_EXEC_TIMEOUT = Duration.seconds(30)
/**
 * QuickJS measures its own (emscripten) stack, but its frames also use the
 * child's native stack, ~4x as much: beyond ~1,000 nested JS calls V8's stack
 * overflows first. 128 KiB stops plain recursion at ~680 frames.
 */
const DEFAULT_MAX_STACK = 128 * 1024
/** Longest error text taken from the child, in characters. */
const MAX_ERROR_CHARS = 100_000
/** Longest variable name or type name taken from the child. */
const MAX_NAME_CHARS = 1_000
const MAX_VARS = 100_000
/** How long a finalizer waits for a SIGKILLed child to be reaped (normally a few ms). */
const EXIT_WAIT = Duration.seconds(5)
const MIB = 1024 * 1024

const errorMessage = (u: unknown): string => (u instanceof Error ? `${u.name}: ${u.message}` : String(u))

// ---------------------------------------------------------------------------
// What the child loads, resolved once per process.

const runtimeDir = (): string => realpathSync(fileURLToPath(new URL("../../runtime/", import.meta.url)))

const packageDir = (require: NodeJS.Require, name: string): string => {
  let dir = path.dirname(realpathSync(require.resolve(name)))
  for (;;) {
    const manifest = path.join(dir, "package.json")
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as { name?: unknown }).name === name) {
      return dir
    }
    const parent = path.dirname(dir)
    if (parent === dir) throw new Error(`cannot find the package folder of ${name}`)
    dir = parent
  }
}

interface QuickjsFiles {
  readonly core: string
  readonly variant: string
  readonly wasm: string
  /** Folders the child reads: each package's `node_modules` folder (with its dependencies' links). */
  readonly folders: ReadonlyArray<string>
}

let quickjsFiles: QuickjsFiles | undefined
const resolveQuickjs = (): QuickjsFiles => {
  if (quickjsFiles !== undefined) return quickjsFiles
  const own = createRequire(import.meta.url)
  const main = createRequire(own.resolve("quickjs-emscripten"))
  const coreDir = packageDir(main, "quickjs-emscripten-core")
  const variantDir = packageDir(main, "@jitl/quickjs-wasmfile-release-asyncify")
  const ffiDir = packageDir(createRequire(path.join(coreDir, "package.json")), "@jitl/quickjs-ffi-types")
  const container = (dir: string, name: string) =>
    dir.endsWith(`${path.sep}${name.split("/").join(path.sep)}`) ? dir.slice(0, dir.length - name.length - 1) : dir
  const folders = [
    container(coreDir, "quickjs-emscripten-core"),
    container(variantDir, "@jitl/quickjs-wasmfile-release-asyncify"),
    container(ffiDir, "@jitl/quickjs-ffi-types")
  ]
  quickjsFiles = {
    core: path.join(coreDir, "dist", "index.mjs"),
    variant: path.join(variantDir, "dist", "index.mjs"),
    wasm: path.join(variantDir, "dist", "emscripten-module.wasm"),
    folders: [...new Set(folders)]
  }
  return quickjsFiles
}

// ---------------------------------------------------------------------------
// Messages from the child, decoded with caps.

interface Caps {
  readonly outputLimit: number
  readonly maxAnswerChars: number
  readonly maxPromptChars: number
  readonly maxLineBytes: number
}

const capped = (max: number) => Schema.String.pipe(Schema.maxLength(max))
const Count = Schema.Number.pipe(Schema.int(), Schema.nonNegative())

const schemas = (caps: Caps) => {
  return {
    Envelope: Schema.Struct({
      t: Schema.Literal("ready", "failed", "result", "call", "crashed"),
      id: Schema.optional(Schema.Number),
      message: Schema.optional(capped(1000))
    }),
    // The arguments are checked by the session (hostCall.ts): a known tool, caps on every string.
    Call: Schema.Struct({
      t: Schema.Literal("call"),
      id: Schema.Number,
      name: capped(100),
      args: Schema.Unknown
    }),
    Exec: Schema.Struct({
      t: Schema.Literal("result"),
      id: Schema.Number,
      stdout: Schema.String,
      stdoutOmitted: Count,
      stderr: Schema.String,
      stderrOmitted: Count,
      error: Schema.optional(Schema.String),
      final: Schema.optional(
        Schema.Struct({
          source: Schema.Literal("FINAL", "FINAL_VAR"),
          name: Schema.optional(capped(MAX_NAME_CHARS)),
          value: capped(caps.maxAnswerChars)
        })
      )
    }),
    GetVar: Schema.Struct({ t: Schema.Literal("result"), id: Schema.Number, value: Schema.NullOr(Schema.String) }),
    ListVars: Schema.Struct({
      t: Schema.Literal("result"),
      id: Schema.Number,
      vars: Schema.Array(Schema.Struct({ name: capped(MAX_NAME_CHARS), type: capped(MAX_NAME_CHARS) })).pipe(
        Schema.maxItems(MAX_VARS)
      )
    })
  }
}

/** A decode failure as one short line (a refinement's message may quote the whole offending value). */
const describeIssue = (error: ParseResult.ParseError): string => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const first = issues[0]
  if (first === undefined) return "malformed message"
  const at = first.path.length === 0 ? "" : ` at ${first.path.map(String).join(".")}`
  const text = first.message.length > 200 ? `${first.message.slice(0, 200)}...` : first.message
  return `${text}${at}`
}

/** Each Schema's decoding function, built once (not at every message). */
const decoderCache = new WeakMap<object, (value: unknown) => Either.Either<unknown, ParseResult.ParseError>>()

const decode = <A, I>(schema: Schema.Schema<A, I>, value: unknown): Either.Either<A, string> => {
  let run = decoderCache.get(schema)
  if (run === undefined) {
    run = Schema.decodeUnknownEither(schema, { onExcessProperty: "ignore" })
    decoderCache.set(schema, run)
  }
  return Either.mapLeft(run(value) as Either.Either<A, ParseResult.ParseError>, describeIssue)
}

// ---------------------------------------------------------------------------
// One child process.

/** A message that could not be read: the child is killed, the request gets this. */
interface Fault {
  readonly fault: string
}

type Answer = Record<string, unknown> | Fault | Sandbox.SandboxError

interface HostCall {
  readonly id: number
  readonly name: string
  readonly args: unknown
}

interface JsProcess {
  readonly isAlive: () => boolean
  readonly deathReason: () => Sandbox.SandboxError | undefined
  readonly nextId: () => number
  readonly request: (
    message: Record<string, unknown>
  ) => Effect.Effect<Record<string, unknown> | Fault, Sandbox.SandboxError>
  /** `request` without an Effect around it (the block path): `onAnswer` is called once; returns the withdrawal. */
  readonly submit: (message: Record<string, unknown>, onAnswer: (answer: Answer) => void) => () => void
  readonly reply: (ok: boolean, value: string, abort?: boolean) => void
  onCall: ((call: HostCall | { readonly id: number; readonly invalid: string }) => void) | undefined
  readonly kill: (reason?: Sandbox.SandboxError) => void
  readonly terminate: (reason?: Sandbox.SandboxError) => Effect.Effect<void>
  readonly ready: Effect.Effect<void, Sandbox.SandboxError>
}

const crashed = (detail: string) =>
  new Sandbox.SandboxError({
    reason: "Crashed",
    message: `The JavaScript interpreter crashed (${detail}); the next block runs in a fresh interpreter (restarted with P and context reloaded), but all variables from earlier blocks were lost.`,
    stateLost: true
  })

const outOfMemory = (detail: string) =>
  new Sandbox.SandboxError({
    reason: "MemoryExceeded",
    message: `The JavaScript interpreter process ran out of memory and was stopped (${detail}); the next block runs in a fresh interpreter (restarted with P and context reloaded), but all variables from earlier blocks were lost.`,
    stateLost: true
  })

interface Settings {
  readonly wall: Wall
  readonly nodePath: string
  readonly script: string
  readonly memoryMb: number
  readonly maxStack: number
  readonly startTimeout: Duration.Duration
}

const spawnChild = (
  settings: Settings,
  open: Sandbox.OpenOptions<any>,
  caps: Caps,
  contextBytes: ReadonlyArray<number>
) => {
  const files = resolveQuickjs()
  const runtime = runtimeDir()
  const scriptDir = path.dirname(settings.script)
  const readable = [...new Set([runtime, scriptDir, ...files.folders])]
  const total = contextBytes.reduce((a, b) => a + b, 0)
  // The child's own heap holds the context as strings (UTF-16 at worst) and the find results.
  const heapMb = 256 + 3 * Math.ceil(total / MIB)
  const memoryBytes = Math.round((settings.memoryMb + heapMb + 256) * MIB + total)
  const args = [
    "--disallow-code-generation-from-strings",
    "--experimental-permission",
    ...readable.map((dir) => `--allow-fs-read=${dir}${path.sep}*`),
    "--no-warnings",
    // QuickJS's frames use the native stack too: V8's optimized WebAssembly
    // code used ~30 KB of it per nested JS call (a native overflow past ~35
    // calls, before QuickJS's own check); baseline code only, compiled eagerly.
    "--liftoff",
    "--no-wasm-tier-up",
    "--no-wasm-dynamic-tiering",
    "--no-wasm-lazy-compilation",
    `--max-old-space-size=${heapMb}`,
    settings.script,
    JSON.stringify({
      quickjsCore: files.core,
      quickjsVariant: files.variant,
      quickjsWasm: files.wasm,
      memoryBytes: Math.round(settings.memoryMb * MIB),
      maxStackSizeBytes: settings.maxStack,
      heapMb,
      outputLimit: caps.outputLimit,
      maxAnswerChars: caps.maxAnswerChars,
      maxPromptChars: caps.maxPromptChars,
      tools: Sandbox.resolveHost(open).tools.map((tool) => ({
        name: tool.name,
        description: tool.description,
        parameters: tool.parameters.map((p) => ({ name: p.name, optional: p.optional, kind: p.kind }))
      })),
      textBytes: contextBytes[0] ?? 0,
      ...(open.context.documents !== undefined ? { docBytes: contextBytes.slice(1) } : {})
    })
  ]
  const wrapped = settings.wall.wrap({ command: settings.nodePath, args, readable, cwd: runtime, memoryBytes })
  return spawn(wrapped.command, [...wrapped.args], {
    env: {},
    cwd: runtime,
    stdio: ["pipe", "pipe", "pipe"],
    windowsHide: true
  })
}

const start = (settings: Settings, open: Sandbox.OpenOptions<any>, caps: Caps): JsProcess => {
  const texts = [open.context.text, ...(open.context.documents ?? [])]
  const contextBytes = texts.map((text) => Buffer.byteLength(text, "utf8"))
  const child: ChildProcess = spawnChild(settings, open, caps, contextBytes)
  const decoders = schemas(caps)
  const pending = new Map<number, (answer: Answer) => void>()
  let nextId = 1
  let ready = false
  let readyWaiter: ((error: Sandbox.SandboxError | undefined) => void) | undefined
  let death: Sandbox.SandboxError | undefined
  let crashMessage: string | undefined
  let failedMessage: string | undefined
  let stderrTail = ""
  let sawOutOfMemory = false
  let exited = false
  const exitWaiters = new Set<() => void>()

  child.stderr?.on("data", (chunk: Buffer) => {
    const text = chunk.toString("utf8")
    if (/OUT_OF_MEMORY|out of memory/i.test(text)) sawOutOfMemory = true
    stderrTail = (stderrTail + text).slice(-2000)
  })
  child.stdin?.on("error", () => {})
  child.stdout?.on("error", () => {})

  const die = (error: Sandbox.SandboxError) => {
    if (death === undefined) death = error
    for (const callback of pending.values()) callback(death)
    pending.clear()
    readyWaiter?.(death)
    readyWaiter = undefined
  }

  /** The child sent something unreadable: it no longer follows the protocol, so it is stopped. */
  const fault = (detail: string) => {
    const message = `the interpreter sent ${detail}`
    for (const callback of pending.values()) callback({ fault: message })
    pending.clear()
    handle.kill(crashed(message))
  }

  const onMessage = (raw: Record<string, unknown>) => {
    const envelope = decode(decoders.Envelope, raw)
    if (Either.isLeft(envelope)) return fault(`a malformed message (${envelope.left})`)
    const message = envelope.right
    switch (message.t) {
      case "ready": {
        ready = true
        readyWaiter?.(undefined)
        readyWaiter = undefined
        return
      }
      case "failed": {
        failedMessage = message.message ?? "no reason given"
        return
      }
      case "crashed": {
        crashMessage = message.message ?? "no reason given"
        return
      }
      case "result": {
        const id = message.id
        const callback = id === undefined ? undefined : pending.get(id)
        if (callback === undefined) {
          // The answer to a request the caller gave up on (an interrupted getVar): dropped.
          if (id !== undefined && Number.isInteger(id) && id > 0 && id < nextId) return
          return fault("a result for no request")
        }
        pending.delete(id as number)
        callback(raw)
        return
      }
      case "call": {
        const call = decode(decoders.Call, raw)
        if (handle.onCall === undefined) {
          handle.reply(false, "no block is running")
          return
        }
        if (Either.isLeft(call)) {
          handle.onCall({ id: typeof raw.id === "number" ? raw.id : -1, invalid: call.left })
          return
        }
        handle.onCall(call.right)
        return
      }
    }
  }
  if (child.stdout) {
    onJsonLines(child.stdout, onMessage, {
      maxLineBytes: caps.maxLineBytes,
      onOversize: (bytes) => fault(`a message of ${bytes} bytes, over the limit of ${caps.maxLineBytes}`),
      onMalformed: () => fault("a line that is not a JSON object")
    })
  }
  child.on("error", (error) =>
    die(
      ready
        ? crashed(`process error: ${error.message}`)
        : new Sandbox.SandboxError({
            reason: "StartFailed",
            message: `Could not start the JavaScript sandbox process: ${error.message}`
          })
    )
  )
  // Why it died is decided once its output is read to the end ("close").
  let exitStatus: string | undefined
  const classify = () => {
    if (exitStatus === undefined || death !== undefined) return
    const detail = crashMessage ?? failedMessage ?? `${exitStatus}${stderrTail ? `: ${stderrTail.trim()}` : ""}`
    const oom = sawOutOfMemory || /OUT_OF_MEMORY|out of memory/i.test(detail)
    if (!ready) {
      die(
        new Sandbox.SandboxError({
          reason: oom ? "MemoryExceeded" : "StartFailed",
          message: `Could not start the JavaScript REPL: ${detail.slice(-1000)}`
        })
      )
    } else {
      die(oom ? outOfMemory(detail.slice(-1000)) : crashed(detail.slice(-1000)))
    }
  }
  child.on("exit", (code, signal) => {
    exited = true
    for (const waiter of exitWaiters) waiter()
    exitWaiters.clear()
    exitStatus = `the process exited: code ${code}, signal ${signal}`
    setTimeout(classify, 250).unref()
  })
  child.on("close", () => classify())

  const write = (message: Record<string, unknown>) => {
    if (death === undefined && child.stdin?.writable === true) child.stdin.write(`${JSON.stringify(message)}\n`)
  }

  /** The processes under the spawned one, SIGKILLed with it (see `killTree`). */
  const killedBelow: Array<number> = []
  const handle: JsProcess = {
    onCall: undefined,
    isAlive: () => death === undefined,
    deathReason: () => death,
    nextId: () => nextId++,
    submit: (message, onAnswer) => {
      if (death !== undefined) {
        onAnswer(death)
        return () => {}
      }
      const id = message.id as number
      pending.set(id, onAnswer)
      write(message)
      return () => {
        pending.delete(id)
      }
    },
    request: (message) =>
      Effect.async<Record<string, unknown> | Fault, Sandbox.SandboxError>((resume) => {
        const withdraw = handle.submit(message, (answer) =>
          resume(answer instanceof Sandbox.SandboxError ? Effect.fail(answer) : Effect.succeed(answer))
        )
        return Effect.sync(withdraw)
      }),
    reply: (ok, value, abort) => write({ t: "reply", ok, value, ...(abort === true ? { abort } : {}) }),
    kill: (reason) => {
      if (death === undefined && reason !== undefined) die(reason)
      if (child.exitCode === null && child.signalCode === null) killedBelow.push(...killTree(child))
    },
    terminate: (reason) =>
      terminateSpawned({
        kill: () => handle.kill(reason),
        exited: () => exited,
        onExit: (waiter) => {
          exitWaiters.add(waiter)
          return () => exitWaiters.delete(waiter)
        },
        below: killedBelow,
        waitMs: Duration.toMillis(EXIT_WAIT)
      }),
    ready: Effect.async<void, Sandbox.SandboxError>((resume) => {
      if (death !== undefined) return resume(Effect.fail(death))
      if (ready) return resume(Effect.void)
      readyWaiter = (error) => resume(error === undefined ? Effect.void : Effect.fail(error))
      return Effect.sync(() => {
        readyWaiter = undefined
      })
    })
  }
  // The context's bytes first on stdin (the child knows their lengths), then lines.
  if (child.stdin) Effect.runFork(writeUtf8(child.stdin, texts, () => death !== undefined))
  return handle
}

/** Spawn a child in the current scope (killed when it closes) and wait until it has loaded the context. */
const spawnReady = (
  settings: Settings,
  open: Sandbox.OpenOptions<any>,
  caps: Caps
): Effect.Effect<JsProcess, Sandbox.SandboxError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({
      try: () => start(settings, open, caps),
      catch: (cause) =>
        new Sandbox.SandboxError({
          reason: "StartFailed",
          message: `Could not start the JavaScript sandbox process: ${errorMessage(cause)}`
        })
    }),
    (proc) => proc.terminate()
  ).pipe(
    Effect.tap((proc) =>
      proc.ready.pipe(
        Effect.timeoutFail({
          duration: settings.startTimeout,
          onTimeout: () =>
            new Sandbox.SandboxError({
              reason: "StartFailed",
              message: `The JavaScript sandbox did not start within ${Duration.format(settings.startTimeout)}.`
            })
        }),
        // One that did not start is killed now, not when the session closes.
        Effect.tapError(() => proc.terminate())
      )
    )
  )

// ---------------------------------------------------------------------------
// A session.

const cut = (text: string, omitted: number, limit: number) => {
  const kept = text.length > limit ? text.slice(0, limit) : text
  const more = omitted + (text.length - kept.length)
  return more > 0 ? { text: kept + Output.truncationMarker(more), truncated: true } : { text: kept, truncated: false }
}

const faultText = (detail: string) =>
  `SandboxError: ${detail}; the interpreter was stopped and replaced. All REPL variables were lost; P, context and the helpers are back.`

const makeSession = <E>(
  settings: Settings,
  open: Sandbox.OpenOptions<E>,
  execTimeout: Duration.Duration,
  graceMs: number
): Effect.Effect<Sandbox.Repl<E>, Sandbox.SandboxError, Scope.Scope> =>
  Effect.gen(function* () {
    const host = Sandbox.resolveHost(open)
    const toolsByName = new Map(host.tools.map((tool) => [tool.name, tool]))
    const caps: Caps = {
      outputLimit: Math.max(0, Math.floor(open.outputLimit ?? Sandbox.DEFAULT_OUTPUT_LIMIT)),
      maxAnswerChars: Math.max(0, Math.floor(open.maxAnswerChars ?? Sandbox.DEFAULT_MAX_ANSWER_CHARS)),
      maxPromptChars: Math.max(0, Math.floor(open.maxPromptChars ?? Sandbox.DEFAULT_MAX_PROMPT_CHARS)),
      maxLineBytes: Math.max(1, Math.floor(open.maxLineBytes ?? Sandbox.DEFAULT_MAX_LINE_BYTES))
    }
    const decoders = schemas(caps)
    const timeoutMs = Duration.toMillis(execTimeout)
    // Formatted once: the messages below are built for every block.
    const limitText = Duration.format(execTimeout)
    const lock = yield* Effect.makeSemaphore(1)
    const runHost = yield* FiberSet.makeRuntime<never>()
    const scope = yield* Effect.scope
    let closed = false
    let current = yield* spawnReady(settings, open, caps)
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
      })
    )
    // The dead process whose death the caller has been told of (see pythonRepl.ts).
    let reported: JsProcess | undefined
    const noteDeath =
      (proc: JsProcess) =>
      <A, E, R>(request: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
        Effect.tapError(request, () =>
          Effect.sync(() => {
            if (!proc.isAlive()) reported = proc
          })
        )
    const alive: Effect.Effect<JsProcess, Sandbox.SandboxError> = Effect.suspend(() => {
      if (closed) {
        return Effect.fail(new Sandbox.SandboxError({ reason: "Closed", message: "the JavaScript REPL is closed" }))
      }
      if (current.isAlive()) return Effect.succeed(current)
      if (reported !== current) {
        reported = current
        const reason = current.deathReason()
        if (reason !== undefined) return Effect.fail(reason)
      }
      return spawnReady(settings, open, caps).pipe(
        Effect.tap((proc) =>
          Effect.sync(() => {
            current = proc
          })
        ),
        Scope.extend(scope)
      )
    })

    const deadline = (proc: JsProcess, message: string) =>
      new Watchdog({
        limitMs: timeoutMs,
        graceMs,
        kill: () => proc.kill(new Sandbox.SandboxError({ reason: "Timeout", message, stateLost: true }))
      })

    const runExec = (proc: JsProcess, code: string) =>
      Effect.async<Record<string, unknown> | Fault, Sandbox.SandboxError | E>((resume) => {
        const id = proc.nextId()
        let finished = false
        /** A host call failed with an error that aborts the block: the block's own result is dropped. */
        let aborted: { readonly error: E } | undefined
        let abortKill: ReturnType<typeof setTimeout> | undefined
        const watchdog = deadline(
          proc,
          `The code block ran longer than ${limitText} and did not stop when interrupted, so the interpreter was killed. All REPL variables were lost; the next block starts a fresh interpreter with P and context reloaded.`
        )
        // The interpreter waits on one host call at a time; more at once is not the child's protocol.
        let inFlight = false
        proc.onCall = (call) => {
          if (call.id !== id) return proc.reply(false, "stale host call")
          if ("invalid" in call) return proc.reply(false, `host call refused: ${call.invalid}`)
          if (inFlight) return proc.reply(false, "host call refused: another host call is still running")
          if (aborted !== undefined) return proc.reply(false, "the block was aborted by the host")
          if (watchdog.timedOut) return proc.reply(false, "the block exceeded its time limit")
          inFlight = true
          watchdog.pause()
          runHost(
            Effect.flatMap(hostReply(host.call, toolsByName, call.name, call.args, caps.maxPromptChars), (reply) =>
              Effect.sync(() => {
                switch (reply._tag) {
                  case "Ok":
                    proc.reply(true, reply.json)
                    break
                  case "Error":
                    proc.reply(false, reply.message)
                    break
                  case "Abort":
                    // The child interrupts the block (uncatchably) and refuses its host calls; a block that
                    // still does not return within the grace period is killed.
                    aborted = { error: reply.error }
                    proc.reply(false, reply.message, true)
                    abortKill = setTimeout(() => {
                      if (!finished) proc.kill(crashed("the aborted block did not stop"))
                    }, graceMs)
                    break
                }
                inFlight = false
                watchdog.resume()
              })
            )
          )
        }
        const finish = () => {
          finished = true
          watchdog.stop()
          if (abortKill !== undefined) clearTimeout(abortKill)
          proc.onCall = undefined
        }
        const rewritten = rewriteTopLevel(code)
        // (The child's answer straight to this block's fiber: no fiber of its own per request.)
        const withdraw = proc.submit(
          { t: "exec", id, code, ...(rewritten !== code ? { rewritten } : {}), timeoutMs },
          (answer) => {
            finish()
            if (aborted === undefined) {
              return resume(answer instanceof Sandbox.SandboxError ? Effect.fail(answer) : Effect.succeed(answer))
            }
            // The caller learns of the abort, not of what the block did after it.
            if (!proc.isAlive()) reported = proc
            resume(Effect.fail(aborted.error))
          }
        )
        watchdog.start()
        // Interrupted mid-block (the caller gave up): the interpreter's state is unknown, replace it.
        return Effect.suspend(() => {
          if (finished) return Effect.void
          finish()
          withdraw()
          reported = proc
          return proc.terminate(
            new Sandbox.SandboxError({
              reason: "Crashed",
              message:
                "The previous code block was interrupted by the host, so the interpreter was replaced; REPL variables were lost.",
              stateLost: true
            })
          )
        })
      })

    const toResult = (
      raw: Record<string, unknown> | Fault,
      proc: JsProcess,
      durationMs: number
    ): Sandbox.ExecResult => {
      const failed = (detail: string) =>
        new Sandbox.ExecResult({ stdout: "", stderr: "", error: detail, truncated: false, durationMs }, true)
      if ("fault" in raw) {
        reported = proc
        return failed(faultText(String(raw.fault)))
      }
      const decoded = decode(decoders.Exec, raw)
      if (Either.isLeft(decoded)) {
        return failed(`SandboxError: the interpreter's result was refused (${decoded.left}).`)
      }
      const r = decoded.right
      const stdout = cut(r.stdout, r.stdoutOmitted, caps.outputLimit)
      const stderr = cut(r.stderr, r.stderrOmitted, caps.outputLimit)
      const error =
        r.error === undefined
          ? undefined
          : r.error.length > MAX_ERROR_CHARS
            ? r.error.slice(0, MAX_ERROR_CHARS) + Output.truncationMarker(r.error.length - MAX_ERROR_CHARS)
            : r.error
      // Built from the decoded result only: not checked a second time.
      return new Sandbox.ExecResult(
        {
          stdout: stdout.text,
          stderr: stderr.text,
          ...(error !== undefined ? { error } : {}),
          truncated: stdout.truncated || stderr.truncated,
          durationMs,
          ...(r.final !== undefined
            ? {
                final: new Sandbox.FinalSignal(
                  {
                    source: r.final.source,
                    value: r.final.value,
                    ...(r.final.name !== undefined ? { name: r.final.name } : {})
                  },
                  true
                )
              }
            : {})
        },
        true
      )
    }

    const exec = (code: string): Effect.Effect<Sandbox.ExecResult, Sandbox.SandboxError | E> =>
      lock.withPermits(1)(
        Effect.gen(function* () {
          const proc = yield* alive
          const startedAt = performance.now()
          const raw = yield* runExec(proc, code).pipe(noteDeath(proc))
          return toResult(raw, proc, Math.max(performance.now() - startedAt, Number.MIN_VALUE))
        })
      )

    // getVar/listVars run guest code too (a getter): the same limit as a block.
    const query = <A, I>(message: Record<string, unknown>, schema: Schema.Schema<A, I>) =>
      lock.withPermits(1)(
        Effect.gen(function* () {
          const proc = yield* alive
          const id = proc.nextId()
          const watchdog = deadline(
            proc,
            `Reading REPL variables ran longer than ${limitText} and did not stop when interrupted, so the interpreter was killed. All REPL variables were lost.`
          )
          const raw = yield* Effect.acquireUseRelease(
            Effect.sync(() => watchdog.start()),
            () => proc.request({ ...message, id, timeoutMs }),
            () => Effect.sync(() => watchdog.stop())
          ).pipe(noteDeath(proc))
          if ("fault" in raw) {
            reported = proc
            return yield* new Sandbox.SandboxError({ reason: "Protocol", message: faultText(String(raw.fault)) })
          }
          const decoded = decode(schema, raw)
          if (Either.isLeft(decoded)) {
            return yield* new Sandbox.SandboxError({
              reason: "Protocol",
              message: `the interpreter's answer was refused (${decoded.left})`
            })
          }
          return decoded.right
        })
      )

    const repl: Sandbox.Repl<E> = {
      language: "javascript",
      exec,
      getVar: (name) =>
        Effect.map(query({ t: "getVar", name }, decoders.GetVar), (r) =>
          r.value === null ? Option.none() : Option.some(r.value)
        ),
      listVars: Effect.map(query({ t: "listVars" }, decoders.ListVars), (r) =>
        r.vars.map((v): Sandbox.VarInfo => ({ name: v.name, type: v.type }))
      )
    }
    return repl
  })

/** @internal */
export const make = (options: Options = {}): Effect.Effect<Sandbox.Sandbox.Service, Sandbox.SandboxError> =>
  Effect.map(resolveWall(options.isolation ?? "auto"), (wall) => {
    const settings: Settings = {
      wall,
      nodePath: options.nodePath ?? process.execPath,
      script: options.childScript ?? path.join(runtimeDir(), "javascript-child.mjs"),
      memoryMb: options.memoryMb ?? DEFAULT_MEMORY_MB,
      maxStack: options.maxStackSizeBytes ?? DEFAULT_MAX_STACK,
      startTimeout: Duration.decode(options.startTimeout ?? Duration.seconds(30))
    }
    const graceMs = Duration.toMillis(Duration.decode(options.gracePeriod ?? Duration.seconds(2)))
    return {
      language: "javascript",
      isolation: wall.isolation,
      open: <E>(openOptions: Sandbox.OpenOptions<E>) =>
        Effect.zipRight(
          checkOpen(openOptions),
          makeSession(
            settings,
            openOptions,
            Duration.decode(openOptions.execTimeout ?? options.execTimeout ?? DEFAULT_EXEC_TIMEOUT),
            graceMs
          )
        )
    }
  })
