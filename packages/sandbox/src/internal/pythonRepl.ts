/**
 * One Python REPL session over a sandbox child process: context loading,
 * exec with the pausable time limit, host calls, and replacement of a dead or
 * hard-killed interpreter.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Output from "../Output.js"
import {
  DEFAULT_MAX_ANSWER_CHARS,
  DEFAULT_MAX_LINE_BYTES,
  DEFAULT_MAX_PROMPT_CHARS,
  DEFAULT_OUTPUT_LIMIT,
  ExecResult,
  FinalSignal,
  type OpenOptions,
  type Repl,
  type ReplContext,
  resolveHost,
  SandboxError,
  type ToolSpec,
  type VarInfo
} from "../Sandbox.js"
import { hostReply } from "./hostCall.js"
import { ContextBody, decode, ExecBody, FinalWire, GetVarBody, ListVarsBody } from "./pythonMessages.js"
import type { HostCall, PyProcess, WorkerResult } from "./pythonProcess.js"
import { Watchdog } from "./watchdog.js"

/** @internal */
export interface SessionOptions {
  readonly execTimeout: Duration.Duration
  readonly gracePeriod: Duration.Duration
}

const DEFAULT_EXEC_TIMEOUT = Duration.seconds(30)

/** The context request: byte counts only; the bytes follow on stdin (streamed, never copied whole). */
const contextRequest = (context: ReplContext, tools: ReadonlyArray<ToolSpec>) => {
  const textBytes = Buffer.byteLength(context.text, "utf8")
  const docBytes = context.documents?.map((doc) => Buffer.byteLength(doc, "utf8"))
  const total = textBytes + (docBytes?.reduce((a, b) => a + b, 0) ?? 0)
  return {
    input: [context.text, ...(context.documents ?? [])],
    message: { t: "context", bytes: total, textBytes, docBytes, tools: tools.map(toolWire) }
  }
}

/** A tool spec as the child installs it (only these fields cross). */
const toolWire = (tool: ToolSpec) => ({
  name: tool.name,
  description: tool.description,
  parameters: tool.parameters.map((p) => ({ name: p.name, optional: p.optional, kind: p.kind }))
})

/** Load the session's tools and the context into a fresh interpreter: once, the context as UTF-8 bytes. */
export const loadContext = (
  proc: PyProcess,
  context: ReplContext,
  tools: ReadonlyArray<ToolSpec>
): Effect.Effect<void, SandboxError> =>
  Effect.suspend(() => {
    const { input, message } = contextRequest(context, tools)
    return proc.request(proc.nextId(), message, input)
  }).pipe(
    Effect.flatMap((result) => {
      const body = decodeContext(result)
      if (Either.isRight(body) && body.right.ok) return Effect.void
      const why = Either.isLeft(body)
        ? `the interpreter sent a malformed result: ${body.left}`
        : (body.right.error ?? "unknown error").slice(0, 2000)
      return Effect.fail(new SandboxError({ reason: "Protocol", message: `Loading the context failed: ${why}` }))
    })
  )

const decodeContext = decode(ContextBody)
const decodeExec = decode(ExecBody)
const decodeFinal = decode(FinalWire)
const decodeGetVar = decode(GetVarBody)
const decodeListVars = decode(ListVarsBody)

/** The caps of one session on what it takes from the guest. */
interface Caps {
  readonly outputLimit: number
  readonly maxAnswerChars: number
  readonly maxPromptChars: number
  readonly maxLineBytes: number
}

const cap = (value: number | undefined, fallback: number, min = 0) =>
  Math.max(min, Math.floor(value === undefined || Number.isNaN(value) ? fallback : value))

/**
 * How far `text` is over `max` characters as Python counts them (code
 * points): its count when over, else undefined.
 */
const overCap = (text: string, max: number): number | undefined => {
  if (text.length <= max) return undefined
  const n = codePoints(text)
  return n > max ? n : undefined
}

