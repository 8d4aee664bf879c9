/**
 * Host side of one sandbox child process: spawning it locked down, the
 * request/reply bookkeeping, raw context bytes over stdin, and its death.
 *
 * The child is `runtime/python-child.mjs` (plain JavaScript), which runs Pyodide
 * on its only thread, and keeps each request's time limit itself. Its
 * descriptors, all plain pipes (no Node IPC channel, whose parser would
 * accumulate a message of any size here):
 *   0  to the child: context bytes (and the snapshot, without a disk cache)
 *   1  from it: the snapshot image (snapshot mode only)
 *   3  to the child, JSON lines: requests (exec, context, getVar, listVars),
 *      read between blocks; its end tells the child the host is gone
 *   4  to the child, JSON lines: reply, read while a block waits on a host call
 *   5  from it, JSON lines: ready, result, snapshot, call, crashed
 * Everything on fd 5 is the guest's: read with a capped line reader
 * (`maxLineBytes`, settable per session) and decoded by the Schemas of
 * `pythonMessages.ts`. A line that cannot be attributed to a request (over the
 * cap, not JSON, not a known message) kills the child with a "Protocol"
 * error (`stateLost`): what it was in the middle of is unknown.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { EventEmitter } from "node:events"
import { readFileSync, realpathSync } from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import type { Readable, Writable } from "node:stream"
import { fileURLToPath } from "node:url"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import { DEFAULT_MAX_LINE_BYTES, SandboxError } from "../Sandbox.js"
import { killTree, terminateSpawned, treePeakRssMb, type Wall } from "./isolation.js"
import { onJsonLines } from "./jsonLines.js"
import { type Call, ChildMessage, decode, HostCallName } from "./pythonMessages.js"
import { writeUtf8 } from "./utf8Stream.js"

/** @internal */
export interface ProcessOptions {
  readonly memoryMb: number
  readonly heapMb: number
  readonly startTimeout: Duration.Duration
  readonly pyodideDir: string
  readonly nodePath: string
  /** The OS wall the child runs behind. */
  readonly wall: Wall
  /**
   * An interpreter started ahead of use (the pool): V8's default tier-up
   * budget instead of the raised one, and the child runs a warm-up once it is
   * ready (`warm_up_blocks` in python_repl.py: a few hundred small blocks
   * through a session's path, stopped by the first request, leaving nothing
   * behind), so that the hot WebAssembly functions are compiled by TurboFan
   * while it waits in the pool rather than during its session's first blocks.
   * Default false.
   */
  readonly warmUp?: boolean | undefined
}

/**
 * What the child answers to a request (`exec`, `context`, `getVar`,
 * `listVars`): its envelope decoded (`t`, `id`), the rest still the guest's,
 * for the request's own Schema.
 */
export interface WorkerResult {
  readonly t: "result"
  readonly id: number
  readonly [key: string]: unknown
}

/** A host call posted by model code (`llm_query` and friends); its arguments are still unchecked. */
export interface HostCall {
  readonly id: number
  readonly name: string
  readonly args: unknown
}

