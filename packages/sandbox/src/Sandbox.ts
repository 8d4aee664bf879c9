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
import * as Effect from "effect/Effect"
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
 * The four sub-call functions of 0.1, implemented by the host as Effects.
 * Inside the REPL they look synchronous. Still accepted as
 * `OpenOptions.host`: they are adapted into one {@link HostCall} over
 * {@link BUILTIN_TOOLS} (see {@link fromHostFunctions}).
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
 * How the guest stub treats an argument before it crosses to the host:
 * - `"string"`: converted to a string (`str(x)`, `String(x)`);
 * - `"strings"`: a list (not a single string) whose items are converted to strings;
 * - `"json"`: sent as it is, as JSON (the host's Schema decides what it accepts).
 *
 * @since 0.2.0
 * @category Models
 */
export type ToolParameterKind = "string" | "strings" | "json"

/**
 * One parameter of a host tool, in call order.
 *
 * @since 0.2.0
 * @category Models
 */
export interface ToolParameter {
  readonly name: string
  /** May be left out; a Python stub gives it a default, a JavaScript stub leaves it `undefined`. */
  readonly optional: boolean
  readonly kind: ToolParameterKind
}

/**
 * A host function as the guest sees it: a stub of this name and these
 * parameters is generated in the interpreter at session start, with the
 * description as its docstring. A call sends `{ [parameter]: value }` (the
 * arguments given) to the host's {@link HostCall}, as JSON.
 *
 * @since 0.2.0
 * @category Models
 */
export interface ToolSpec {
  readonly name: string
  readonly description: string
  readonly parameters: ReadonlyArray<ToolParameter>
}

/**
 * The one entry of every host call: the tool's name and its arguments (an
 * object by parameter name, decoded from the guest's JSON: check it before
 * use). It answers a JSON-able value, or fails:
 * - with `HostCallError`: model code sees an exception carrying its message,
 *   and the block goes on;
 * - with any other error `E`: the block is aborted (model code cannot catch
 *   it, and makes no more host calls) and `Repl.exec` fails with that error.
 *
 * A defect is shown to model code as an exception.
 *
 * @since 0.2.0
 * @category Models
 */
export type HostCall<E = never> = (name: string, args: unknown) => Effect.Effect<unknown, HostCallError | E>

const stringParam = (name: string, kind: ToolParameterKind): ToolParameter => ({ name, optional: false, kind })

/**
 * The stubs of the four sub-call functions, as {@link HostFunctions} serves
 * them: `llm_query(prompt)`, `llm_query_batched(prompts)`, `rlm_query(prompt)`,
 * `rlm_query_batched(prompts)`.
 *
 * @since 0.2.0
 * @category Constants
 */
export const BUILTIN_TOOLS: ReadonlyArray<ToolSpec> = [
  {
    name: "llm_query",
    description: "Ask a sub-model; returns its reply text.",
    parameters: [stringParam("prompt", "string")]
  },
  {
    name: "llm_query_batched",
    description: "Ask a sub-model many prompts concurrently; replies in prompt order.",
    parameters: [stringParam("prompts", "strings")]
  },
  {
    name: "rlm_query",
    description: "Ask a recursive RLM; returns its answer.",
    parameters: [stringParam("prompt", "string")]
  },
  {
    name: "rlm_query_batched",
    description: "Ask recursive RLMs many prompts concurrently; answers in prompt order.",
    parameters: [stringParam("prompts", "strings")]
  }
]

const argOf = (args: unknown, key: string): unknown =>
  args !== null && typeof args === "object" && !Array.isArray(args) ? (args as Record<string, unknown>)[key] : undefined

/**
 * {@link HostFunctions} as one {@link HostCall} over {@link BUILTIN_TOOLS}:
 * a call of another name, or whose prompt is not a string (a batch, not a
 * list of strings), fails with `HostCallError` before any function runs.
 *
 * @since 0.2.0
 * @category Constructors
 */
export const fromHostFunctions =
  (host: HostFunctions): HostCall =>
  (name, args) => {
    const single = (run: (prompt: string) => Effect.Effect<string, HostCallError>) => {
      const prompt = argOf(args, "prompt")
      return typeof prompt === "string"
        ? run(prompt)
        : Effect.fail(new HostCallError({ message: `${name}: the prompt must be a string` }))
    }
    const batch = (run: (prompts: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<string>, HostCallError>) => {
      const prompts = argOf(args, "prompts")
      if (!Array.isArray(prompts) || !prompts.every((p) => typeof p === "string")) {
        return Effect.fail(new HostCallError({ message: `${name}: a batch must be a list of strings` }))
      }
      return Effect.flatMap(run(prompts), (replies) =>
        replies.length === prompts.length
          ? Effect.succeed(replies.map(String))
          : Effect.fail(
              new HostCallError({
                message: `${name}: the host returned ${replies.length} replies for ${prompts.length} prompts`
              })
            )
      )
    }
    switch (name) {
      case "llm_query":
        return single(host.llmQuery)
      case "rlm_query":
        return single(host.rlmQuery)
      case "llm_query_batched":
        return batch(host.llmQueryBatched)
      case "rlm_query_batched":
        return batch(host.rlmQueryBatched)
      default:
        return Effect.fail(new HostCallError({ message: `no host function is called ${name.slice(0, 100)}` }))
    }
  }

/** Python keywords and soft keywords, and JavaScript reserved words: never a tool or parameter name. */
const KEYWORDS = new Set(
  (
    "False None True and as assert async await break class continue def del elif else except finally for from " +
    "global if import in is lambda nonlocal not or pass raise return try while with yield match case type " +
    "arguments case catch const debugger default delete do enum eval export extends false function implements " +
    "instanceof interface let new null package private protected public static super switch this throw true " +
    "typeof undefined var void NaN Infinity"
  ).split(" ")
)
const IDENTIFIER = /^[A-Za-z][A-Za-z0-9_]{0,63}$/

/**
 * Why these tool specs cannot be installed, or `undefined`: every name and
 * parameter name must be an identifier in both languages (letters, digits,
 * `_`, a letter first, at most 64 characters, no keyword), no tool may take a
 * reserved name (`RESERVED_NAMES`: `P`, the helpers) or another tool's name,
 * and no tool may have two parameters of one name.
 *
 * @since 0.2.0
 * @category Validation
 */
export const checkTools = (tools: ReadonlyArray<ToolSpec>): string | undefined => {
  const seen = new Set<string>()
  for (const tool of tools) {
    const name = String(tool.name)
    if (!IDENTIFIER.test(name) || KEYWORDS.has(name)) {
      return `the tool name '${name.slice(0, 100)}' is not an identifier in Python and JavaScript (letters, digits and _, a letter first, at most 64 characters, no keyword)`
    }
    if (seen.has(name)) return `two tools are called '${name}'`
    if (HELPER_NAMES.includes(name)) {
      return `the tool name '${name}' is taken by a REPL helper (${HELPER_NAMES.join(", ")})`
    }
    seen.add(name)
    const params = new Set<string>()
    for (const p of tool.parameters) {
      const pname = String(p.name)
      if (!IDENTIFIER.test(pname) || KEYWORDS.has(pname)) {
        return `the parameter '${pname.slice(0, 100)}' of the tool '${name}' is not an identifier in Python and JavaScript`
      }
      if (params.has(pname)) return `the tool '${name}' has two parameters called '${pname}'`
      params.add(pname)
    }
  }
  return undefined
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
export interface OpenOptions<E = never> {
  readonly context: ReplContext
  /**
   * What model code's host calls reach: one {@link HostCall} for every tool
   * of `tools`, or (as in 0.1) the four {@link HostFunctions} over
   * {@link BUILTIN_TOOLS}.
   */
  readonly host: HostCall<E> | HostFunctions
  /**
   * The host tools stubbed in the interpreter (see {@link checkTools}).
   * Default {@link BUILTIN_TOOLS}. An invalid list fails `open` with
   * `SandboxError` "StartFailed".
   */
  readonly tools?: ReadonlyArray<ToolSpec> | undefined
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
   * Longest string in the arguments of one host call (the prompt of
   * `llm_query`, each prompt of a batch, any string of a tool's arguments),
   * in characters; a longer one fails that call with an error shown to model
   * code, before the host does anything with it. Default
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
export interface Repl<E = never> {
  readonly language: Language
  /**
   * Run one code block; state persists between calls. Fails with `E` when a
   * host call failed with it (the block was aborted; see {@link HostCall}).
   */
  readonly exec: (code: string) => Effect.Effect<ExecResult, SandboxError | E>
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
    readonly open: <E = never>(options: OpenOptions<E>) => Effect.Effect<Repl<E>, SandboxError, Scope.Scope>
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

/** The names the interpreter itself defines (not host tools). */
const HELPER_NAMES: ReadonlyArray<string> = [
  "P",
  "context",
  "peek",
  "tail",
  "lenP",
  "slice",
  "find",
  "chunk",
  "FINAL",
  "FINAL_VAR",
  "SHOW_VARS"
]

/**
 * Names model code may not rebind: restored after each block. The names of a
 * session's tools are reserved too (see {@link reservedNames}).
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

/**
 * The names model code may not rebind in a session with these tools:
 * {@link RESERVED_NAMES} and the tools' names.
 *
 * @since 0.2.0
 * @category Constants
 */
export const reservedNames = (tools: ReadonlyArray<ToolSpec>): ReadonlyArray<string> => [
  ...new Set([...RESERVED_NAMES, ...tools.map((t) => t.name)])
]

/**
 * The session's host call and tools from its options: {@link HostFunctions}
 * adapted, the tools defaulted to {@link BUILTIN_TOOLS}.
 *
 * @since 0.2.0
 * @category Constructors
 */
export const resolveHost = <E>(
  options: OpenOptions<E>
): { readonly call: HostCall<E>; readonly tools: ReadonlyArray<ToolSpec> } => ({
  call: typeof options.host === "function" ? options.host : fromHostFunctions(options.host),
  tools: options.tools ?? BUILTIN_TOOLS
})
