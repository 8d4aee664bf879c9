import { readFile } from "node:fs/promises"
import { createRequire } from "node:module"
import * as v8 from "node:v8"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import {
  newQuickJSAsyncWASMModuleFromVariant,
  newVariant,
  type QuickJSAsyncContext,
  type QuickJSAsyncRuntime,
  type QuickJSAsyncWASMModule,
  type QuickJSHandle,
  RELEASE_ASYNC
} from "quickjs-emscripten"
import * as Output from "../Output.js"
import * as Sandbox from "../Sandbox.js"
import { PRELUDE } from "./javascriptPrelude.js"
import { rewriteTopLevel } from "./javascriptRewrite.js"

/** @internal */
export interface Options {
  readonly memoryMb?: number | undefined
  readonly execTimeout?: Duration.DurationInput | undefined
  readonly maxStackSizeBytes?: number | undefined
}

const DEFAULT_MEMORY_MB = 2048
const DEFAULT_EXEC_TIMEOUT = Duration.seconds(30)
/**
 * QuickJS measures its own (emscripten) stack, but its frames also use the
 * host's native stack, ~4x as much: beyond ~1,000 nested JS calls the host V8
 * stack overflows first. 128 KiB stops plain recursion at ~680 frames.
 */
const DEFAULT_MAX_STACK = 128 * 1024
const MAX_STACK_LINES = 12
const DESCRIBE_BUDGET_MS = 1000
/** Extra time given to promise jobs past the limit so the interrupt can stop them. */
const DRAIN_GRACE_MS = 1000

// ---------------------------------------------------------------------------
// The WebAssembly module is compiled once per process; each session gets its
// own instance (asyncify allows one suspended call per instance, and child
// RLM sessions run concurrently).

/**
 * V8 flags that make the QuickJS module baseline-compiled (Liftoff) eagerly,
 * with no later tier-up. Measured here: once V8 tiers the interpreter loop up
 * to TurboFan, each nested JS call costs ~30 KB of the host's native stack, so
 * ~35 nested calls overflow it (a host RangeError that kills the interpreter)
 * before QuickJS's own stack check can fire; with Liftoff code the check fires
 * first (~680 nested calls at 128 KiB), and speed was the same or better.
 * The flags are set only around a synchronous compile and restored at once.
 */
const LIFTOFF_ONLY_FLAGS = ["wasm-tier-up", "wasm-dynamic-tiering", "wasm-lazy-compilation"]

const compileLiftoffOnly = (bytes: Uint8Array<ArrayBuffer>): WebAssembly.Module => {
  const startup = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)]
  const setFlags = (on: boolean) => {
    for (const flag of LIFTOFF_ONLY_FLAGS) {
      // Restore to the process's own setting (V8's default unless it was started with --no-<flag>).
      const startedOff = startup.includes(`--no-${flag}`) || startup.includes(`--no-${flag.replace(/-/g, "_")}`)
      v8.setFlagsFromString(on && !startedOff ? `--${flag}` : `--no-${flag}`)
    }
  }
  setFlags(false)
  try {
    return new WebAssembly.Module(bytes)
  } finally {
    setFlags(true)
  }
}

let compiled: Promise<WebAssembly.Module | undefined> | undefined
const compiledModule = (): Promise<WebAssembly.Module | undefined> => {
  if (compiled === undefined) {
    compiled = (async () => {
      try {
        const require = createRequire(import.meta.url)
        const core = require.resolve("quickjs-emscripten")
        const wasmPath = createRequire(core).resolve("@jitl/quickjs-wasmfile-release-asyncify/wasm")
        return compileLiftoffOnly(new Uint8Array(await readFile(wasmPath)))
      } catch {
        return undefined // fall back to the variant's own loader
      }
    })()
  }
  return compiled
}

const PAGE = 65536
const INITIAL_PAGES = 256 // the module's INITIAL_MEMORY, 16 MiB
const MAX_PAGES = 32768 // the module's own maximum, 2 GiB

/**
 * A fresh instance whose WebAssembly memory cannot grow past `memoryBytes`.
 * This is the memory limit that holds: QuickJS's own malloc limit counts only
 * 8 bytes per allocation in this build (malloc_usable_size is unavailable), so
 * on its own it let a block allocate 2 GB. At the cap, malloc returns NULL and
 * QuickJS throws a catchable `InternalError: out of memory`.
 */