/** @internal */
export interface PyProcess {
  readonly pid: number
  readonly isAlive: () => boolean
  readonly nextId: () => number
  /**
   * Send a request and wait for the child's result with the same id. `input`:
   * strings to stream to the child's stdin as UTF-8, after the request.
   */
  readonly request: (
    id: number,
    message: Record<string, unknown>,
    input?: ReadonlyArray<string>
  ) => Effect.Effect<WorkerResult, SandboxError>
  /**
   * `request` without an Effect around it, for the block path: send the
   * request now, and call `onResult` once with the child's result for `id`
   * (or the process's death). Returns what withdraws the wait.
   */
  readonly submit: (
    id: number,
    message: Record<string, unknown>,
    onResult: (result: WorkerResult | SandboxError) => void
  ) => () => void
  /** A request (`exec`, `context`, `getVar`, `listVars`) on fd 3; read by the child between blocks. */
  readonly send: (message: Record<string, unknown>) => void
  /**
   * The longest line read from the child from now on (a session's
   * `maxLineBytes`; a pooled child starts with the default). Takes effect at
   * the next line boundary.
   */
  readonly setMaxLineBytes: (bytes: number) => void
  /** A message the child reads while a block waits on it (`reply`). */
  readonly control: (message: Record<string, unknown>) => void
  /** Where host calls go; replaced per exec. */
  onCall: ((call: HostCall) => void) | undefined
  /**
   * Set when another scope took ownership (a session claiming a pooled
   * interpreter): the scope that spawned it then no longer kills it.
   */
  transferred: boolean
  /** Why the process died, once it has. */
  readonly deathReason: () => SandboxError | undefined
  /** SIGKILL; idempotent. `reason` becomes the death reason. Does not wait for the exit. */
  readonly kill: (reason?: SandboxError) => void
  /**
   * SIGKILL, then wait until the OS process has exited and been reaped (the
   * child's `exit` event), for at most `exitWait`. Idempotent.
   */
  readonly terminate: (reason?: SandboxError) => Effect.Effect<void>
  /** Peak resident set size in MB (Linux `/proc`), if known. */
  readonly peakRssMb: () => number | undefined
}

/** The child's whole environment is `GLIBC_TUNABLES=<this>` (see `spawnChild`). */
export const CHILD_GLIBC_TUNABLES = "glibc.malloc.hugetlb=1"

/** How long a finalizer waits for a SIGKILLed child to be reaped (normally a few ms). */
const EXIT_WAIT = Duration.seconds(5)

const runtimeDir = (): string => fileURLToPath(new URL("../../runtime/", import.meta.url))

/** The folder holding `pyodide.mjs`, resolved from this package. */
export const defaultPyodideDir = (): string => {
  const require = createRequire(import.meta.url)
  return realpathSync(path.dirname(require.resolve("pyodide/package.json")))
}

const crashed = (message: string) =>
  new SandboxError({
    reason: "Crashed",
    message: `The Python interpreter process died (${message}). REPL variables were lost; the next block starts a fresh interpreter with the context reloaded.`,
    stateLost: true
  })

const outOfMemory = (message: string) =>
  new SandboxError({
    reason: "MemoryExceeded",
    message: `The Python interpreter ran out of memory and was stopped (${message}). REPL variables were lost; the next block starts a fresh interpreter with the context reloaded.`,
    stateLost: true
  })

/**
 * Spawn the child (fast, synchronous) and register its kill as the finalizer.
 * Requests may be sent at once (the child queues them until Pyodide is
 * loaded); `ready` waits, interruptibly and at most `startTimeout`, until it is.
 *
 * @internal
 */
export const startProcess = (
  options: ProcessOptions,
  snapshots?: SnapshotSource
): Effect.Effect<
  { readonly process: PyProcess; readonly ready: Effect.Effect<void, SandboxError> },
  SandboxError,
  Scope.Scope
> =>
  Effect.flatMap(snapshots?.get ?? Effect.succeed(undefined), (snapshot) =>
    Effect.acquireRelease(
      Effect.try({
        try: () =>
          start(options, snapshot, (message) => {
            if (snapshot !== undefined) snapshots?.failed(message)
          }),
        catch: (cause) =>
          new SandboxError({ reason: "StartFailed", message: `Could not start the Python sandbox process: ${cause}` })
      }),
      (handle) => Effect.suspend(() => (handle.process.transferred ? Effect.void : handle.process.terminate()))
    )
  ).pipe(
    Effect.map((handle) => ({
      process: handle.process,
      ready: handle.ready.pipe(
        Effect.timeoutFail({
          duration: options.startTimeout,
          onTimeout: () =>
            new SandboxError({
              reason: "StartFailed",
              message: `The Python sandbox did not start within ${Duration.format(options.startTimeout)}.`
            })
        }),
        Effect.zipRight(
          Effect.suspend(() => {
            const failure = handle.snapshotFailure()
            return failure === undefined
              ? Effect.void
              : Effect.logWarning(
                  `The Python start-up snapshot did not restore (${failure}); it was deleted, and this process starts interpreters without one (about 4 s each).`
                )
          })
        )
      )
    }))
  )