/** The number of code points in `text` (Python counts output in code points). */
const codePoints = (text: string): number => {
  let n = text.length
  for (let i = 0; i < text.length - 1; i++) {
    const c = text.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = text.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--
        i++
      }
    }
  }
  return n
}

/** The first `limit` code points of `text`. */
const headCodePoints = (text: string, limit: number): string => {
  let units = 0
  for (let kept = 0; kept < limit && units < text.length; kept++) {
    const c = text.charCodeAt(units)
    const d = text.charCodeAt(units + 1)
    units += c >= 0xd800 && c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff ? 2 : 1
  }
  return text.slice(0, units)
}

/**
 * What the model sees of a stream: cut here, at `limit` characters, whatever
 * the child sent or claims. `claimed` (the child's count of what was written)
 * only feeds the marker's count, and only when above what it sent.
 */
const view = (
  text: string,
  claimed: number | undefined,
  limit: number
): { readonly text: string; readonly truncated: boolean } => {
  const sent = text.length <= limit ? text.length : codePoints(text)
  const total = Math.max(sent, claimed ?? 0)
  if (total <= limit && sent === total) return { text, truncated: false }
  const shown = sent > limit ? headCodePoints(text, limit) : text
  const kept = Math.min(sent, limit)
  return { text: shown + Output.truncationMarker(total - kept), truncated: true }
}

/**
 * Build a session over `initial` (started, context not loaded). `ready`, if
 * given, waits until `initial` has loaded Pyodide: the context is sent before
 * that, so the child loads it as soon as it can. `respawn` starts a
 * replacement interpreter in the session's scope.
 *
 * @internal
 */