const newModule = async (memoryBytes: number): Promise<QuickJSAsyncWASMModule> => {
  const wasm = await compiledModule()
  const maximum = Math.max(INITIAL_PAGES, Math.min(MAX_PAGES, Math.floor(memoryBytes / PAGE)))
  const wasmMemory = new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum })
  return newQuickJSAsyncWASMModuleFromVariant(
    newVariant(RELEASE_ASYNC, wasm === undefined ? { wasmMemory } : { wasmModule: wasm, wasmMemory })
  )
}

// Private members of quickjs-emscripten used for the fast path that loads a
// 100 MB string without the library's per-character JS encoder.
interface EmscriptenInternals {
  readonly HEAPU8: Uint8Array
  _malloc(size: number): number
  _free(ptr: number): void
}
interface FfiInternals {
  QTS_NewString(ctx: number, ptr: number): number
}
interface ContextInternals {
  readonly module: EmscriptenInternals
  readonly ffi: FfiInternals
  readonly ctx: { readonly value: number }
  readonly memory: { heapValueHandle(ptr: number): QuickJSHandle }
}

const errorMessage = (u: unknown): string => (u instanceof Error ? `${u.name}: ${u.message}` : String(u))

interface Budget {
  active: boolean
  used: number
  since: number
  limitMs: number
  tripped: boolean
  aborted: boolean
}

interface Drained {
  readonly stdout: string
  readonly stdoutOmitted: number
  readonly stderr: string
  readonly stderrOmitted: number
  readonly final: { readonly source: "FINAL" | "FINAL_VAR"; readonly name?: string; readonly value: string } | null
}

/** Thrown (as a rejected promise) when the interpreter itself broke. */
class InterpreterCrash extends Error {}

/**
 * One interpreter: a WebAssembly instance, a runtime with its limits, a
 * context with the helpers installed.
 */
class Interpreter {
  readonly budget: Budget
  private mode: "idle" | "async" | "sync" | "job" = "idle"
  private hostAbort: AbortController | undefined
  private ctl!: QuickJSHandle
  private fns!: {
    begin: QuickJSHandle
    echo: QuickJSHandle
    end: QuickJSHandle
    describe: QuickJSHandle
    getVar: QuickJSHandle
    listVars: QuickJSHandle
  }
  private hostRuntime: Runtime.Runtime<never> = Runtime.defaultRuntime
  broken = false

  private constructor(
    readonly module: QuickJSAsyncWASMModule,
    readonly runtime: QuickJSAsyncRuntime,
    readonly context: QuickJSAsyncContext,
    private readonly open: Sandbox.OpenOptions,
    private readonly settings: { readonly memoryBytes: number; readonly outputLimit: number }
  ) {
    this.budget = {
      active: false,
      used: 0,
      since: 0,
      limitMs: Duration.toMillis(Duration.decode(open.execTimeout ?? DEFAULT_EXEC_TIMEOUT)),
      tripped: false,
      aborted: false
    }
  }

  static async create(open: Sandbox.OpenOptions, options: Options): Promise<Interpreter> {
    const memoryBytes = Math.round((options.memoryMb ?? DEFAULT_MEMORY_MB) * 1024 * 1024)
    const module = await newModule(memoryBytes)
    const runtime = module.newRuntime()
    const interp = new Interpreter(module, runtime, runtime.newContext(), open, {
      memoryBytes,
      outputLimit: Math.max(0, Math.floor(open.outputLimit ?? Sandbox.DEFAULT_OUTPUT_LIMIT))
    })
    try {
      runtime.setMemoryLimit(Math.min(memoryBytes, 2 ** 31 - 1))
      runtime.setMaxStackSize(options.maxStackSizeBytes ?? DEFAULT_MAX_STACK)
      runtime.setInterruptHandler(() => interp.shouldInterrupt())
      interp.install()
      return interp
    } catch (e) {
      interp.dispose()
      throw e
    }
  }

  private get internals(): ContextInternals {
    return this.context as unknown as ContextInternals
  }

