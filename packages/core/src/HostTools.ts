/**
 * The host functions model code calls, as an `@effect/ai` Toolkit.
 *
 * The built-ins (`llm_query`, `llm_query_batched`, `rlm_query`,
 * `rlm_query_batched`, `budget`) are {@link HostTools}; a run's handlers for
 * them close over its budget and are built per run (`Rlm.ts`). User tools are
 * any other Toolkit, passed as `Rlm.run(q, ctx, { tools })`, whose handlers
 * come from the environment (`MyToolkit.toLayer({...})`).
 *
 * Every tool becomes one {@link Entry}: a `Sandbox.ToolSpec` (the stub the
 * interpreter generates: name, parameters, docstring from the description)
 * and a call that decodes the guest's arguments with the tool's parameters
 * Schema (a bad call fails with `HostCallError`, an exception in model code
 * carrying the decode message), runs the handler, and encodes its value with
 * the tool's success Schema. {@link dispatcher} makes them the session's one
 * `Sandbox.HostCall`.
 *
 * @since 0.2.0
 */
import * as Tool from "@effect/ai/Tool"
import * as Toolkit from "@effect/ai/Toolkit"
import * as Sandbox from "@rlm-runtime/sandbox/Sandbox"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as AST from "effect/SchemaAST"
import type { Totals } from "./Budget.js"
import type { Policy } from "./Policy.js"

/**
 * @since 0.2.0
 * @category Tools
 */
export const LlmQuery = Tool.make("llm_query", {
  description:
    "Ask a sub-model one prompt; returns its reply text. It sees only the prompt: include the text it should read.",
  parameters: { prompt: Schema.String },
  success: Schema.String
})

/**
 * @since 0.2.0
 * @category Tools
 */
export const LlmQueryBatched = Tool.make("llm_query_batched", {
  description: "Ask a sub-model many prompts concurrently; returns the replies in prompt order.",
  parameters: { prompts: Schema.Array(Schema.String) },
  success: Schema.Array(Schema.String)
})

/**
 * @since 0.2.0
 * @category Tools
 */
export const RlmQuery = Tool.make("rlm_query", {
  description: "Start a recursive RLM over the prompt (a task with the data it needs); returns its answer.",
  parameters: { prompt: Schema.String },
  success: Schema.String
})

/**
 * @since 0.2.0
 * @category Tools
 */
export const RlmQueryBatched = Tool.make("rlm_query_batched", {
  description: "Start recursive RLMs over many prompts concurrently; returns the answers in prompt order.",
  parameters: { prompts: Schema.Array(Schema.String) },
  success: Schema.Array(Schema.String)
})

/**
 * What is left of the run tree's limits, as `budget()` returns it; `null`
 * where the policy sets no limit.
 *
 * @since 0.2.0
 * @category Models
 */
export const BudgetLeft = Schema.Struct({
  /** Root steps left to this run (its code blocks' replies). */
  steps: Schema.Number,
  /** Sub-calls (`llm_query` prompts, `rlm_query` children) left to the whole tree. */
  subCalls: Schema.Number,
  inputTokens: Schema.NullOr(Schema.Number),
  outputTokens: Schema.NullOr(Schema.Number),
  totalTokens: Schema.NullOr(Schema.Number),
  costUsd: Schema.NullOr(Schema.Number),
  /** Wall-clock milliseconds left to the tree. */
  timeMs: Schema.NullOr(Schema.Number),
  /** Levels of `rlm_query` left below this run (0: `rlm_query` is a plain `llm_query`). */
  depth: Schema.Number
})

/**
 * @since 0.2.0
 * @category Models
 */
export type BudgetLeft = typeof BudgetLeft.Type

/**
 * @since 0.2.0
 * @category Tools
 */
export const BudgetTool = Tool.make("budget", {
  description:
    "What is left of the run's limits: steps, subCalls, inputTokens, outputTokens, totalTokens, costUsd, timeMs, depth (null/None: no limit). Plan your sub-calls with it.",
  success: BudgetLeft
})

/**
 * The built-in host functions.
 *
 * @since 0.2.0
 * @category Tools
 */
export const HostTools = Toolkit.make(LlmQuery, LlmQueryBatched, RlmQuery, RlmQueryBatched, BudgetTool)