/**
 * `startProcess`, then wait until the interpreter is ready.
 *
 * @internal
 */
export const spawnProcess = (
  options: ProcessOptions,
  snapshots?: SnapshotSource
): Effect.Effect<PyProcess, SandboxError, Scope.Scope> =>
  Effect.flatMap(startProcess(options, snapshots), ({ process, ready }) => Effect.as(ready, process))

interface Started {
  readonly process: PyProcess
  readonly ready: Effect.Effect<void, SandboxError>
  /** Why the snapshot this child was given did not restore (it then loaded plainly). */
  readonly snapshotFailure: () => string | undefined
}

/**
 * Spawn the locked-down child: empty environment, no code generation from
 * strings, Node's permission model reading only Pyodide and `runtime/`.
 *
 * @internal
 */
export const spawnChild = (
  options: ProcessOptions,
  config: Record<string, unknown>,
  readable: ReadonlyArray<string> = []
): ChildProcess => {
  const runtime = runtimeDir()
  const wrapped = options.wall.wrap({
    command: options.nodePath,
    readable: [options.pyodideDir, runtime, ...readable],
    cwd: runtime,
    // The whole process's writable memory: the WebAssembly heap, the
    // JavaScript heap, and room for Node itself and the context's copies.
    memoryBytes: (options.memoryMb + Math.max(64, options.heapMb) + 768) * 1024 * 1024,
    args: [
      "--disallow-code-generation-from-strings",
      "--experimental-permission",
      `--allow-fs-read=${options.pyodideDir}${path.sep}*`,
      `--allow-fs-read=${runtime}*`,
      ...readable.map((file) => `--allow-fs-read=${file}`),
      "--no-warnings",
      // Compile Pyodide's WebAssembly synchronously: with V8's asynchronous
      // pipeline the interpreter thread stalls ~200 ms right after loading
      // (measured on Node 20), which every session start would pay.
      "--no-wasm-async-compilation",
      // (Not --wasm-lazy-validation, though it takes Pyodide's module compile
      // from 93-100 to 59-60 ms here: Pyodide probes WebAssembly features by
      // compiling modules that must fail, and with lazy validation the failure
      // comes later, uncaught, at the first call: a plain load then crashes.)
      // Tier WebAssembly up to TurboFan after 10x V8's default budget: at the
      // default, starting Pyodide and the first blocks already trigger hundreds
      // of background TurboFan compiles that compete for the CPU. Measured on 2
      // cores: cold start 829 -> 765 ms (median of 12), the first CPU-heavy
      // block 300-380 -> 206-220 ms, later blocks unchanged (~106 ms).
      // A pooled interpreter (`warmUp`) keeps V8's default: its warm-up,
      // off any session's path, is what makes the hot functions tier up
      // (docs/benchmarks.md, session 6).
      ...(options.warmUp === true ? [] : ["--wasm-tiering-budget=20000000"]),
      // The JavaScript heap of the interpreter's thread (Pyodide's own objects,
      // proxies, strings crossing to JavaScript).
      `--max-old-space-size=${Math.max(64, options.heapMb)}`,
      path.join(runtime, "python-child.mjs"),
      JSON.stringify({
        pyodideDir: options.pyodideDir,
        runtimeDir: runtime,
        memoryMb: options.memoryMb,
        heapMb: options.heapMb,
        ...(options.warmUp === true ? { warmUp: true } : {}),
        ...config
      })
    ]
  })
  return spawn(wrapped.command, wrapped.args, {
    // Nothing of the host's environment. One setting of our own: glibc's
    // malloc asks for transparent huge pages, so the child takes far fewer
    // page faults while it starts (first touches of fresh memory dominate a
    // start on a VM). Measured: Pyodide's load from the snapshot 575 -> 460 ms,
    // page faults 37,600 -> 28,000, peak RSS +5-10 MB.
    env: { GLIBC_TUNABLES: CHILD_GLIBC_TUNABLES },
    cwd: runtime,
    stdio: ["pipe", "pipe", "pipe", "pipe", "pipe", "pipe"],
    windowsHide: true
  })
}