export const makeSession = <E>(
  initial: PyProcess,
  respawn: Effect.Effect<PyProcess, SandboxError, Scope.Scope>,
  open: OpenOptions<E>,
  options: SessionOptions,
  ready: Effect.Effect<void, SandboxError> = Effect.void
): Effect.Effect<Repl<E>, SandboxError, Scope.Scope> =>
  Effect.gen(function* () {
    const host = resolveHost(open)
    const toolsByName = new Map(host.tools.map((tool) => [tool.name, tool]))
    const caps: Caps = {
      outputLimit: cap(open.outputLimit, DEFAULT_OUTPUT_LIMIT),
      maxAnswerChars: cap(open.maxAnswerChars, DEFAULT_MAX_ANSWER_CHARS),
      maxPromptChars: cap(open.maxPromptChars, DEFAULT_MAX_PROMPT_CHARS),
      maxLineBytes: cap(open.maxLineBytes, DEFAULT_MAX_LINE_BYTES, 1)
    }
    const limit = caps.outputLimit
    initial.setMaxLineBytes(caps.maxLineBytes)
    const execTimeout = open.execTimeout === undefined ? options.execTimeout : Duration.decode(open.execTimeout)
    const timeoutMs = Duration.toMillis(execTimeout)
    // Formatted once: the messages below are built for every block.
    const limitText = Duration.format(execTimeout)
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
        Effect.tap((proc) => Effect.sync(() => proc.setMaxLineBytes(caps.maxLineBytes))),
        Effect.tap((proc) => loadContext(proc, open.context, host.tools)),
        Effect.tap((proc) =>
          Effect.sync(() => {
            current = proc
          })
        ),
        Scope.extend(scope)
      )
    })

    const loading = yield* Effect.fork(loadContext(initial, open.context, host.tools))
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
      Effect.async<WorkerResult, SandboxError | E>((resume) => {
        const id = proc.nextId()
        let finished = false
        /** A host call failed with an error that aborts the block: the block's own result is dropped. */
        let aborted: { readonly error: E } | undefined
        let abortKill: ReturnType<typeof setTimeout> | undefined
        const watchdog = deadline(
          proc,
          `The code block ran longer than ${limitText} and did not stop when interrupted, so the interpreter was killed. All REPL variables were lost; the next block starts a fresh interpreter with P and context reloaded.`
        )
        proc.onCall = (call: HostCall) => {
          if (call.id !== id) {
            proc.control({ t: "reply", ok: false, value: "stale host call" })
            return
          }
          if (watchdog.timedOut || aborted !== undefined) {
            // Interrupted or aborted already: do not start host work the block will never wait for.
            const why =
              aborted !== undefined ? "the block was aborted by the host" : "the block exceeded its time limit"
            proc.control({ t: "reply", ok: false, value: why })
            return
          }
          watchdog.pause()
          runHost(
            Effect.flatMap(
              hostReply(host.call, toolsByName, call.name, call.args, caps.maxPromptChars, codePoints),
              (reply) =>
                Effect.sync(() => {
                  switch (reply._tag) {
                    case "Ok":
                      proc.control({ t: "reply", ok: true, value: reply.json })
                      break
                    case "Error":
                      proc.control({ t: "reply", ok: false, value: reply.message })
                      break
                    case "Abort": {
                      // The child interrupts the block at every poll from now on and refuses its host calls;
                      // a block that still does not return within the grace period is killed.
                      aborted = { error: reply.error }
                      proc.control({ t: "reply", ok: false, abort: true, value: reply.message })
                      abortKill = setTimeout(() => {
                        if (!finished) {
                          proc.kill(
                            new SandboxError({
                              reason: "Crashed",
                              message: "The aborted block did not stop, so the interpreter was killed.",
                              stateLost: true
                            })
                          )
                        }
                      }, graceMs)
                      break
                    }
                  }
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
        const request = {
          t: "exec",
          code,
          limit,
          timeoutMs,
          maxAnswerChars: caps.maxAnswerChars,
          maxPromptChars: caps.maxPromptChars
        }
        // (The child's result straight to this block's fiber: no fiber of its own per request.)
        const withdraw = proc.submit(id, request, (result) => {
          finish()
          if (aborted === undefined) {
            return resume(result instanceof SandboxError ? Effect.fail(result) : Effect.succeed(result))
          }
          // The caller learns of the abort, not of what the block did after it; a killed interpreter is
          // replaced silently at the next request.
          if (!proc.isAlive()) reported = proc
          resume(Effect.fail(aborted.error))
        })
        watchdog.start()
        // Interrupted mid-block (the caller gave up): the interpreter's state is unknown, replace it.
        return Effect.suspend(() => {
          if (finished) return Effect.void
          finish()
          withdraw()
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

    const exec = (code: string): Effect.Effect<ExecResult, SandboxError | E> =>
      lock.withPermits(1)(
        // (Combinators, not a generator: this is every block's path.)
        Effect.flatMap(alive, (proc) => {
          const startedAt = Date.now()
          return Effect.map(noteDeath(proc)(runExec(proc, code)), (raw) => toExecResult(raw, Date.now() - startedAt))
        })
      )

    const answerRefused = (value: string) => {
      const over = overCap(value, caps.maxAnswerChars)
      return over === undefined
        ? undefined
        : `ValueError: the final answer has ${over} characters; the limit is ${caps.maxAnswerChars}`
    }

    /**
     * The block's result as the model sees it, decoded from what the child
     * sent: a malformed result or final signal becomes an error in it.
     */
    const toExecResult = (raw: WorkerResult, durationMs: number): ExecResult => {
      const body = decodeExec(raw)
      if (Either.isLeft(body)) {
        return new ExecResult(
          {
            stdout: "",
            stderr: "",
            error: `the interpreter sent a malformed result: ${body.left}\n`,
            truncated: false,
            durationMs
          },
          true
        )
      }
      const { stdout, stderr, stdoutTotal, stderrTotal, timedOut, errorTotal } = body.right
      const out = view(stdout, stdoutTotal, limit)
      const err = view(stderr, stderrTotal, limit)
      let error =
        body.right.error === undefined
          ? undefined
          : view(body.right.error, errorTotal, Math.max(limit, DEFAULT_OUTPUT_LIMIT)).text
      if (timedOut && error !== undefined) {
        error = `${error.trimEnd()}\nTimeoutError: the block ran longer than ${limitText} (time waiting on llm_query is not counted) and was interrupted. REPL variables are kept.\n`
      }
      let final: FinalSignal | undefined
      if (raw.final !== undefined) {
        const decoded = decodeFinal(raw.final)
        const refused = Either.isLeft(decoded)
          ? `the interpreter sent a malformed final answer: ${decoded.left}`
          : answerRefused(decoded.right.value)
        if (refused !== undefined) error = `${error ?? ""}${refused}\n`
        else if (Either.isRight(decoded)) final = new FinalSignal(decoded.right, true)
      }
      // Built from decoded fields only (`body`, `decoded`): not checked a second time.
      return new ExecResult(
        {
          stdout: out.text,
          stderr: err.text,
          ...(error !== undefined ? { error } : {}),
          truncated: out.truncated || err.truncated,
          durationMs,
          ...(final !== undefined ? { final } : {})
        },
        true
      )
    }

    // getVar/listVars run Python too (a variable's own __str__, say): the same
    // time limit as a block. Interrupted, they answer; ignoring the interrupt,
    // the interpreter is killed like a block's.
    const guarded = (proc: PyProcess, message: Record<string, unknown>) =>
      Effect.suspend(() => {
        const id = proc.nextId()
        const watchdog = deadline(
          proc,
          `Reading REPL variables ran longer than ${limitText} (a variable's own code did not return) and did not stop when interrupted, so the interpreter was killed. All REPL variables were lost.`
        )
        return Effect.acquireUseRelease(
          Effect.sync(() => watchdog.start()),
          () => proc.request(id, { ...message, timeoutMs }),
          () => Effect.sync(() => watchdog.stop())
        )
      })

    /** A read of the REPL's variables, its result decoded by `decodeBody`. */
    const query = <A>(
      message: Record<string, unknown>,
      decodeBody: (raw: WorkerResult) => Either.Either<{ readonly value: A } | { readonly error: string }, string>
    ) =>
      lock.withPermits(1)(
        Effect.gen(function* () {
          const proc = yield* alive
          const result = yield* guarded(proc, message).pipe(noteDeath(proc))
          const body = decodeBody(result)
          if (Either.isLeft(body)) {
            return yield* new SandboxError({
              reason: "Protocol",
              message: `the interpreter sent a malformed result: ${body.left}`
            })
          }
          if ("error" in body.right) {
            return yield* new SandboxError({ reason: "Protocol", message: body.right.error.slice(0, 2000) })
          }
          return body.right.value
        })
      )

    const repl: Repl<E> = {
      language: "python",
      exec,
      // Capped like a final answer (FINAL_VAR reads a variable this way): the
      // child refuses a longer value, and the host checks again.
      getVar: (name) =>
        query({ t: "getVar", name, maxChars: caps.maxAnswerChars }, decodeGetVar).pipe(
          Effect.flatMap((value) => {
            if (value === null) return Effect.succeed(Option.none())
            const over = overCap(value, caps.maxAnswerChars)
            return over === undefined
              ? Effect.succeed(Option.some(value))
              : new SandboxError({
                  reason: "Protocol",
                  message: `ValueError: the variable '${name.slice(0, 100)}' has ${over} characters; the limit is ${caps.maxAnswerChars}`
                })
          })
        ),
      listVars: query({ t: "listVars" }, decodeListVars).pipe(
        Effect.map(
          (vars): ReadonlyArray<VarInfo> =>
            vars.map((v) => ({ name: v.name.slice(0, 1000), type: v.type.slice(0, 1000) }))
        )
      )
    }
    return repl
  })

/** @internal */
export const defaultExecTimeout = DEFAULT_EXEC_TIMEOUT
