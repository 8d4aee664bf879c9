/**
 * The sandbox service: a persistent, isolated REPL holding the prompt as a
 * variable. A session (`Repl`) is a scoped resource: the interpreter dies when
 * its scope closes.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"

/**
 * @since 0.1.0
 * @category Models
 */
export const Language = Schema.Literal("python", "javascript")

/**
 * @since 0.1.0
 * @category Models
 */
export type Language = typeof Language.Type

/**
 * How the interpreter process is walled off from the machine:
 * - `"namespace"`: inside an OS sandbox (bubblewrap, else `unshare`): its own
 *   network namespace with only its own loopback, its own PID namespace, killed
 *   with its host; with bubblewrap also a read-only view of only what the
 *   interpreter loads. Under that, the process wall below.
 * - `"process"`: a separate, locked-down Node process only (empty environment,
 *   Node's permission model, in-interpreter walls); it can still open network
 *   connections if model code ever escapes the interpreter.
 *
 * @since 0.2.0
 * @category Models
 */
export const Isolation = Schema.Literal("namespace", "process")

/**
 * @since 0.2.0
 * @category Models
 */
export type Isolation = typeof Isolation.Type

/**
 * What a sandbox asks for: `"auto"` (the OS wall where the machine has it,
 * else the process wall), `"require-namespace"` (refuse to start without the
 * OS wall: `SandboxError` "StartFailed"), `"process"` (the process wall only).
 *
 * @since 0.2.0
 * @category Models
 */
export const IsolationMode = Schema.Literal("auto", "require-namespace", "process")

/**
 * @since 0.2.0
 * @category Models
 */
export type IsolationMode = typeof IsolationMode.Type

/**
 * A host function called by model code failed. Model code sees it as an
 * exception carrying `message`; the run loop may also inspect `cause`.
 *
 * @since 0.1.0
 * @category Errors
 */