/** A start-up snapshot: a cached file the child may read, or bytes for its stdin. */
export type Snapshot = { readonly file: string } | { readonly bytes: Uint8Array }

/** Where the child's start-up snapshot comes from, and what to do when it did not restore. */
export interface SnapshotSource {
  readonly get: Effect.Effect<Snapshot | undefined>
  readonly failed: (message: string) => void
}

const start = (
  options: ProcessOptions,
  snapshot: Snapshot | undefined,
  onSnapshotFailed: (message: string) => void
): Started => {
  const child: ChildProcess =
    snapshot === undefined
      ? spawnChild(options, {})
      : "file" in snapshot
        ? spawnChild(options, { snapshotFile: snapshot.file }, [snapshot.file])
        : spawnChild(options, { snapshotBytes: snapshot.bytes.length })
  // The snapshot (a memory image of a freshly loaded Pyodide, taken before
  // anything of a session existed) is read by the child as it boots: from the
  // cached file, or first on stdin. The context, if any, follows on stdin later.
  try {
    if (snapshot !== undefined && "bytes" in snapshot) child.stdin?.write(snapshot.bytes)
  } catch (error) {
    // Never leave a spawned child behind when starting fails.
    child.kill("SIGKILL")
    throw error
  }

  const pending = new Map<number, (result: WorkerResult | SandboxError) => void>()
  let ready = false
  let readyWaiter: ((error: SandboxError | undefined) => void) | undefined
  let death: SandboxError | undefined
  let crashMessage: string | undefined
  let stderrTail = ""
  let sawOutOfMemory = false
  let snapshotFailure: string | undefined
  let nextId = 1
  let exited = false
  const exitWaiters = new Set<() => void>()

  child.stdout?.resume()
  child.stderr?.on("data", (chunk: Buffer) => {
    const text = chunk.toString("utf8")
    // V8's out-of-memory abort prints a long native stack after the line that says so.
    if (/OUT_OF_MEMORY|out of memory/i.test(text)) sawOutOfMemory = true
    stderrTail = (stderrTail + text).slice(-2000)
  })
  child.stdin?.on("error", () => {})

  const die = (error: SandboxError) => {
    if (death === undefined) death = error
    for (const callback of pending.values()) callback(death)
    pending.clear()
    readyWaiter?.(death)
    readyWaiter = undefined
  }

  // Everything from the child: JSON lines on fd 5, each decoded by a Schema.
  const protocolError = (what: string) =>
    new SandboxError({
      reason: "Protocol",
      message: `The Python interpreter sent ${what}, so it was stopped. REPL variables were lost; the next block starts a fresh interpreter with the context reloaded.`,
      stateLost: true
    })
  const decodeMessage = decode(ChildMessage)
  // Nothing the child sends may throw here (the host would abort): a failure
  // of our own handling is a protocol error too.
  const onMessage = (raw: Record<string, unknown>) => {
    try {
      handleMessage(raw)
    } catch (error) {
      handle.kill(protocolError(`a message the host could not handle (${String(error).slice(0, 200)})`))
    }
  }
  const handleMessage = (raw: Record<string, unknown>) => {
    const decoded = decodeMessage(raw)
    if (Either.isLeft(decoded)) {
      if (raw.t === "call") {
        // The child waits on fd 4 for the answer: a malformed call fails, the block goes on.
        const name = decode(HostCallName)(raw.name)
        handle.control({
          t: "reply",
          ok: false,
          value: Either.isLeft(name) ? "invalid host call" : `malformed host call (${decoded.left})`
        })
        return
      }
      handle.kill(protocolError(`a malformed message (${decoded.left})`))
      return
    }
    const message = decoded.right
    switch (message.t) {
      case "ready": {
        const status = message.snapshot ?? ""
        if (status.startsWith("failed")) {
          snapshotFailure = status.slice(0, 300)
          onSnapshotFailed(status)
        }
        ready = true
        readyWaiter?.(undefined)
        readyWaiter = undefined
        return
      }
      case "result": {
        const callback = pending.get(message.id)
        if (callback !== undefined) {
          pending.delete(message.id)
          callback(raw as WorkerResult)
        }
        return
      }
      case "call": {
        const call: Call = message
        if (handle.onCall !== undefined) handle.onCall({ id: call.id, name: call.name, args: call.args })
        else handle.control({ t: "reply", ok: false, value: "no block is running" })
        return
      }
      case "crashed": {
        crashMessage = message.message.slice(0, 1000)
        return
      }
    }
  }
  const fromChild = (child.stdio as ReadonlyArray<unknown>)[5] as Readable | null | undefined
  const lines = fromChild
    ? cappedLines(fromChild, DEFAULT_MAX_LINE_BYTES, onMessage, {
        onOversize: (bytes, max) =>
          handle.kill(protocolError(`a message of ${bytes} bytes, over the limit of ${max} (maxLineBytes)`)),
        onMalformed: (excerpt) =>
          handle.kill(protocolError(`a line that is not a JSON object (${JSON.stringify(excerpt)})`))
      })
    : undefined
  fromChild?.on("error", () => {})
  const requests = (child.stdio as ReadonlyArray<unknown>)[3] as Writable | null | undefined
  requests?.on("error", () => {})
  const toChild = (child.stdio as ReadonlyArray<unknown>)[4] as Writable | null | undefined
  toChild?.on("error", () => {})
  child.on("error", (error) => {
    die(crashed(`process error: ${error.message}`))
  })
  // Why it died is decided once its output is read to the end ("close"): at
  // "exit" the crash line on fd 5 or stderr may still be unread. A fallback
  // timer covers pipes some other process would keep open.
  let exitStatus: string | undefined
  const classify = () => {
    if (exitStatus === undefined || death !== undefined) return
    const detail = crashMessage ?? `${exitStatus}${stderrTail ? `: ${stderrTail.trim()}` : ""}`
    if (!ready) {
      die(
        new SandboxError({
          reason: "StartFailed",
          message: `The Python sandbox process exited while starting (${detail.slice(-1000)}).`
        })
      )
    } else {
      die(sawOutOfMemory || /OUT_OF_MEMORY|out of memory/i.test(detail) ? outOfMemory(detail) : crashed(detail))
    }
  }
  child.on("exit", (code, signal) => {
    exited = true
    for (const waiter of exitWaiters) waiter()
    exitWaiters.clear()
    exitStatus = `exit code ${code}, signal ${signal}`
    setTimeout(classify, 250).unref()
  })
  child.on("close", () => classify())

  /** The processes under the spawned one, SIGKILLed with it (see `killTree`). */
  const killedBelow: Array<number> = []
  const handle: PyProcess = {
    pid: child.pid ?? -1,
    onCall: undefined,
    transferred: false,
    isAlive: () => death === undefined,
    nextId: () => nextId++,
    deathReason: () => death,
    send: (message) => {
      // (A write to a dead child fails on the pipe's error handler; the exit handler reports the death.)
      if (death === undefined && requests?.writable === true) requests.write(`${JSON.stringify(message)}\n`)
    },
    setMaxLineBytes: (bytes) => lines?.setMax(bytes),
    control: (message) => {
      if (death === undefined && toChild?.writable === true) toChild.write(`${JSON.stringify(message)}\n`)
    },
    submit: (id, message, onResult) => {
      if (death !== undefined) {
        onResult(death)
        return () => {}
      }
      pending.set(id, onResult)
      handle.send({ ...message, id })
      return () => {
        pending.delete(id)
      }
    },
    request: (id, message, input) => {
      const reply = Effect.async<WorkerResult, SandboxError>((resume) => {
        const withdraw = handle.submit(id, message, (result) =>
          resume(result instanceof SandboxError ? Effect.fail(result) : Effect.succeed(result))
        )
        return Effect.sync(withdraw)
      })
      if (input === undefined || child.stdin === null) return reply
      const stdin = child.stdin
      return Effect.zipLeft(
        reply,
        writeUtf8(stdin, input, () => death !== undefined),
        { concurrent: true }
      )
    },
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
    peakRssMb: () => (child.pid === undefined ? undefined : treePeakRssMb(child.pid))
  }

  const readyEffect = Effect.async<void, SandboxError>((resume) => {
    if (death !== undefined) return resume(Effect.fail(death))
    if (ready) return resume(Effect.void)
    readyWaiter = (error) => resume(error === undefined ? Effect.void : Effect.fail(error))
    return Effect.sync(() => {
      readyWaiter = undefined
    })
  })

  return { process: handle, ready: readyEffect, snapshotFailure: () => snapshotFailure }
}

