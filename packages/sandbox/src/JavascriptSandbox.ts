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
 *   it settled to once pending jobs have run;
 * - `FINAL(value)` of a non-string records the readable form `console.log`
 *   prints (`[1, 2]`, `{ a: 1 }`), not `String(value)` (`"1,2"`, `"[object Object]"`);
 * - host calls are synchronous: they work anywhere in the block's own flow
 *   (including the synchronous part of an async function) but are refused,
 *   with an explanatory error, inside promise jobs (after an `await`);
 * - `print(...)` is an alias of `console.log`.
 *
 * Limits:
 * - `memoryMb` caps the session's WebAssembly memory (context included; the
 *   wasm32 heap cannot exceed 2 GiB): past it QuickJS throws a catchable
 *   `InternalError: out of memory` and the REPL keeps its state.
 * - `execTimeout` per block, through the interrupt handler (time waiting on
 *   host calls is not counted); the REPL keeps its state.
 * - `maxStackSizeBytes` for recursion (`InternalError: stack overflow`).
 *
 * Not promised:
 * - The interpreter runs on the host thread between host calls. A block that
 *   computes blocks the host's event loop (and other sessions) until it ends
 *   or the interrupt handler stops it; native builtins that loop without
 *   polling (e.g. `new Array(1e9).fill(0)`) are bounded only by the memory cap.
 * - If the interpreter itself traps (a C-level recursion such as parsing
 *   100,000 nested brackets exhausts the host's native stack), the step fails
 *   with a `SandboxError` (`Crashed`, `stateLost: true`) and a fresh
 *   interpreter with the context reloaded serves the next block.
 * - The WebAssembly module is compiled once per process with V8's baseline
 *   compiler only (V8 flags set around that compile and restored at once):
 *   optimized code used ~30 KB of native stack per nested JS call.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as internal from "./internal/javascriptSandbox.js"
import type { IsolationMode } from "./Sandbox.js"
import * as Sandbox from "./Sandbox.js"

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