export class HostCallError extends Data.TaggedError("HostCallError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * The functions model code can call, implemented by the host as Effects.
 * Inside the REPL they look synchronous.
 *
 * @since 0.1.0
 * @category Models
 */
export interface HostFunctions {
  readonly llmQuery: (prompt: string) => Effect.Effect<string, HostCallError>
  /** Replies in prompt order. */
  readonly llmQueryBatched: (prompts: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<string>, HostCallError>
  readonly rlmQuery: (prompt: string) => Effect.Effect<string, HostCallError>
  /** Replies in prompt order. */
  readonly rlmQueryBatched: (prompts: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<string>, HostCallError>
}

/**
 * The prompt as loaded into the REPL. `text` becomes `P`; when `documents` is
 * given, `context` is the list of documents, otherwise `context` is `P`.
 *
 * @since 0.1.0
 * @category Models
 */
export interface ReplContext {
  readonly text: string
  readonly documents?: ReadonlyArray<string> | undefined
}

/**
 * A final answer set from inside model code with `FINAL(value)` or
 * `FINAL_VAR(name)`.
 *
 * @since 0.1.0
 * @category Models
 */
export class FinalSignal extends Schema.Class<FinalSignal>("@rlm-runtime/sandbox/FinalSignal")({
  source: Schema.Literal("FINAL", "FINAL_VAR"),
  name: Schema.optional(Schema.String),
  value: Schema.String
}) {}

/**
 * What one code block did. `stdout`/`stderr` are the views shown to the model,
 * already cut at the output limit (with a marker) when `truncated`.
 *
 * @since 0.1.0
 * @category Models
 */
export class ExecResult extends Schema.Class<ExecResult>("@rlm-runtime/sandbox/ExecResult")({
  stdout: Schema.String,
  stderr: Schema.String,
  /** The traceback / error text when the code raised. */
  error: Schema.optional(Schema.String),
  truncated: Schema.Boolean,
  durationMs: Schema.Number,
  final: Schema.optional(FinalSignal)
}) {}

/**
 * @since 0.1.0
 * @category Models
 */
export interface VarInfo {
  readonly name: string
  readonly type: string
}

/**
 * @since 0.1.0
 * @category Errors
 */
export const SandboxErrorReason = Schema.Literal(
  "StartFailed",
  "Crashed",
  "Timeout",
  "MemoryExceeded",
  "Closed",
  "Protocol"
)

/**
 * The sandbox itself failed (not the model's code, whose exceptions are
 * ordinary `ExecResult.error` output).
 *
 * @since 0.1.0
 * @category Errors
 */
export class SandboxError extends Schema.TaggedError<SandboxError>("@rlm-runtime/sandbox/SandboxError")(
  "SandboxError",
  {
    reason: SandboxErrorReason,
    message: Schema.String,
    /** True when the interpreter was replaced and REPL variables were lost. */
    stateLost: Schema.optionalWith(Schema.Boolean, { default: () => false })
  }
) {}

/**
 * @since 0.1.0
 * @category Models
 */
export interface OpenOptions {
  readonly context: ReplContext
  readonly host: HostFunctions
  /** Characters of stdout/stderr shown to the model per block. Default 20,000. */
  readonly outputLimit?: number | undefined
  /** Per-block execution limit, not counting time waiting on host calls. Default 30 s. */
  readonly execTimeout?: Duration.DurationInput | undefined
  /**
   * Longest final answer (`FINAL(...)` value, `FINAL_VAR` variable) taken from
   * the guest, in characters; a longer one is refused with an error shown to
   * model code. Default {@link DEFAULT_MAX_ANSWER_CHARS}.
   */
  readonly maxAnswerChars?: number | undefined
  /**
   * Longest prompt of one host call (`llm_query` and friends, each prompt of a
   * batch), in characters; a longer one fails that call with an error shown to
   * model code, before the host does anything with it. Default
   * {@link DEFAULT_MAX_PROMPT_CHARS}.
   */
  readonly maxPromptChars?: number | undefined
  /**
   * Longest message line read from the interpreter process, in bytes. A longer
   * one is dropped unread and the request it belonged to fails. Default
   * {@link DEFAULT_MAX_LINE_BYTES}.
   */
  readonly maxLineBytes?: number | undefined
}

/**
 * One REPL session.
 *
 * @since 0.1.0
 * @category Models
 */
export interface Repl {
  readonly language: Language
  /** Run one code block; state persists between calls. */
  readonly exec: (code: string) => Effect.Effect<ExecResult, SandboxError>
  /** The string form of a variable, if it exists. */
  readonly getVar: (name: string) => Effect.Effect<Option.Option<string>, SandboxError>
  /** User variables (not the reserved helpers). */
  readonly listVars: Effect.Effect<ReadonlyArray<VarInfo>, SandboxError>
}

/**
 * @since 0.1.0
 * @category Tags
 */
export class Sandbox extends Context.Tag("@rlm-runtime/sandbox/Sandbox")<Sandbox, Sandbox.Service>() {}

/**
 * @since 0.1.0
 */
export declare namespace Sandbox {
  /**
   * @since 0.1.0
   * @category Models
   */
  export interface Service {
    readonly language: Language
    /** The wall its interpreters run behind (see {@link Isolation}). */
    readonly isolation: Isolation
    /** Open a REPL session with the context loaded once; closed with its scope. */
    readonly open: (options: OpenOptions) => Effect.Effect<Repl, SandboxError, Scope.Scope>
  }
}

/**
 * Default characters of output shown to the model per block.
 *
 * @since 0.1.0
 * @category Constants
 */
export const DEFAULT_OUTPUT_LIMIT = 20_000

/**
 * Default longest final answer taken from the guest, in characters.
 *
 * @since 0.2.0
 * @category Constants
 */
export const DEFAULT_MAX_ANSWER_CHARS = 1_000_000

/**
 * Default longest prompt of one host call, in characters.
 *
 * @since 0.2.0
 * @category Constants
 */
export const DEFAULT_MAX_PROMPT_CHARS = 1_000_000

/**
 * Default longest message line read from an interpreter process: 64 MiB.
 *
 * @since 0.2.0
 * @category Constants
 */
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024

/**
 * Names model code may not rebind: restored after each block.
 *
 * @since 0.1.0
 * @category Constants
 */
export const RESERVED_NAMES: ReadonlyArray<string> = [
  "P",
  "context",
  "peek",
  "tail",
  "lenP",
  "slice",
  "find",
  "chunk",
  "llm_query",
  "llm_query_batched",
  "rlm_query",
  "rlm_query_batched",
  "FINAL",
  "FINAL_VAR",
  "SHOW_VARS"
]