  shouldInterrupt(): boolean {
    const b = this.budget
    if (b.aborted) return true
    if (!b.active) return false
    if (b.used + (performance.now() - b.since) > b.limitMs) {
      b.tripped = true
      return true
    }
    return false
  }

  private startBudget() {
    const b = this.budget
    b.active = true
    b.used = 0
    b.since = performance.now()
    b.tripped = false
  }
  private pauseBudget() {
    const b = this.budget
    if (b.active) {
      b.used += performance.now() - b.since
      b.active = false
    }
  }
  private resumeBudget() {
    this.budget.since = performance.now()
    this.budget.active = true
  }

  /** A guest string built in C from UTF-8 bytes (the library's own path encodes char by char in JS). */
  private newLargeString(text: string): QuickJSHandle {
    const ctx = this.context
    if (text.includes("\u0000")) {
      // The C entry point takes a NUL-terminated string: load the pieces and join them inside.
      const parts = text.split("\u0000")
      const array = ctx.newArray()
      try {
        parts.forEach((part, i) => {
          const h = this.newLargeString(part)
          ctx.setProp(array, i, h)
          h.dispose()
        })
        const join = ctx.unwrapResult(ctx.evalCode(`(function (a) { return a.join("\\u0000") })`))
        try {
          return ctx.unwrapResult(ctx.callFunction(join, ctx.undefined, array))
        } finally {
          join.dispose()
        }
      } finally {
        array.dispose()
      }
    }
    const internals = this.internals
    if (typeof internals.ffi?.QTS_NewString !== "function" || typeof internals.module?._malloc !== "function") {
      return ctx.newString(text)
    }
    const capacity = Buffer.byteLength(text, "utf8") + 1
    const ptr = internals.module._malloc(capacity)
    if (ptr === 0) throw new RangeError(`out of memory loading a string of ${text.length} characters`)
    try {
      const heap = internals.module.HEAPU8
      const { written } = new TextEncoder().encodeInto(text, heap.subarray(ptr, ptr + capacity - 1))
      internals.module.HEAPU8[ptr + written] = 0
      const valuePtr = internals.ffi.QTS_NewString(internals.ctx.value, ptr)
      return internals.memory.heapValueHandle(valuePtr)
    } finally {
      internals.module._free(ptr)
    }
  }

  private install() {
    const ctx = this.context
    const text = this.open.context.text
    const documents = this.open.context.documents

    const query = ctx.newAsyncifiedFunction("query", (kindHandle, payloadHandle) => {
      const kind = ctx.getString(kindHandle)
      const payload = ctx.getString(payloadHandle)
      if (this.mode !== "async") {
        // Not under an asyncify-aware entry point (a getter or toString run by the
        // REPL itself): answer at once instead of suspending.
        const name = kind.startsWith("llm") ? "llm_query" : "rlm_query"
        const message =
          this.mode === "job"
            ? `${name} cannot run inside a promise job (after an await, or in a .then callback): it is synchronous in this REPL. Call it directly (const a = ${name}(p)); for parallel calls use ${name}_batched([...]).`
            : `${name} can only be called from the code of a block, not from a getter or toString run by the REPL`
        return {
          error: ctx.newError({ name: "Error", message })
        } as unknown as Promise<QuickJSHandle>
      }
      return this.callHost(kind, payload).then(
        (reply) => ctx.newString(reply),
        (message: string) => ({ error: ctx.newError({ name: "Error", message }) })
      )
    })
    const find = ctx.newFunction("find", (needleHandle, startHandle) => {
      const needle = ctx.getString(needleHandle)
      const start = ctx.getNumber(startHandle)
      // The guest array costs ~16 bytes per hit: stop before building a result
      // that could not fit under the memory cap anyway.
      const maxHits = Math.floor(this.settings.memoryBytes / 24)
      const hits: Array<number> = []
      if (needle.length > 0) {
        let i = text.indexOf(needle, Number.isFinite(start) ? Math.max(0, start) : 0)
        while (i !== -1) {
          if (hits.length >= maxHits) {
            return {
              error: ctx.newError({
                name: "RangeError",
                message: `find: more than ${maxHits} matches would not fit in the sandbox memory limit; search a longer needle or a slice of P`
              })
            }
          }
          hits.push(i)
          i = text.indexOf(needle, i + 1)
        }
      }
      return ctx.newArrayBuffer(new Float64Array(hits).buffer)
    })
    const raw = ctx.newObject()
    ctx.setProp(raw, "query", query)
    ctx.setProp(raw, "find", find)
    query.dispose()
    find.dispose()

    const handles: Array<QuickJSHandle> = [raw]
    try {
      const p = this.newLargeString(text)
      handles.push(p)
      let docs: QuickJSHandle = ctx.undefined
      if (documents !== undefined) {
        docs = ctx.newArray()
        handles.push(docs)
        documents.forEach((doc, i) => {
          const h = this.newLargeString(doc)
          ctx.setProp(docs, i, h)
          h.dispose()
        })
      }
      const limit = ctx.newNumber(this.settings.outputLimit)
      handles.push(limit)
      const installer = ctx.unwrapResult(ctx.evalCode(PRELUDE, "<prelude>", { type: "global", strict: true }))
      handles.push(installer)
      this.ctl = ctx.unwrapResult(ctx.callFunction(installer, ctx.undefined, p, docs, raw, limit))
      const fn = (name: string) => ctx.getProp(this.ctl, name)
      this.fns = {
        begin: fn("begin"),
        echo: fn("echo"),
        end: fn("end"),
        describe: fn("describe"),
        getVar: fn("getVar"),
        listVars: fn("listVars")
      }
    } finally {
      for (const h of handles) if (h.alive) h.dispose()
    }
  }

