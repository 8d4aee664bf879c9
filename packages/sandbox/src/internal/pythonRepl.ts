/**
 * One Python REPL session over a sandbox child process: context loading,
 * exec with the pausable time limit, host calls, and replacement of a dead or
 * hard-killed interpreter.
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Output from "../Output.js"
import {
  DEFAULT_OUTPUT_LIMIT,
  ExecResult,
  FinalSignal,
  type HostCallError,
  type HostFunctions,
  type OpenOptions,
  type Repl,
  type ReplContext,
  SandboxError,
  type VarInfo
} from "../Sandbox.js"
import type { HostCall, PyProcess } from "./pythonProcess.js"
import { Watchdog } from "./watchdog.js"

/** @internal */
export interface SessionOptions {
  readonly execTimeout: Duration.Duration
  readonly gracePeriod: Duration.Duration
}

const DEFAULT_EXEC_TIMEOUT = Duration.seconds(30)

/** The context request: byte counts only; the bytes follow on stdin (streamed, never copied whole). */
const contextRequest = (context: ReplContext) => {
  const textBytes = Buffer.byteLength(context.text, "utf8")
  const docBytes = context.documents?.map((doc) => Buffer.byteLength(doc, "utf8"))
  const total = textBytes + (docBytes?.reduce((a, b) => a + b, 0) ?? 0)
  return {
    input: [context.text, ...(context.documents ?? [])],
    message: { t: "context", bytes: total, textBytes, docBytes }
  }
}

/** Load the context into a fresh interpreter: once, as UTF-8 bytes. */
export const loadContext = (proc: PyProcess, context: ReplContext): Effect.Effect<void, SandboxError> =>
  Effect.suspend(() => {
    const { input, message } = contextRequest(context)
    return proc.request(proc.nextId(), message, input)
  }).pipe(
    Effect.flatMap((result) =>
      result.ok === true
        ? Effect.void
        : Effect.fail(
            new SandboxError({ reason: "Protocol", message: `Loading the context failed: ${String(result.error)}` })
          )
    )
  )

