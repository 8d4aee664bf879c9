/**
 * The JavaScript sandbox: a `Sandbox` Layer on QuickJS compiled to
 * WebAssembly (quickjs-emscripten, asyncify build), so that `llm_query(...)`
 * looks synchronous to model code while the host runs the `HostFunctions`
 * Effect.
 *
 * Each session's interpreter runs in its own child Node process, locked down
 * like the Python sandbox's (empty environment, no code generation from
 * strings, Node's permission model reading only QuickJS and the sandbox
 * runtime, no child processes or workers) and started inside the OS wall
 * where the machine has one (the service's `isolation` says which). The host
 * and the child talk over pipes carrying JSON lines; every line is capped
 * (`OpenOptions.maxLineBytes`) and every message decoded with a Schema capped
 * in size (`maxAnswerChars`, `maxPromptChars`); the output limit is cut by the
 * host. Model code sees only the ECMAScript builtins plus the REPL helpers: no
 * `process`, `require`, `import`, `std`/`os` modules, timers or network.
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
 * Promised:
 * - No guest code (a getter, a Proxy trap, a `toString`, a promise job, an
 *   endless loop) runs on the host's thread: the host's event loop is never
 *   blocked by it.
 * - `memoryMb` caps the session's WebAssembly memory (context included; the
 *   wasm32 heap cannot exceed 2 GiB): past it QuickJS throws a catchable
 *   `InternalError: out of memory` and the REPL keeps its state. The whole
 *   process is capped too, where the OS wall gives a memory limit.
 * - `execTimeout` per block, through the interrupt handler in the child (time
 *   waiting on host calls is not counted); the REPL keeps its state. A block
 *   that does not stop (a native builtin that never polls) is killed with its
 *   process at the limit + `gracePeriod`: `SandboxError` "Timeout",
 *   `stateLost: true`.
 * - `maxStackSizeBytes` for recursion (`InternalError: stack overflow`).
 * - If the interpreter itself breaks (a C-level recursion such as parsing
 *   100,000 nested brackets exhausts the native stack), its process exits: the
 *   step fails with a `SandboxError` (`Crashed`, `stateLost: true`) and a fresh
 *   interpreter with the context reloaded serves the next block. A process
 *   killed from outside is reported the same way, once.
 * - The child dies with its host (its stdin closes; inside the OS wall also
 *   the wall's parent-death signal; in an endless block, the interrupt handler
 *   notices the re-parenting within 100 ms).
 *
 * Not promised:
 * - A final answer or prompt over the caps is refused with an error shown to
 *   model code, never truncated silently.
 * - Without the OS wall (`isolation: "process"`), an escape from QuickJS into
 *   the child's JavaScript could open network connections (Node's permission
 *   model does not gate sockets); QuickJS offers model code no socket API.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as internal from "./internal/javascriptSandbox.js"
import type { IsolationMode, SandboxError } from "./Sandbox.js"
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
  /**
   * How long an interrupted block may take to stop before the interpreter is
   * killed and replaced (`SandboxError` "Timeout", `stateLost`). Default 2 s.
   *
   * @since 0.2.0
   */
  readonly gracePeriod?: Duration.DurationInput | undefined
  /**
   * How long an interpreter may take to start and load the context. Default 30 s.
   *
   * @since 0.2.0
   */
  readonly startTimeout?: Duration.DurationInput | undefined
  /**
   * The Node executable for the child process. Default `process.execPath`.
   *
   * @since 0.2.0
   */
  readonly nodePath?: string | undefined
}

/**
 * Options whose `isolation` cannot fail to resolve.
 *
 * @since 0.2.0
 * @category Models
 */
export interface LenientOptions extends Options {
  readonly isolation?: "auto" | "process" | undefined
}

/**
 * The service, built from options. With `isolation: "require-namespace"` it
 * fails with `SandboxError` "StartFailed" where the machine has no OS wall.
 *
 * @since 0.1.0
 * @category Constructors
 */
export function make(options?: LenientOptions): Effect.Effect<Sandbox.Sandbox.Service>
export function make(options: Options): Effect.Effect<Sandbox.Sandbox.Service, SandboxError>
export function make(options: Options = {}): Effect.Effect<Sandbox.Sandbox.Service, SandboxError> {
  // "auto" and "process" always resolve (to the process wall at worst).
  return internal.make(options)
}

/**
 * @since 0.1.0
 * @category Layers
 */
export function layer(options?: LenientOptions): Layer.Layer<Sandbox.Sandbox>
export function layer(options: Options): Layer.Layer<Sandbox.Sandbox, SandboxError>
export function layer(options: Options = {}): Layer.Layer<Sandbox.Sandbox, SandboxError> {
  return Layer.effect(Sandbox.Sandbox, make(options))
}