  private callHost(kind: string, payload: string): Promise<string> {
    const host = this.open.host
    const effect: Effect.Effect<string, Sandbox.HostCallError> = (() => {
      switch (kind) {
        case "llm":
        case "rlm": {
          let prompt: unknown
          try {
            prompt = JSON.parse(payload)
          } catch {
            prompt = undefined
          }
          if (typeof prompt !== "string") {
            return Effect.fail(new Sandbox.HostCallError({ message: "query: the prompt must be a string" }))
          }
          const call = kind === "llm" ? host.llmQuery(prompt) : host.rlmQuery(prompt)
          return Effect.map(call, (reply) => JSON.stringify(String(reply)))
        }
        case "llm_batched":
        case "rlm_batched": {
          let prompts: Array<string>
          try {
            const parsed: unknown = JSON.parse(payload)
            if (!Array.isArray(parsed) || !parsed.every((p) => typeof p === "string")) throw new Error()
            prompts = parsed
          } catch {
            return Effect.fail(new Sandbox.HostCallError({ message: "batched query: prompts must be strings" }))
          }
          const call = kind === "llm_batched" ? host.llmQueryBatched(prompts) : host.rlmQueryBatched(prompts)
          return call.pipe(
            Effect.flatMap((replies) =>
              replies.length === prompts.length
                ? Effect.succeed(JSON.stringify(replies.map(String)))
                : Effect.fail(
                    new Sandbox.HostCallError({
                      message: `batched query: host returned ${replies.length} replies for ${prompts.length} prompts`
                    })
                  )
            )
          )
        }
        default:
          return Effect.fail(new Sandbox.HostCallError({ message: `unknown host function ${kind}` }))
      }
    })()
    this.pauseBudget()
    const abort = new AbortController()
    this.hostAbort = abort
    return Runtime.runPromiseExit(this.hostRuntime)(effect, { signal: abort.signal }).then((exit) => {
      this.hostAbort = undefined
      this.resumeBudget()
      if (Exit.isSuccess(exit)) return exit.value
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) throw failure.value.message
      const defect = Cause.dieOption(exit.cause)
      if (Option.isSome(defect)) throw `host call failed: ${errorMessage(defect.value)}`
      throw "host call interrupted"
    })
  }

  /** Abort the running block (the fiber running it was interrupted, or the scope closed). */
  abort() {
    this.budget.aborted = true
    this.hostAbort?.abort()
  }

  private callSync(fn: QuickJSHandle, ...args: Array<QuickJSHandle>): QuickJSHandle | { error: string } {
    const ctx = this.context
    const result = ctx.callFunction(fn, ctx.undefined, ...args)
    if (result.error) {
      const text = this.describe(result.error)
      result.error.dispose()
      return { error: text }
    }
    return result.value
  }

  /**
   * Format a thrown value inside the guest, under a fresh short budget (the
   * value may have hostile getters); never falls back to code that could loop.
   */
  private describe(error: QuickJSHandle): string {
    const ctx = this.context
    const b = this.budget
    const saved = { active: b.active, used: b.used, since: b.since, limitMs: b.limitMs, tripped: b.tripped }
    b.active = true
    b.used = 0
    b.since = performance.now()
    b.limitMs = Math.min(saved.limitMs, DESCRIBE_BUDGET_MS)
    try {
      const result = ctx.callFunction(this.fns.describe, ctx.undefined, error)
      if (result.error) {
        result.error.dispose()
        return "Uncaught exception (its description could not be computed)"
      }
      const text = ctx.typeof(result.value) === "string" ? ctx.getString(result.value) : "Uncaught exception"
      result.value.dispose()
      return trimStack(text)
    } catch {
      return "Uncaught exception (its description could not be computed)"
    } finally {
      Object.assign(b, saved)
      if (saved.active) b.since = performance.now()
    }
  }

  /**
   * Run pending promise jobs (async functions, `.then` callbacks) after the
   * block. Host calls are refused inside jobs: suspending the interpreter in a
   * job corrupted QuickJS's heap in testing. Past the time limit the interrupt
   * handler stops each job, so a job chain that keeps re-queuing itself dies.
   */
  private drainJobs(): string | undefined {
    let firstError: string | undefined
    this.mode = "job"
    try {
      while (this.runtime.hasPendingJob()) {
        const b = this.budget
        if (b.aborted) break
        if (b.used + (b.active ? performance.now() - b.since : 0) > b.limitMs + DRAIN_GRACE_MS) {
          b.tripped = true
          firstError ??= "InternalError: interrupted (promise jobs were still pending)"
          break
        }
        const result = this.runtime.executePendingJobs(1)
        if (result.error) {
          firstError ??= this.describe(result.error)
          result.error.dispose()
        }
      }
    } finally {
      this.mode = "async"
    }
    // An interrupted promise reaction becomes a rejected promise, not a job error.
    if (firstError === undefined && this.budget.tripped) firstError = "InternalError: interrupted (in a promise job)"
    return firstError
  }

  async exec(code: string, hostRuntime: Runtime.Runtime<never>): Promise<Sandbox.ExecResult> {
    const ctx = this.context
    const started = performance.now()
    this.hostRuntime = hostRuntime
    this.budget.aborted = false
    let error: string | undefined
    const begun = this.callSync(this.fns.begin)
    if ("error" in begun) throw new InterpreterCrash(`REPL prelude failed: ${begun.error}`)
    begun.dispose()

    this.startBudget()
    this.mode = "async"
    let evalResult: Awaited<ReturnType<QuickJSAsyncContext["evalCodeAsync"]>> | undefined
    try {
      const rewritten = rewriteTopLevel(code)
      evalResult = await ctx.evalCodeAsync(rewritten, "<repl>", { type: "global" })
      if (evalResult.error && rewritten !== code && this.isSyntaxError(evalResult.error)) {
        evalResult.error.dispose()
        evalResult = await ctx.evalCodeAsync(code, "<repl>", { type: "global" })
      }
      const jobError = this.drainJobs()
      if (jobError !== undefined) error = `Unhandled error in a promise job: ${jobError}`
    } catch (e) {
      this.broken = true
      throw new InterpreterCrash(errorMessage(e), { cause: e })
    } finally {
      this.mode = "sync"
    }
    try {
      if (evalResult.error) {
        error = this.describe(evalResult.error)
        evalResult.error.dispose()
        if (/^SyntaxError/.test(error) && /\bawait\b/.test(code)) {
          error +=
            "\nHint: llm_query/rlm_query are synchronous here; call them without await (top-level await is not supported)."
        }
      } else {
        let value = evalResult.value
        const state = ctx.getPromiseState(value)
        if (state.type === "fulfilled" && state.notAPromise === true) {
          // not a promise: echo the value itself
        } else {
          value.dispose()
          value = ctx.undefined
          if (state.type === "fulfilled") value = state.value
          else if (state.type === "rejected") {
            error = `Uncaught (in promise) ${this.describe(state.error)}`
            state.error.dispose()
          }
        }
        const echoed = this.callSync(this.fns.echo, value)
        if (value.alive) value.dispose()
        if ("error" in echoed) error = echoed.error
        else echoed.dispose()
      }
    } finally {
      this.mode = "idle"
      this.pauseBudget()
    }
    if (error !== undefined) error = this.explain(error)
    const ended = this.callSync(this.fns.end)
    if ("error" in ended) throw new InterpreterCrash(`REPL output collection failed: ${ended.error}`)
    const drained = JSON.parse(ctx.getString(ended)) as Drained
    ended.dispose()
    const stdout =
      drained.stdoutOmitted > 0 ? drained.stdout + Output.truncationMarker(drained.stdoutOmitted) : drained.stdout
    const stderr =
      drained.stderrOmitted > 0 ? drained.stderr + Output.truncationMarker(drained.stderrOmitted) : drained.stderr
    return new Sandbox.ExecResult({
      stdout,
      stderr,
      ...(error !== undefined ? { error } : {}),
      truncated: drained.stdoutOmitted > 0 || drained.stderrOmitted > 0,
      durationMs: performance.now() - started,
      ...(drained.final !== null
        ? {
            final: new Sandbox.FinalSignal({
              source: drained.final.source,
              value: drained.final.value,
              ...(drained.final.name !== undefined ? { name: drained.final.name } : {})
            })
          }
        : {})
    })
  }

  private isSyntaxError(error: QuickJSHandle): boolean {
    const ctx = this.context
    try {
      const name = ctx.getProp(error, "name")
      const s = ctx.typeof(name) === "string" ? ctx.getString(name) : ""
      name.dispose()
      return s === "SyntaxError"
    } catch {
      return false
    }
  }

  private explain(error: string): string {
    if (this.budget.aborted) return `${error}\nThe block was cancelled.`
    if (this.budget.tripped && /interrupted/.test(error)) {
      return `${error}\nTimeoutError: the block ran longer than ${Math.round(
        this.budget.limitMs
      )} ms of execution time (time waiting on llm_query/rlm_query is not counted) and was stopped. Variables assigned before the interruption are kept.`
    }
    if (/out of memory/.test(error)) {
      return `${error}\nMemoryError: the block exceeded the sandbox memory limit of ${Math.round(
        this.settings.memoryBytes / 1024 / 1024
      )} MB and was stopped. Variables are kept; release large values (x = null) before retrying.`
    }
    if (/stack overflow/.test(error)) {
      return `${error}\nRecursionError: maximum call depth exceeded; use a loop or an explicit stack.`
    }
    return error
  }

  /** Run a synchronous guest call under the time budget. */
  private guarded<A>(f: () => A): A {
    this.budget.aborted = false
    this.startBudget()
    this.mode = "sync"
    try {
      return f()
    } finally {
      this.mode = "idle"
      this.pauseBudget()
    }
  }

  getVar(name: string): Option.Option<string> {
    const ctx = this.context
    return this.guarded(() => {
      const nameHandle = ctx.newString(name)
      const result = this.callSync(this.fns.getVar, nameHandle)
      nameHandle.dispose()
      if ("error" in result) return Option.none()
      const value = ctx.typeof(result) === "string" ? Option.some(ctx.getString(result)) : Option.none()
      result.dispose()
      return value
    })
  }

  listVars(): ReadonlyArray<Sandbox.VarInfo> {
    const ctx = this.context
    return this.guarded(() => {
      const result = this.callSync(this.fns.listVars)
      if ("error" in result) return []
      const vars = JSON.parse(ctx.getString(result)) as Array<Sandbox.VarInfo>
      result.dispose()
      return vars
    })
  }

  dispose() {
    if (this.broken) return // a trapped instance is not touched again; the GC frees its memory
    try {
      if (this.fns) for (const h of Object.values(this.fns)) if (h.alive) h.dispose()
      if (this.ctl?.alive) this.ctl.dispose()
      this.context.dispose()
      this.runtime.dispose()
    } catch {
      // leaked handles inside a dying interpreter: nothing left to protect
    }
  }
}