/**
 * The names of the built-in host functions.
 *
 * @since 0.2.0
 * @category Tools
 */
export const BUILTIN_NAMES: ReadonlyArray<string> = Object.keys(HostTools.tools)

/**
 * What is left of each limit, from the tree's totals, this run's step and
 * depth and the tree's elapsed time: `limit - used`, never below 0; `null`
 * for a limit the policy does not set.
 *
 * @since 0.2.0
 * @category Budget
 */
export const budgetLeft = (
  policy: Policy,
  totals: Totals,
  at: { readonly step: number; readonly depth: number; readonly elapsedMs: number }
): BudgetLeft => {
  const left = (limit: number, used: number) => Math.max(0, limit - used)
  const bounded = (limit: number | undefined, used: number) => (limit === undefined ? null : left(limit, used))
  return {
    steps: left(policy.maxSteps, at.step),
    subCalls: left(policy.maxSubCalls, totals.subCalls),
    inputTokens: bounded(policy.maxInputTokens, totals.inputTokens),
    outputTokens: bounded(policy.maxOutputTokens, totals.outputTokens),
    totalTokens: bounded(policy.maxTotalTokens, totals.totalTokens),
    costUsd: bounded(policy.maxCostUsd, totals.costUsd),
    timeMs: bounded(policy.timeoutMs, at.elapsedMs),
    depth: left(policy.maxDepth, at.depth)
  }
}

/**
 * One host function: the stub the interpreter generates, and its call.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Entry<E = never> {
  readonly spec: Sandbox.ToolSpec
  readonly call: (args: unknown) => Effect.Effect<unknown, Sandbox.HostCallError | E>
}

/**
 * The stub of a tool: its name, description, and its parameters (the fields
 * of its parameters Schema, in order; `kinds` says how a stub converts one
 * before it crosses, default `"json"`: as it is).
 *
 * @since 0.2.0
 * @category Tools
 */
export const specOf = (
  tool: Tool.Any,
  kinds: Readonly<Record<string, Sandbox.ToolParameterKind>> = {}
): Sandbox.ToolSpec => ({
  name: tool.name,
  description: Tool.getDescription(tool as any) ?? "",
  parameters: AST.getPropertySignatures(tool.parametersSchema.ast)
    .filter((p) => typeof p.name === "string")
    .map((p) => ({ name: p.name as string, optional: p.isOptional, kind: kinds[p.name as string] ?? "json" }))
})

const hostError = (message: string, cause?: unknown) =>
  new Sandbox.HostCallError(cause === undefined ? { message } : { message, cause })

/** The first issue of a decode failure, in one short line. */
const firstIssue = (error: ParseResult.ParseError): string => {
  try {
    const first = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
    if (first === undefined) return "invalid arguments"
    const at = first.path.length === 0 ? "" : ` at ${first.path.map((p) => String(p).slice(0, 50)).join(".")}`
    const text = first.message.length > 300 ? `${first.message.slice(0, 300)}...` : first.message
    return `${text}${at}`
  } catch {
    return "invalid arguments"
  }
}

/**
 * Decode the guest's arguments with the tool's parameters Schema: a bad call
 * fails with `HostCallError` "<tool>: bad arguments: <first issue>".
 *
 * @since 0.2.0
 * @category Tools
 */
export const decodeArgs = <T extends Tool.Any>(tool: T) => {
  const decode = Schema.decodeUnknownEither(tool.parametersSchema as unknown as Schema.Schema<any, unknown>, {
    errors: "first"
  })
  return (args: unknown): Effect.Effect<Tool.Parameters<T>, Sandbox.HostCallError> => {
    const decoded = Either.try(() => decode(args))
    if (Either.isLeft(decoded)) return Effect.fail(hostError(`${tool.name}: the arguments could not be checked`))
    return Either.isRight(decoded.right)
      ? Effect.succeed(decoded.right.right)
      : Effect.fail(hostError(`${tool.name}: bad arguments: ${firstIssue(decoded.right.left)}`))
  }
}

/**
 * A tool and its handler as one host function: the arguments decoded with the
 * tool's parameters Schema, the value encoded with its success Schema. The
 * handler fails with `HostCallError` (an exception in model code) or with `E`
 * (the block is aborted).
 *
 * @since 0.2.0
 * @category Constructors
 */
