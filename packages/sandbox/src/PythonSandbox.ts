/**
 * The Python `Sandbox`: Pyodide on the main thread of a locked-down child
 * Node process (empty environment, `--disallow-code-generation-from-strings`,
 * Node's permission model with read access only to Pyodide and the sandbox
 * runtime). Model code talks to the host only through a synchronous bridge
 * (`llm_query` and friends block on `Atomics.wait` while the host runs the
 * `HostFunctions` Effect). See `docs/sandbox-security.md`.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Pool from "effect/Pool"
import * as Scope from "effect/Scope"
import { resolveWall, type Wall } from "./internal/isolation.js"
import {
  defaultPyodideDir,
  type ProcessOptions,
  type PyProcess,
  spawnProcess,
  startProcess
} from "./internal/pythonProcess.js"
import { checkOpen } from "./internal/hostCall.js"
import { defaultExecTimeout, makeSession } from "./internal/pythonRepl.js"
import { defaultSnapshotDir, snapshotSource } from "./internal/pythonSnapshot.js"
import { type IsolationMode, type OpenOptions, type Repl, Sandbox, SandboxError } from "./Sandbox.js"

/**
 * @since 0.1.0
 * @category Models
 */
export interface Options {
  /**
   * The wall asked for: `"auto"` (default: the OS wall where the machine has
   * bubblewrap or unshare, else the process wall), `"require-namespace"`
   * (building the layer fails with `SandboxError` "StartFailed" without the OS
   * wall), `"process"`. The service's `isolation` says which one it got.
   */
  readonly isolation?: IsolationMode | undefined
  /** Cap on the interpreter's WebAssembly heap, in MiB. Past it Python raises `MemoryError`. Default 2048. */
  readonly memoryMb?: number | undefined
  /** JavaScript heap limit of the interpreter process, in MiB. Default 512. */
  readonly heapMb?: number | undefined
  /** Default per-block execution limit (an `OpenOptions.execTimeout` overrides it). Default 30 s. */
  readonly execTimeout?: Duration.DurationInput | undefined
  /**
   * How long an interrupted block may take to stop before the interpreter is
   * killed and replaced (`SandboxError` "Timeout", `stateLost`). Default 2 s.
   */
  readonly gracePeriod?: Duration.DurationInput | undefined
  /** How long an interpreter may take to start. Default 60 s. */
  readonly startTimeout?: Duration.DurationInput | undefined
  /** The folder holding `pyodide.mjs`. Default: the `pyodide` package this package depends on. */
  readonly pyodideDir?: string | undefined
  /** The Node executable for the child process. Default `process.execPath`. */
  readonly nodePath?: string | undefined
  /**
   * Start interpreters from a memory snapshot of a freshly loaded Pyodide
   * (about 0.6 s instead of 4 s). The snapshot is taken in a locked-down child
   * before any session exists, built once per host process, never fetched
   * from the network; every interpreter restored from it is hardened like a
   * plainly loaded one. If it fails to restore, interpreters load plainly.
   * Default `true`.
   */
  readonly snapshot?: boolean | undefined
  /**
   * Folder caching the snapshot across host processes (created with mode
   * 0700; keep it writable by you only: whoever can write it chooses the
   * interpreter's starting memory). `false`: keep it in memory only.
   * Default `$XDG_CACHE_HOME/rlm-runtime`, else `~/.cache/rlm-runtime`.
   */
  readonly snapshotDir?: string | false | undefined
}

/**
 * @since 0.1.0
 * @category Models
 */
export interface PoolOptions extends Options {
  /** Interpreters kept started and waiting. Each is used by one session, then replaced. */
  readonly size: number
  /**
   * When the replacement of an interpreter a session took starts: this long
   * after the session opened, or sooner, once that session ends or another
   * session opens (that is, once anyone may need it). Starting an
   * interpreter takes about a second of CPU, and a warm session's first
   * blocks would share the CPU with it. Default 2 s; 0 starts it as soon as
   * the session is open.
   */
  readonly replaceAfter?: Duration.DurationInput | undefined
}

const resolve = (options: Options | undefined, wall: Wall) => {
  const processOptions: ProcessOptions = {
    wall,
    memoryMb: options?.memoryMb ?? 2048,
    heapMb: options?.heapMb ?? 512,
    startTimeout: Duration.decode(options?.startTimeout ?? Duration.seconds(60)),
    pyodideDir: options?.pyodideDir ?? defaultPyodideDir(),
    nodePath: options?.nodePath ?? process.execPath
  }
  const snapshotDir = options?.snapshotDir === false ? undefined : (options?.snapshotDir ?? defaultSnapshotDir())
  const snapshots = options?.snapshot === false ? undefined : snapshotSource(processOptions, snapshotDir)
  return {
    start: startProcess(processOptions, snapshots),
    spawn: spawnProcess(processOptions, snapshots),
    // The pool's interpreters: the same snapshot, warmed up while they wait (see `warmUp`).
    spawnWarm: spawnProcess({ ...processOptions, warmUp: true }, snapshots),
    sessionOptions: {
      execTimeout: Duration.decode(options?.execTimeout ?? defaultExecTimeout),
      gracePeriod: Duration.decode(options?.gracePeriod ?? Duration.seconds(2))
    }
  }
}