const hostReply = (
  kind: string,
  payload: string,
  host: HostFunctions
): Effect.Effect<string, HostCallError | string> => {
  const batch = (run: (prompts: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<string>, HostCallError>) =>
    Effect.suspend(() => {
      const prompts: unknown = JSON.parse(payload)
      if (!Array.isArray(prompts) || !prompts.every((p) => typeof p === "string")) {
        return Effect.fail("a batch must be a list of strings")
      }
      return run(prompts).pipe(
        Effect.flatMap((replies) =>
          replies.length === prompts.length
            ? Effect.succeed(JSON.stringify(replies))
            : Effect.fail(`the host returned ${replies.length} replies for ${prompts.length} prompts`)
        )
      )
    })
  switch (kind) {
    case "llm":
      return host.llmQuery(payload)
    case "rlm":
      return host.rlmQuery(payload)
    case "llm_batched":
      return batch(host.llmQueryBatched)
    case "rlm_batched":
      return batch(host.rlmQueryBatched)
    default:
      return Effect.fail(`unknown host call ${kind}`)
  }
}

const view = (text: string, total: number, limit: number) =>
  total > limit ? { text: text + Output.truncationMarker(total - limit), truncated: true } : { text, truncated: false }

/**
 * Build a session over `initial` (started, context not loaded). `ready`, if
 * given, waits until `initial` has loaded Pyodide: the context is sent before
 * that, so the child loads it as soon as it can. `respawn` starts a
 * replacement interpreter in the session's scope.
 *
 * @internal
 */
export const makeSession = (
  initial: PyProcess,
  respawn: Effect.Effect<PyProcess, SandboxError, Scope.Scope>,
  open: OpenOptions,
  options: SessionOptions,
  ready: Effect.Effect<void, SandboxError> = Effect.void
): Effect.Effect<Repl, SandboxError, Scope.Scope> =>
  Effect.gen(function* () {
    const limit = Math.max(0, Math.floor(open.outputLimit ?? DEFAULT_OUTPUT_LIMIT))
    const execTimeout = open.execTimeout === undefined ? options.execTimeout : Duration.decode(open.execTimeout)
    const timeoutMs = Duration.toMillis(execTimeout)
    const graceMs = Duration.toMillis(options.gracePeriod)
    const lock = yield* Effect.makeSemaphore(1)
    const runHost = yield* FiberSet.makeRuntime<never>()
    const scope = yield* Effect.scope
    let closed = false
    let current = initial
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closed = true
        return current.terminate()
      })
    )

    // The dead process whose death the caller has been told of: by the failure
    // of the request it was running, or by `alive` below.
    let reported: PyProcess | undefined
    /** After a failed request: if its process died, the caller now knows. */
    const noteDeath =
      (proc: PyProcess) =>
      <A, E, R>(request: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
        Effect.tapError(request, () =>
          Effect.sync(() => {
            if (!proc.isAlive()) reported = proc
          })
        )

    // A dead process is replaced lazily, with the context reloaded. One that
    // died between requests (killed from outside, say) is first reported, once,
    // as the failure of the next request: its variables are gone, and a block
    // run silently in a fresh interpreter would only meet NameErrors.
    const alive: Effect.Effect<PyProcess, SandboxError> = Effect.suspend(() => {
      if (closed) {
        return Effect.fail(
          new SandboxError({ reason: "Closed", message: "The REPL session is closed; open a new one." })
        )
      }
      if (current.isAlive()) return Effect.succeed(current)
      if (reported !== current) {
        reported = current
        const reason = current.deathReason()
        if (reason !== undefined) return Effect.fail(reason)
      }
      return respawn.pipe(
        Effect.tap((proc) => loadContext(proc, open.context)),
        Effect.tap((proc) =>
          Effect.sync(() => {
            current = proc
          })
        ),
        Scope.extend(scope)
      )
    })

    const loading = yield* Effect.fork(loadContext(initial, open.context))
    yield* ready.pipe(Effect.onError(() => Fiber.interrupt(loading)))
    yield* Fiber.join(loading).pipe(
      Effect.catchAll((error) => {
        if (initial.isAlive()) return Effect.fail(error)
        // Died while starting: nothing of the session was lost yet, start another.
        reported = initial
        return alive
      })
    )

    /** The host's side of a request's time limit: past it and the grace period, kill with `message`. */
    const deadline = (proc: PyProcess, message: string) =>
      new Watchdog({
        limitMs: timeoutMs,
        graceMs,
        kill: () => proc.kill(new SandboxError({ reason: "Timeout", message, stateLost: true }))
      })

    const runExec = (proc: PyProcess, code: string) =>
      Effect.async<{ readonly raw: Record<string, unknown>; readonly timedOut: boolean }, SandboxError>((resume) => {
        const id = proc.nextId()
        let finished = false
        const watchdog = deadline(
          proc,
          `The code block ran longer than ${Duration.format(execTimeout)} and did not stop when interrupted, so the interpreter was killed. All REPL variables were lost; the next block starts a fresh interpreter with P and context reloaded.`
        )
        proc.onCall = (call: HostCall) => {
          if (call.id !== id) {
            proc.control({ t: "reply", ok: false, value: "stale host call" })
            return
          }
          if (watchdog.timedOut) {
            // Interrupted already: do not start host work the block will never wait for.
            proc.control({ t: "reply", ok: false, value: "the block exceeded its time limit" })
            return
          }
          watchdog.pause()
          runHost(
            hostReply(call.kind, call.payload, open.host).pipe(
              Effect.exit,
              Effect.flatMap((exit) =>
                Effect.sync(() => {
                  if (Exit.isSuccess(exit)) {
                    proc.control({ t: "reply", ok: true, value: exit.value })
                  } else {
                    const failure = Option.getOrUndefined(Cause.failureOption(exit.cause))
                    const message =
                      typeof failure === "string"
                        ? failure
                        : failure !== undefined
                          ? failure.message
                          : Exit.isInterrupted(exit)
                            ? "the host call was interrupted"
                            : "the host function failed unexpectedly"
                    proc.control({ t: "reply", ok: false, value: message })
                  }
                  watchdog.resume()
                })
              )
            )
          )
        }
        const finish = () => {
          finished = true
          watchdog.stop()
          proc.onCall = undefined
        }
        Effect.runCallback(proc.request(id, { t: "exec", code, limit, timeoutMs }), {
          onExit: (exit) => {
            finish()
            resume(
              Exit.isSuccess(exit)
                ? Effect.succeed({ raw: exit.value, timedOut: exit.value.timedOut === true })
                : Effect.failCause(exit.cause)
            )
          }
        })
        watchdog.start()
        // Interrupted mid-block (the caller gave up): the interpreter's state is unknown, replace it.
        return Effect.suspend(() => {
          if (finished) return Effect.void
          finish()
          // The caller gave up on this block, and knows it: the next one just starts afresh.
          reported = proc
          return proc.terminate(
            new SandboxError({
              reason: "Crashed",
              message:
                "The previous code block was interrupted by the host, so the interpreter was replaced; REPL variables were lost.",
              stateLost: true
            })
          )
        })
      })

    const exec = (code: string): Effect.Effect<ExecResult, SandboxError> =>
      lock.withPermits(1)(
        Effect.gen(function* () {
          const proc = yield* alive
          const startedAt = Date.now()
          const { raw, timedOut } = yield* runExec(proc, code).pipe(noteDeath(proc))
          const durationMs = Date.now() - startedAt
          const stdout = view(String(raw.stdout ?? ""), Number(raw.stdoutTotal ?? 0), limit)
          const stderr = view(String(raw.stderr ?? ""), Number(raw.stderrTotal ?? 0), limit)
          let error = typeof raw.error === "string" ? raw.error : undefined
          if (timedOut && error !== undefined) {
            error = `${error.trimEnd()}\nTimeoutError: the block ran longer than ${Duration.format(execTimeout)} (time waiting on llm_query is not counted) and was interrupted. REPL variables are kept.\n`
          }
          const final = raw.final as { source: "FINAL" | "FINAL_VAR"; name?: string; value: string } | undefined
          return new ExecResult({
            stdout: stdout.text,
            stderr: stderr.text,
            ...(error !== undefined ? { error } : {}),
            truncated: stdout.truncated || stderr.truncated,
            durationMs,
            ...(final !== undefined
              ? {
                  final: new FinalSignal({
                    source: final.source,
                    value: String(final.value),
                    ...(typeof final.name === "string" ? { name: final.name } : {})
                  })
                }
              : {})
          })
        })
      )

    // getVar/listVars run Python too (a variable's own __str__, say): the same
    // time limit as a block. Interrupted, they answer; ignoring the interrupt,
    // the interpreter is killed like a block's.
    const guarded = (proc: PyProcess, message: Record<string, unknown>) =>
      Effect.suspend(() => {
        const id = proc.nextId()
        const watchdog = deadline(
          proc,
          `Reading REPL variables ran longer than ${Duration.format(execTimeout)} (a variable's own code did not return) and did not stop when interrupted, so the interpreter was killed. All REPL variables were lost.`
        )
        return Effect.acquireUseRelease(
          Effect.sync(() => watchdog.start()),
          () => proc.request(id, { ...message, timeoutMs }),
          () => Effect.sync(() => watchdog.stop())
        )
      })

    const query = (message: Record<string, unknown>) =>
      lock.withPermits(1)(
        Effect.gen(function* () {
          const proc = yield* alive
          const result = yield* guarded(proc, message).pipe(noteDeath(proc))
          if (typeof result.error === "string") {
            return yield* Effect.fail(new SandboxError({ reason: "Protocol", message: result.error }))
          }
          return result.value
        })
      )

    const repl: Repl = {
      language: "python",
      exec,
      getVar: (name) =>
        query({ t: "getVar", name }).pipe(
          Effect.map((value) => (typeof value === "string" ? Option.some(value) : Option.none()))
        ),
      listVars: query({ t: "listVars" }).pipe(
        Effect.map((value) =>
          Array.isArray(value)
            ? value.map((v): VarInfo => ({ name: String(v?.name), type: String(v?.type) }))
            : ([] as Array<VarInfo>)
        )
      )
    }
    return repl
  })

/** @internal */
export const defaultExecTimeout = DEFAULT_EXEC_TIMEOUT