const freshStack = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

const trimStack = (text: string): string => {
  const lines = text.split("\n")
  const kept = lines.filter((line) => !/<prelude>/.test(line))
  if (kept.length <= MAX_STACK_LINES + 1) return kept.join("\n").trimEnd()
  return [...kept.slice(0, MAX_STACK_LINES + 1), `    ... ${kept.length - MAX_STACK_LINES - 1} more frames`].join("\n")
}

/**
 * A session: the current interpreter, replaced by a fresh one (state lost)
 * when it crashes. Operations run one at a time, even when a caller was
 * interrupted mid-block.
 */
class Session {
  private queue: Promise<unknown> = Promise.resolve()
  private closed = false

  constructor(
    private interp: Interpreter,
    private readonly open: Sandbox.OpenOptions,
    private readonly options: Options
  ) {}

  private enqueue<A>(f: () => Promise<A>): Promise<A> {
    const run = this.queue.then(async () => {
      if (this.closed) throw new Sandbox.SandboxError({ reason: "Closed", message: "the JavaScript REPL is closed" })
      // Start from a fresh host stack: QuickJS frames also live on the host's
      // native stack, and a deep caller stack leaves less room for recursion.
      await freshStack()
      return f()
    })
    this.queue = run.catch(() => undefined)
    return run
  }

