/**
 * The host's side of one host call, for both sandboxes: the guest's
 * arguments checked (a known tool, an object, every string within
 * `maxPromptChars`, nested at most {@link MAX_ARGS_DEPTH} deep) before the
 * session's `HostCall` sees them, and its outcome turned into the reply the
 * child gets: a JSON text, an error message shown to model code, or an abort
 * of the block.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import { checkTools, type HostCall, type OpenOptions, resolveHost, SandboxError, type ToolSpec } from "../Sandbox.js"

/** How deep a call's arguments may nest. @internal */
export const MAX_ARGS_DEPTH = 64

/** What the child is told: the value as JSON text, an error message, or that the block is aborted. @internal */
export type Reply<E> =
  | { readonly _tag: "Ok"; readonly json: string }
  | { readonly _tag: "Error"; readonly message: string }
  | { readonly _tag: "Abort"; readonly error: E; readonly message: string }

/**
 * Why these arguments are refused, or `undefined`. `count` is the length of a
 * string as the guest counts it (Python: code points), called only on strings
 * longer than `max` UTF-16 units.
 *
 * @internal
 */
export const refuseArgs = (
  tool: string,
  args: unknown,
  max: number,
  count: (text: string) => number = (text) => text.length
): string | undefined => {
  if (args === null || typeof args !== "object" || Array.isArray(args)) {
    return `${tool}: the arguments must be an object by parameter name`
  }
  const stack: Array<readonly [unknown, number, string, number]> = Object.keys(args).map((key) => [
    (args as Record<string, unknown>)[key],
    1,
    key,
    -1
  ])
  while (stack.length > 0) {
    const [value, depth, key, index] = stack.pop() as readonly [unknown, number, string, number]
    if (typeof value === "string") {
      if (value.length <= max) continue
      const n = count(value)
      if (n <= max) continue
      const name = key.slice(0, 100)
      const what =
        depth === 1 ? `the ${name}` : depth === 2 && index >= 0 ? `item ${index} of ${name}` : `a string in ${name}`
      return `${tool}: ${what} has ${n} characters; the limit is ${max}`
    }
    if (value === null || typeof value !== "object") continue
    if (depth >= MAX_ARGS_DEPTH) return `${tool}: the arguments are nested more than ${MAX_ARGS_DEPTH} deep`
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) stack.push([value[i], depth + 1, key, i])
    } else for (const k of Object.keys(value)) stack.push([(value as Record<string, unknown>)[k], depth + 1, key, -1])
  }
  return undefined
}

const describeDefect = (defect: unknown): string =>
  defect instanceof Error ? `${defect.name}: ${defect.message}` : String(defect).slice(0, 1000)

const toJson = (value: unknown): string | undefined => {
  try {
    return JSON.stringify(value === undefined ? null : value)
  } catch {
    return undefined
  }
}

/**
 * Run one host call to its reply; never fails. A failure other than
 * `HostCallError` aborts the block; a defect or an interruption is an error
 * shown to model code.
 *
 * @internal
 */
export const hostReply = <E>(
  call: HostCall<E>,
  tools: ReadonlyMap<string, ToolSpec>,
  name: string,
  args: unknown,
  maxPromptChars: number,
  count?: (text: string) => number
): Effect.Effect<Reply<E>> =>
  Effect.suspend(() => {
    if (!tools.has(name)) return Effect.succeed<Reply<E>>({ _tag: "Error", message: "invalid host call" })
    const refused = refuseArgs(name, args, maxPromptChars, count)
    if (refused !== undefined) return Effect.succeed<Reply<E>>({ _tag: "Error", message: refused })
    return Effect.map(Effect.exit(Effect.suspend(() => call(name, args))), (exit): Reply<E> => {
      if (Exit.isSuccess(exit)) {
        const json = toJson(exit.value)
        return json === undefined
          ? { _tag: "Error", message: `${name}: the host's answer is not a JSON value` }
          : { _tag: "Ok", json }
      }
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) {
        const error = failure.value
        if (isHostCallError(error)) return { _tag: "Error", message: error.message }
        return { _tag: "Abort", error: error as E, message: messageOf(error) }
      }
      const defect = Cause.dieOption(exit.cause)
      return {
        _tag: "Error",
        message: Option.isSome(defect)
          ? `host call failed: ${describeDefect(defect.value)}`
          : "the host call was interrupted"
      }
    })
  })

const isHostCallError = (u: unknown): u is { readonly message: string } =>
  typeof u === "object" && u !== null && (u as { _tag?: unknown })._tag === "HostCallError"

const messageOf = (u: unknown): string => {
  const message = typeof u === "object" && u !== null ? (u as { message?: unknown }).message : undefined
  return typeof message === "string" ? message : "the host aborted the block"
}

/**
 * Refuse a session whose tools cannot be installed (see `checkTools`), before
 * an interpreter is started for it.
 *
 * @internal
 */
export const checkOpen = <E>(open: OpenOptions<E>): Effect.Effect<void, SandboxError> =>
  Effect.suspend(() => {
    const invalid = checkTools(resolveHost(open).tools)
    return invalid === undefined
      ? Effect.void
      : Effect.fail(
          new SandboxError({ reason: "StartFailed", message: `The host tools cannot be installed: ${invalid}` })
        )
  })