/**
 * `onJsonLines` over `stream` with a cap that can change: each cap gets its
 * own reader, and a new one takes over at the next line boundary (a pooled
 * child is read with the default cap until a session sets its own).
 */
const cappedLines = (
  stream: Readable,
  initial: number,
  onMessage: (message: Record<string, unknown>) => void,
  handlers: {
    readonly onOversize: (bytes: number, max: number) => void
    readonly onMalformed: (excerpt: string) => void
  }
): { readonly setMax: (bytes: number) => void } => {
  const reader = (max: number): EventEmitter => {
    const feed = new EventEmitter()
    onJsonLines(feed as unknown as Readable, onMessage, {
      maxLineBytes: max,
      onOversize: (bytes) => handlers.onOversize(bytes, max),
      onMalformed: handlers.onMalformed
    })
    return feed
  }
  let current = reader(initial)
  let currentMax = Math.max(1, Math.floor(initial))
  let next: number | undefined
  /** Whether the last byte given to `current` ended a line (or it was given none). */
  let atBoundary = true
  /** Bytes of the line being read so far, to report a line past the cap at once, not only at its end. */
  let lineBytes = 0
  let reported = false
  const measure = (chunk: Buffer) => {
    const last = chunk.lastIndexOf(10)
    if (last === -1) lineBytes += chunk.length
    else {
      lineBytes = chunk.length - last - 1
      reported = false
    }
    if (lineBytes > currentMax && !reported) {
      reported = true
      handlers.onOversize(lineBytes, currentMax)
    }
  }
  stream.on("data", (chunk: Buffer) => {
    measure(chunk)
    let rest = chunk
    if (next !== undefined && !atBoundary) {
      const newline = rest.indexOf(10)
      if (newline === -1) {
        current.emit("data", rest)
        return
      }
      current.emit("data", rest.subarray(0, newline + 1))
      rest = rest.subarray(newline + 1)
      atBoundary = true
    }
    if (next !== undefined) {
      current = reader(next)
      currentMax = next
      next = undefined
    }
    if (rest.length === 0) return
    current.emit("data", rest)
    atBoundary = rest[rest.length - 1] === 10
  })
  return {
    setMax: (bytes) => {
      const max = Math.max(1, Math.floor(bytes))
      next = max === currentMax ? undefined : max
    }
  }
}