  abort() {
    this.interp.abort()
  }

  exec(code: string, hostRuntime: Runtime.Runtime<never>): Promise<Sandbox.ExecResult> {
    return this.enqueue(async () => {
      try {
        return await this.interp.exec(code, hostRuntime)
      } catch (e) {
        const message = errorMessage(e)
        this.interp.broken = true
        this.interp.dispose()
        try {
          this.interp = await Interpreter.create(this.open, this.options)
        } catch (restart) {
          this.closed = true
          throw new Sandbox.SandboxError({
            reason: "Crashed",
            message: `The JavaScript interpreter crashed (${message}) and could not be restarted: ${errorMessage(restart)}`,
            stateLost: true
          })
        }
        throw new Sandbox.SandboxError({
          reason: "Crashed",
          message: `The JavaScript interpreter crashed (${message}); it was restarted with P/context reloaded, but all variables from earlier blocks were lost.`,
          stateLost: true
        })
      }
    })
  }

  getVar(name: string) {
    return this.enqueue(async () => this.interp.getVar(name))
  }

  listVars() {
    return this.enqueue(async () => this.interp.listVars())
  }

  async close() {
    this.interp.abort()
    await this.queue
    this.closed = true
    this.interp.dispose()
  }
}

const toSandboxError = (reason: typeof Sandbox.SandboxErrorReason.Type) => (u: unknown) =>
  u instanceof Sandbox.SandboxError ? u : new Sandbox.SandboxError({ reason, message: errorMessage(u) })

