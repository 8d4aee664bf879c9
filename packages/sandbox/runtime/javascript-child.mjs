// The JavaScript sandbox child process (plain JavaScript, not compiled by
// tsc): owns one QuickJS interpreter (quickjs-emscripten, asyncify build) on
// its only thread. Started by the host (src/internal/javascriptSandbox.ts) as
//   node --disallow-code-generation-from-strings --experimental-permission
//        --allow-fs-read=<QuickJS package folders>/* --allow-fs-read=<runtime dir>/*
//        javascript-child.mjs <json config>
// with an empty environment (inside the OS wall where the machine has one)
// and these descriptors:
//   0  host -> child  first the context's UTF-8 bytes (their lengths are in the
//                     config), then JSON lines: exec, getVar, listVars, reply
//   1  child -> host  JSON lines: ready, failed, result, call, crashed
//   2  child -> host  diagnostics (V8's own out-of-memory report)
// Requests run one at a time, in order. A host call made by model code
// (llm_query and friends) suspends the interpreter (asyncify): this process
// writes a `call` line and reads the `reply` line on its event loop while the
// block waits; the block's time limit does not count that wait.
// Nothing of this realm is reachable from model code: the guest sees only the
// ECMAScript builtins and the helpers of the prelude. Every value this file
// reads out of the guest is a string returned by the prelude's own closure,
// read under a time budget.
import { readFileSync } from "node:fs"
import { createRequire, syncBuiltinESMExports } from "node:module"
import { pathToFileURL } from "node:url"
import { PRELUDE } from "./javascript-prelude.mjs"
import { assertLockedDown, cutNodeNetwork, lockIntrinsics, stripProcess } from "./node-wall.mjs"
import { refuseArgs } from "./tool-args.mjs"

const config = JSON.parse(process.argv[2] ?? "{}")

// --- Fail closed unless Node's permission model is active, with no child
// processes, no threads, no writes and no native addons.
assertLockedDown()

// Past a block's limit the child may still spend DRAIN_GRACE_MS on promise jobs
// and, on hostile values, up to four prelude calls of DESCRIBE_BUDGET_MS each
// (describing the job error, the block's error, the echo's error; collecting
// the output): 1.5 s in all, inside the host's default grace period of 2 s.
/** The budget of one prelude call that may run guest code (formatting a thrown value, say). */
const DESCRIBE_BUDGET_MS = 250
/** Extra time given to promise jobs past the limit so the interrupt can stop them. */
const DRAIN_GRACE_MS = 500
const MAX_STACK_LINES = 12
const HOST_CHECK_MS = 100
const PAGE = 65536
const INITIAL_PAGES = 256 // the module's INITIAL_MEMORY, 16 MiB
const MAX_PAGES = 32768 // the module's own maximum, 2 GiB

const memoryBytes = Number(config.memoryBytes)
const outputLimit = Number(config.outputLimit)
const maxAnswerChars = Number(config.maxAnswerChars)
const maxPromptChars = Number(config.maxPromptChars)
const maxStack = Number(config.maxStackSizeBytes)
const heapMb = Number(config.heapMb)
const textBytes = Number(config.textBytes)
const docBytes = Array.isArray(config.docBytes) ? config.docBytes.map(Number) : undefined

// --- Lines to the host: synchronous writes (stdout is a pipe), so a line is
// out before this process blocks or exits.
const writeLine = (message) => {
  process.stdout.write(`${JSON.stringify(message)}\n`)
}
process.stdout.on("error", () => process.exit(0))

// --- Never outlive the host: its end of stdin closes when it dies. While a
// block computes, the interrupt handler also notices a re-parenting (the
// host died and this process was adopted) within HOST_CHECK_MS.
const startPpid = process.ppid
let nextHostCheck = 0
const hostGone = (now) => {
  if (now < nextHostCheck) return false
  nextHostCheck = now + HOST_CHECK_MS
  return process.ppid !== startPpid
}

const errorMessage = (u) => (u instanceof Error ? `${u.name}: ${u.message}` : String(u))