/**
 * A Python sandbox starting a fresh interpreter for every session (a cold
 * start: about 0.6 s from the memory snapshot, 4–5 s without).
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = (options?: Options): Effect.Effect<Sandbox.Service, SandboxError> =>
  Effect.map(resolveWall(options?.isolation ?? "auto"), (wall) => {
    const { sessionOptions, spawn, start } = resolve(options, wall)
    return Sandbox.of({
      language: "python",
      isolation: wall.isolation,
      open: <E>(open: OpenOptions<E>): Effect.Effect<Repl<E>, SandboxError, Scope.Scope> =>
        Effect.zipRight(
          checkOpen(open),
          Effect.flatMap(start, ({ process, ready }) => makeSession(process, spawn, open, sessionOptions, ready))
        )
    })
  })

/**
 * A Python sandbox with `size` interpreters started ahead of time, so `open`
 * skips the cold start. An interpreter serves one session only: the session
 * takes it out of the pool for good and, once the session is open, a
 * replacement starts in the background, so nothing of one session can be seen
 * by the next.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const makePool = (options: PoolOptions): Effect.Effect<Sandbox.Service, SandboxError, Scope.Scope> =>
  Effect.gen(function* () {
    const wall = yield* resolveWall(options.isolation ?? "auto")
    const { sessionOptions, spawn, spawnWarm } = resolve(options, wall)
    const replaceAfter = Duration.decode(options.replaceAfter ?? Duration.seconds(2))
    // Started ahead of use, so warmed up while waiting: V8 tiers Pyodide's hot
    // functions up then, not in the session's first blocks (a pooled
    // interpreter uses ~1 s more CPU while idle). A replacement within a
    // session (after a crash) is a cold start on the session's path: `spawn`,
    // no warm-up.
    const pool = yield* Pool.make<PyProcess, SandboxError, Scope.Scope>({
      acquire: spawnWarm,
      size: Math.max(1, Math.floor(options.size))
    })
    // The hand-overs not made yet (see `replaceAfter`), and their timers.
    const pending = new Set<Effect.Effect<void>>()
    const timers = yield* FiberSet.make()
    const replaceAllPending = Effect.suspend(() =>
      Effect.forEach([...pending], (handOver) => handOver, { discard: true })
    )
    // The pool's close waits for every interpreter out on lease: a session
    // that outlives this layer still holds one. On close, its lease ends
    // here, with no replacement (the interpreter is the session's already).
    const closing = { value: false }
    const poolClosed = new SandboxError({ reason: "Closed", message: "The Python sandbox pool is closed." })
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closing.value = true
        return replaceAllPending
      })
    )
    return Sandbox.of({
      language: "python",
      isolation: wall.isolation,
      open: <E>(open: OpenOptions<E>): Effect.Effect<Repl<E>, SandboxError, Scope.Scope> =>
        Effect.uninterruptibleMask((restore) =>
          Effect.gen(function* () {
            yield* checkOpen(open)
            if (closing.value) return yield* poolClosed
            // Another session may need an interpreter: start every replacement still waiting.
            yield* replaceAllPending
            // Take an interpreter out of the pool for good: its ownership moves
            // to the session's scope, so nothing of this session is ever seen by
            // another. It is invalidated (the pool then starts a replacement)
            // only once the session is open (`replaceAfter`), so that spawning
            // the replacement (and its CPU-heavy start) stays out of the warm
            // start and the session's first blocks.
            const lease = yield* Scope.make()
            const proc = yield* restore(Pool.get(pool)).pipe(
              Scope.extend(lease),
              Effect.onError(() => Scope.close(lease, Exit.void))
            )
            // A session's interpreter goes back to the pool only as the layer
            // closes (its lease ends, above): never hand it to another session.
            if (proc.transferred) {
              yield* Scope.close(lease, Exit.void)
              return yield* poolClosed
            }
            proc.transferred = true
            yield* Effect.addFinalizer(() => proc.terminate())
            const handOver: Effect.Effect<void> = yield* Effect.once(
              Effect.suspend(() => {
                pending.delete(handOver)
                // (Its Scope is unused: the item is only marked.)
                const release = Scope.close(lease, Exit.void)
                return closing.value
                  ? release
                  : Effect.scoped(Pool.invalidate(pool, proc)).pipe(Effect.zipRight(release))
              }).pipe(Effect.uninterruptible)
            )
            const repl = yield* restore(makeSession(proc, spawn, open, sessionOptions)).pipe(
              Effect.onError(() => handOver)
            )
            if (Duration.toMillis(replaceAfter) <= 0) {
              yield* handOver
            } else {
              pending.add(handOver)
              yield* Effect.addFinalizer(() => handOver)
              // (Forked here, it would inherit this mask: the pool's close waits on an uninterruptible sleep.)
              const timer = yield* FiberSet.run(
                timers,
                Effect.interruptible(Effect.zipRight(Effect.sleep(replaceAfter), handOver))
              )
              yield* Effect.addFinalizer(() => Fiber.interrupt(timer))
            }
            return repl
          })
        )
    })
  })

/**
 * @since 0.1.0
 * @category Layers
 */
export const layer = (options?: Options): Layer.Layer<Sandbox, SandboxError> => Layer.effect(Sandbox, make(options))

/**
 * @since 0.1.0
 * @category Layers
 */
export const layerPool = (options: PoolOptions): Layer.Layer<Sandbox, SandboxError> =>
  Layer.scoped(Sandbox, makePool(options))