export const entry = <T extends Tool.Any, E>(
  tool: T,
  handler: (params: Tool.Parameters<T>) => Effect.Effect<Tool.Success<T>, Sandbox.HostCallError | E>,
  kinds?: Readonly<Record<string, Sandbox.ToolParameterKind>>
): Entry<E> => {
  const decode = decodeArgs(tool)
  const encode = Schema.encodeEither(tool.successSchema as unknown as Schema.Schema<any, unknown>)
  return {
    spec: specOf(tool, kinds),
    call: (args) =>
      Effect.flatMap(Effect.flatMap(decode(args), handler), (value) => {
        const encoded = encode(value)
        return Either.isRight(encoded)
          ? Effect.succeed(encoded.right)
          : Effect.fail(hostError(`${tool.name}: the host's answer does not match its Schema`))
      })
  }
}

/** The message model code sees for a failed user tool: its `message`, else the failure as JSON. */
const failureMessage = (name: string, error: unknown): string => {
  const message = typeof error === "object" && error !== null ? (error as { message?: unknown }).message : undefined
  if (typeof message === "string" && message !== "") return `${name} failed: ${message}`
  try {
    return `${name} failed: ${JSON.stringify(error)?.slice(0, 2000) ?? String(error)}`
  } catch {
    return `${name} failed`
  }
}

/**
 * A user Toolkit's tools as host functions, their handlers taken from the
 * environment. The arguments are decoded with each tool's parameters Schema
 * first (a bad call: `HostCallError` with the decode message), then handed to
 * the toolkit's own `handle`. A handler's failure (its `failure` Schema, or an
 * `AiError` of the toolkit) is an exception in model code carrying its
 * message; a defect is one too (the sandbox reports it).
 *
 * @since 0.2.0
 * @category Constructors
 */
export const fromToolkit = <Tools extends Record<string, Tool.Any>>(
  toolkit: Toolkit.Toolkit<Tools>
): Effect.Effect<ReadonlyArray<Entry>, never, Tool.HandlersFor<Tools>> =>
  Effect.map(
    toolkit,
    (withHandler): ReadonlyArray<Entry> =>
      Object.values(toolkit.tools).map((tool): Entry => {
        const decode = decodeArgs(tool)
        const handle = withHandler.handle as (
          name: string,
          params: unknown
        ) => Effect.Effect<Tool.HandlerResult<any>, unknown>
        return {
          spec: specOf(tool),
          call: (args) =>
            decode(args).pipe(
              Effect.zipRight(
                Effect.mapError(handle(tool.name, args), (error) => hostError(failureMessage(tool.name, error), error))
              ),
              Effect.flatMap((result) =>
                result.isFailure
                  ? Effect.fail(hostError(failureMessage(tool.name, result.result), result.result))
                  : Effect.succeed(result.encodedResult)
              )
            )
        }
      })
  )

/**
 * The session's one host call over these entries, and their stubs.
 *
 * @since 0.2.0
 * @category Constructors
 */
export const dispatcher = <E>(
  entries: ReadonlyArray<Entry<E>>
): { readonly tools: ReadonlyArray<Sandbox.ToolSpec>; readonly call: Sandbox.HostCall<E> } => {
  const byName = new Map(entries.map((e) => [e.spec.name, e]))
  return {
    tools: entries.map((e) => e.spec),
    call: (name, args) => {
      const found = byName.get(name)
      return found === undefined
        ? Effect.fail(hostError(`no host function is called ${name.slice(0, 100)}`))
        : found.call(args)
    }
  }
}

/**
 * Why user tools cannot be used beside the built-ins, or `undefined`: a name
 * taken by a built-in or a REPL helper, two tools of one name, a name that is
 * not an identifier (see `Sandbox.checkTools`).
 *
 * @since 0.2.0
 * @category Tools
 */
export const checkUserTools = (tools: ReadonlyArray<Sandbox.ToolSpec>): string | undefined => {
  for (const tool of tools) {
    if (BUILTIN_NAMES.includes(tool.name) || Sandbox.RESERVED_NAMES.includes(tool.name)) {
      return `the tool name '${tool.name}' clashes with a built-in (${[...new Set([...Sandbox.RESERVED_NAMES, ...BUILTIN_NAMES])].join(", ")})`
    }
  }
  return Sandbox.checkTools(tools)
}