const trimStack = (text) => {
  const lines = text.split("\n")
  const kept = lines.filter((line) => !/<prelude>/.test(line))
  if (kept.length <= MAX_STACK_LINES + 1) return kept.join("\n").trimEnd()
  return [...kept.slice(0, MAX_STACK_LINES + 1), `    ... ${kept.length - MAX_STACK_LINES - 1} more frames`].join("\n")
}

class InterpreterCrash extends Error {}

// --- The QuickJS module, from the paths the host resolved.
const core = await import(pathToFileURL(config.quickjsCore).href)
const variant = (await import(pathToFileURL(config.quickjsVariant).href)).default
const wasmModule = new WebAssembly.Module(readFileSync(config.quickjsWasm))

// --- Strip the realm (the same wall as the Python child's): should model code
// ever escape QuickJS into this realm, it finds no network, module loading or
// process access. Node's socket, TLS, UDP, DNS, inspector, worker and
// child-process modules are emptied in place (node-wall.mjs).
{
  stripProcess()
  cutNodeNetwork(createRequire(import.meta.url), syncBuiltinESMExports, [
    process.stdin?._handle,
    process.stdout?._handle,
    process.stderr?._handle
  ])
  lockIntrinsics()
}

/** A fresh instance whose WebAssembly memory cannot grow past `memoryBytes` (QuickJS's own malloc limit is not exact in this build). */
const newModule = () => {
  const maximum = Math.max(INITIAL_PAGES, Math.min(MAX_PAGES, Math.floor(memoryBytes / PAGE)))
  const wasmMemory = new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum })
  return core.newQuickJSAsyncWASMModuleFromVariant(core.newVariant(variant, { wasmModule, wasmMemory }))
}

// --- Host calls: one at a time (asyncify suspends the one running block).
// One entry for every host tool: its name and its arguments as JSON (an
// object by parameter name), checked here (the host checks again).
const tools = Array.isArray(config.tools) ? config.tools : []
const toolNames = new Set(tools.map((tool) => String(tool?.name)))
/** Set when the host aborted the running block (a budget spent): no more calls, and the block is interrupted. */
let aborted = false
let pendingReply
let nextCallId = 1
let currentRequest = 0
const callHost = (name, payload) =>
  new Promise((resolve, reject) => {
    if (aborted) {
      reject("the block was aborted by the host")
      return
    }
    let message
    try {
      if (!toolNames.has(name)) throw new Error("invalid host call")
      const args = JSON.parse(payload)
      const refused = refuseArgs(args, maxPromptChars)
      if (refused !== undefined) throw new Error(refused === "invalid host call" ? refused : `${name}: ${refused}`)
      message = { t: "call", id: currentRequest, call: nextCallId++, name, args }
    } catch (e) {
      reject(e instanceof Error ? e.message : String(e))
      return
    }
    pendingReply = { resolve, reject }
    writeLine(message)
  })

const onReply = (message) => {
  const waiter = pendingReply
  pendingReply = undefined
  if (waiter === undefined) return
  if (message.abort === true) aborted = true
  if (message.ok === true && typeof message.value === "string") waiter.resolve(message.value)
  else waiter.reject(typeof message.value === "string" ? message.value : "malformed reply from host")
}

/**
 * One interpreter: a WebAssembly instance, a runtime with its limits, a
 * context with the helpers installed.
 */
class Interpreter {
  mode = "idle" // "idle" | "async" | "sync" | "job"
  budget = { active: false, used: 0, since: 0, limitMs: 30000, tripped: false }

  static async create(text, documents) {
    const module = await newModule()
    const interp = new Interpreter()
    interp.module = module
    interp.runtime = module.newRuntime()
    interp.context = interp.runtime.newContext()
    interp.text = text
    interp.runtime.setMemoryLimit(Math.min(memoryBytes, 2 ** 31 - 1))
    interp.runtime.setMaxStackSize(maxStack)
    interp.runtime.setInterruptHandler(() => interp.shouldInterrupt())
    interp.install(text, documents)
    return interp
  }

  shouldInterrupt() {
    const b = this.budget
    const now = performance.now()
    if (hostGone(now)) process.exit(0)
    // An aborted block (and its promise jobs) stops at once: QuickJS's interrupt cannot be caught.
    if (aborted && (this.mode === "async" || this.mode === "job")) return true
    if (!b.active) return false
    if (b.used + (now - b.since) > b.limitMs) {
      b.tripped = true
      return true
    }
    return false
  }