const runSession = <A>(session: Session, f: () => Promise<A>): Effect.Effect<A, Sandbox.SandboxError> =>
  Effect.async<A, Sandbox.SandboxError>((resume) => {
    f().then(
      (a) => resume(Effect.succeed(a)),
      (e) => resume(Effect.fail(toSandboxError("Protocol")(e)))
    )
    return Effect.sync(() => session.abort())
  })

/** @internal */
export const open = (options: Options) => (openOptions: Sandbox.OpenOptions) =>
  Effect.gen(function* () {
    const session = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => new Session(await Interpreter.create(openOptions, options), openOptions, options),
        catch: (e) =>
          new Sandbox.SandboxError({
            reason: /out of memory/i.test(errorMessage(e)) ? "MemoryExceeded" : "StartFailed",
            message: `Could not start the JavaScript REPL: ${errorMessage(e)}`
          })
      }),
      (session) => Effect.promise(() => session.close())
    )
    const repl: Sandbox.Repl = {
      language: "javascript",
      exec: (code) =>
        Effect.flatMap(Effect.runtime<never>(), (runtime) => runSession(session, () => session.exec(code, runtime))),
      getVar: (name) => runSession(session, () => session.getVar(name)),
      listVars: runSession(session, () => session.listVars())
    }
    return repl
  })

/** @internal */
export const make = (options: Options = {}): Sandbox.Sandbox.Service => ({
  language: "javascript",
  isolation: "process",
  open: (openOptions) =>
    open(options)({
      ...openOptions,
      execTimeout: openOptions.execTimeout ?? options.execTimeout
    })
})
