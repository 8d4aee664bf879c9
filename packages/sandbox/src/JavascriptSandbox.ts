/**
 * The JavaScript sandbox: a `Sandbox` Layer on QuickJS compiled to
 * WebAssembly (quickjs-emscripten, asyncify build), so that `llm_query(...)`
 * looks synchronous to model code while the host runs the `HostFunctions`
 * Effect.
 *
 * Each session is its own WebAssembly instance (its own heap, runtime and
 * context), created when the session opens and disposed when its scope
 * closes. Model code sees only the ECMAScript builtins plus the REPL helpers:
 * no `process`, `require`, `import`, `std`/`os` modules, timers or network.
 *
 * Differences from the Python sandbox, by design of the language:
 * - offsets (`find`, `slice`, `chunk`, `lenP`) are UTF-16 code units;
 * - reserved names are read-only: assigning one throws a `TypeError`
 *   (in Python the rebinding is undone after the block);
 * - top-level `let`/`const`/`class` are treated like `var`, so re-running a cell
 *   that declares `const x` works and `x` is visible in later blocks;
 * - the echoed value of a last expression is its completion value (as in the
 *   Node REPL); strings are echoed quoted, and a Promise is echoed as the value
 *   it settled to once pending jobs have run.
 *
 * Limits: `memoryMb` (QuickJS allocator limit; the WebAssembly heap cannot
 * exceed 2 GiB), `execTimeout` per block (interrupt handler; time waiting on
 * host calls is not counted; the REPL keeps its state), `maxStackSizeBytes`.
 * The interpreter runs on the host thread between host calls: the interrupt
 * handler bounds it. If the interpreter itself traps (e.g. a deeply nested
 * parse exhausting the host's native stack), the step fails with a
 * `SandboxError` (`Crashed`, `stateLost: true`) and a fresh interpreter with the
 * context reloaded serves the next block.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as internal from "./internal/javascriptSandbox.js"
import * as Sandbox from "./Sandbox.js"

/**
 * @since 0.1.0
 * @category Models
 */
export interface Options {
  /** Memory limit of each session's interpreter, in MiB. Default 2048 (the WebAssembly heap maximum). */
  readonly memoryMb?: number | undefined
  /**
   * Per-block execution limit (time waiting on host calls excluded). Default
   * 30 s; `OpenOptions.execTimeout` overrides it per session.
   */
  readonly execTimeout?: Duration.DurationInput | undefined
  /** QuickJS stack limit in bytes. Default 128 KiB (~680 nested calls). */
  readonly maxStackSizeBytes?: number | undefined
}

/**
 * The service, built from options.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = (options: Options = {}): Effect.Effect<Sandbox.Sandbox.Service> =>
  Effect.sync(() => internal.make(options))

/**
 * @since 0.1.0
 * @category Layers
 */
export const layer = (options: Options = {}): Layer.Layer<Sandbox.Sandbox> =>
  Layer.effect(Sandbox.Sandbox, make(options))