  startBudget(limitMs) {
    const b = this.budget
    b.active = true
    b.used = 0
    b.since = performance.now()
    b.tripped = false
    b.limitMs = limitMs
  }
  pauseBudget() {
    const b = this.budget
    if (b.active) {
      b.used += performance.now() - b.since
      b.active = false
    }
  }
  resumeBudget() {
    this.budget.since = performance.now()
    this.budget.active = true
  }

  /** A guest string built in C from UTF-8 bytes (the library's own path encodes char by char in JS). */
  newLargeString(text) {
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
    // Private members of quickjs-emscripten: the fast path that loads a 100 MB string.
    const internals = ctx
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

  install(text, documents) {
    const ctx = this.context
    const query = ctx.newAsyncifiedFunction("query", (kindHandle, payloadHandle) => {
      // The tool's name (the prelude's stub passes it).
      const kind = ctx.getString(kindHandle)
      const payload = ctx.getString(payloadHandle)
      if (this.mode !== "async") {
        // Not under an asyncify-aware entry point (a getter or toString run by the
        // REPL itself): answer at once instead of suspending.
        const name = kind
        const message =
          this.mode === "job"
            ? `${name} cannot run inside a promise job (after an await, or in a .then callback): it is synchronous in this REPL. Call it directly (const a = ${name}(p)); for parallel sub-calls use llm_query_batched([...]).`
            : `${name} can only be called from the code of a block, not from a getter or toString run by the REPL`
        return { error: ctx.newError({ name: "Error", message }) }
      }
      this.pauseBudget()
      return callHost(kind, payload).then(
        (reply) => {
          this.resumeBudget()
          return ctx.newString(reply)
        },
        (message) => {
          this.resumeBudget()
          return { error: ctx.newError({ name: "Error", message: String(message) }) }
        }
      )
    })
    const find = ctx.newFunction("find", (needleHandle, startHandle) => {
      const needle = ctx.getString(needleHandle)
      const start = ctx.getNumber(startHandle)
      // The guest array costs ~16 bytes per hit, and this process's own list
      // ~24 (a growing array, then a Float64Array copy): stop before building a
      // result that could not fit under the memory cap or this process's heap.
      const maxHits = Math.floor(Math.min(memoryBytes / 24, (heapMb * 1024 * 1024) / 48))
      const hits = []
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

    const handles = [raw]
    try {
      const p = this.newLargeString(text)
      handles.push(p)
      let docs = ctx.undefined
      if (documents !== undefined) {
        docs = ctx.newArray()
        handles.push(docs)
        documents.forEach((doc, i) => {
          const h = this.newLargeString(doc)
          ctx.setProp(docs, i, h)
          h.dispose()
        })
      }
      const numbers = [outputLimit, maxAnswerChars, maxPromptChars].map((n) => ctx.newNumber(n))
      handles.push(...numbers)
      const toolList = ctx.newString(JSON.stringify(tools))
      handles.push(toolList)
      const installer = ctx.unwrapResult(ctx.evalCode(PRELUDE, "<prelude>", { type: "global", strict: true }))
      handles.push(installer)
      this.ctl = ctx.unwrapResult(ctx.callFunction(installer, ctx.undefined, p, docs, raw, ...numbers, toolList))
      const fn = (name) => ctx.getProp(this.ctl, name)
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

  /** A prelude function; its result must be a string (or undefined), else `{ error }`. */
  callSync(fn, ...args) {
    const ctx = this.context
    const result = ctx.callFunction(fn, ctx.undefined, ...args)
    if (result.error) {
      const text = this.describe(result.error)
      result.error.dispose()
      return { error: text }
    }
    return { value: result.value }
  }

  /** The prelude's string result (its own closure returns strings; anything else reads as undefined). */
  stringOf(handle) {
    const ctx = this.context
    const s = ctx.typeof(handle) === "string" ? ctx.getString(handle) : undefined
    handle.dispose()
    return s
  }

  /**
   * Format a thrown value inside the guest, under a fresh short budget (the
   * value may have hostile getters); never falls back to code that could loop.
   */
  describe(error) {
    const ctx = this.context
    const b = this.budget
    const saved = { ...b }
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
      const text = this.stringOf(result.value) ?? "Uncaught exception"
      return trimStack(text)
    } catch {
      return "Uncaught exception (its description could not be computed)"
    } finally {
      Object.assign(b, saved)
      if (saved.active) b.since = performance.now()
    }
  }

  /**
   * Run pending promise jobs after the block. Host calls are refused inside
   * jobs (suspending the interpreter in a job corrupted QuickJS's heap in
   * testing). Past the time limit the interrupt handler stops each job, so a
   * job chain that keeps re-queuing itself dies.
   */
  drainJobs() {
    let firstError
    this.mode = "job"
    try {
      while (this.runtime.hasPendingJob()) {
        if (aborted) break
        const b = this.budget
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

  isSyntaxError(error) {
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

  async exec(code, rewritten, timeoutMs) {
    const ctx = this.context
    let error
    // Guest code may run in the prelude's own calls (a getter model code planted): always under a budget.
    this.startBudget(DESCRIBE_BUDGET_MS)
    let begun
    try {
      begun = this.callSync(this.fns.begin)
    } finally {
      this.pauseBudget()
    }
    if ("error" in begun) throw new InterpreterCrash(`REPL prelude failed: ${begun.error}`)
    begun.value.dispose()

    this.startBudget(timeoutMs)
    this.mode = "async"
    let evalResult
    try {
      evalResult = await ctx.evalCodeAsync(rewritten, "<repl>", { type: "global" })
      if (evalResult.error && rewritten !== code && this.isSyntaxError(evalResult.error)) {
        evalResult.error.dispose()
        evalResult = await ctx.evalCodeAsync(code, "<repl>", { type: "global" })
      }
      const jobError = this.drainJobs()
      if (jobError !== undefined) error = `Unhandled error in a promise job: ${jobError}`
    } catch (e) {
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
        else echoed.value.dispose()
      }
    } finally {
      this.mode = "idle"
      this.pauseBudget()
    }
    if (error !== undefined) error = this.explain(error)
    // The output collection runs guest code too (the prelude's own): under a short budget.
    this.startBudget(DESCRIBE_BUDGET_MS)
    let ended
    try {
      ended = this.callSync(this.fns.end)
    } finally {
      this.pauseBudget()
    }
    if ("error" in ended) throw new InterpreterCrash(`REPL output collection failed: ${ended.error}`)
    const json = this.stringOf(ended.value)
    if (json === undefined) throw new InterpreterCrash("REPL output collection failed")
    const drained = JSON.parse(json)
    return {
      stdout: drained.stdout,
      stdoutOmitted: drained.stdoutOmitted,
      stderr: drained.stderr,
      stderrOmitted: drained.stderrOmitted,
      ...(error !== undefined ? { error } : {}),
      ...(drained.final !== null ? { final: drained.final } : {})
    }
  }

  explain(error) {
    if (this.budget.tripped && /interrupted/.test(error)) {
      return `${error}\nTimeoutError: the block ran longer than ${Math.round(
        this.budget.limitMs
      )} ms of execution time (time waiting on llm_query/rlm_query is not counted) and was stopped. Variables assigned before the interruption are kept.`
    }
    if (/out of memory/.test(error)) {
      return `${error}\nMemoryError: the block exceeded the sandbox memory limit of ${Math.round(
        memoryBytes / 1024 / 1024
      )} MB and was stopped. Variables are kept; release large values (x = null) before retrying.`
    }
    if (/stack overflow/.test(error)) {
      return `${error}\nRecursionError: maximum call depth exceeded; use a loop or an explicit stack.`
    }
    return error
  }

  /** Run a synchronous prelude call under the time budget. */
  guarded(timeoutMs, f) {
    this.startBudget(timeoutMs)
    this.mode = "sync"
    try {
      return f()
    } finally {
      this.mode = "idle"
      this.pauseBudget()
    }
  }

  getVar(name, timeoutMs) {
    const ctx = this.context
    return this.guarded(timeoutMs, () => {
      const nameHandle = ctx.newString(name)
      const result = this.callSync(this.fns.getVar, nameHandle)
      nameHandle.dispose()
      if ("error" in result) return null
      return this.stringOf(result.value) ?? null
    })
  }

  listVars(timeoutMs) {
    return this.guarded(timeoutMs, () => {
      const result = this.callSync(this.fns.listVars)
      if ("error" in result) return []
      const json = this.stringOf(result.value)
      return json === undefined ? [] : JSON.parse(json)
    })
  }
}

// --- Requests, in order.
let interp
const queue = []
let running = false
const handle = async (message) => {
  currentRequest = message.id
  // No limit is sent as null (JSON has no Infinity).
  const timeoutMs = typeof message.timeoutMs === "number" ? message.timeoutMs : Number.POSITIVE_INFINITY
  switch (message.t) {
    case "exec": {
      aborted = false
      try {
        const code = String(message.code)
        const rewritten = typeof message.rewritten === "string" ? message.rewritten : code
        const result = await interp.exec(code, rewritten, timeoutMs)
        writeLine({ t: "result", id: message.id, ...result })
      } catch (e) {
        // The interpreter itself broke (its native stack, its heap): this process is done.
        writeLine({
          t: "crashed",
          id: message.id,
          message: (e instanceof InterpreterCrash ? e.message : errorMessage(e)).slice(0, 1000)
        })
        process.exit(70)
      }
      return
    }
    case "getVar":
      writeLine({ t: "result", id: message.id, value: interp.getVar(String(message.name), timeoutMs) })
      return
    case "listVars":
      writeLine({ t: "result", id: message.id, vars: interp.listVars(timeoutMs) })
      return
  }
}
const pump = async () => {
  if (running || interp === undefined) return
  running = true
  try {
    while (queue.length > 0) await handle(queue.shift())
  } finally {
    running = false
  }
}
const onLine = (line) => {
  if (line.length === 0) return
  const message = JSON.parse(line)
  if (message.t === "reply") onReply(message)
  else {
    queue.push(message)
    void pump()
  }
}

// --- stdin: the context bytes, then lines.
const contextBytes = textBytes + (docBytes?.reduce((a, b) => a + b, 0) ?? 0)
let contextBuffer = Buffer.allocUnsafe(contextBytes)
let contextRead = 0
let contextDone
const contextLoaded = new Promise((resolve) => {
  contextDone = resolve
})
if (contextBytes === 0) contextDone()
// Pieces of the line being read; a newline is searched for in each new chunk only.
let pieces = []
const takeLines = (chunk) => {
  let start = 0
  for (let newline = chunk.indexOf(10); newline !== -1; newline = chunk.indexOf(10, start)) {
    pieces.push(chunk.subarray(start, newline))
    const line = pieces.length === 1 ? pieces[0] : Buffer.concat(pieces)
    pieces = []
    onLine(line.toString("utf8"))
    start = newline + 1
  }
  if (start < chunk.length) pieces.push(chunk.subarray(start))
}
process.stdin.on("data", (chunk) => {
  if (contextRead < contextBytes) {
    const take = Math.min(chunk.length, contextBytes - contextRead)
    chunk.copy(contextBuffer, contextRead, 0, take)
    contextRead += take
    if (contextRead === contextBytes) contextDone()
    if (take === chunk.length) return
    chunk = chunk.subarray(take)
  }
  takeLines(chunk)
})
process.stdin.on("end", () => process.exit(0))
process.stdin.on("error", () => process.exit(0))

await contextLoaded
try {
  const text = contextBuffer.toString("utf8", 0, textBytes)
  let offset = textBytes
  const documents = docBytes?.map((n) => {
    const doc = contextBuffer.toString("utf8", offset, offset + n)
    offset += n
    return doc
  })
  contextBuffer = undefined // the strings hold the context now
  interp = await Interpreter.create(text, documents)
} catch (e) {
  writeLine({ t: "failed", message: errorMessage(e).slice(0, 1000) })
  process.exit(1)
}
writeLine({ t: "ready" })
void pump()
