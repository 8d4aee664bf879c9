/**
 * What the Python sandbox child may send the host, as Schemas. Every line the
 * child writes (fd 5) is decoded by one of these before the host acts on it;
 * nothing of it is trusted (the child runs model code, and a JavaScript escape
 * inside it could write anything). Sizes are capped twice: by the line reader
 * (`maxLineBytes`, before anything is parsed) and here (`maxAnswerChars`,
 * `maxPromptChars`, the output limit cut by the host).
 */
import * as Either from "effect/Either"
import type * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"

/** A count the child reports (characters written, bytes): a non-negative safe integer. */
const Count = Schema.Int.pipe(Schema.nonNegative())

/** @internal */
export const Ready = Schema.Struct({
  t: Schema.Literal("ready"),
  snapshot: Schema.optional(Schema.String.pipe(Schema.maxLength(2000)))
})

/** The envelope of a request's result; its body is decoded by the request's kind. @internal */
export const ResultEnvelope = Schema.Struct({ t: Schema.Literal("result"), id: Schema.Int })

/** The name of a host tool as the child sends it (its arguments are checked by the session). @internal */
export const HostCallName = Schema.String.pipe(Schema.maxLength(100))

/** @internal */
export const Call = Schema.Struct({
  t: Schema.Literal("call"),
  id: Schema.Int,
  name: HostCallName,
  args: Schema.Unknown
})

/** @internal */
export type Call = typeof Call.Type

/** @internal */
export const Crashed = Schema.Struct({ t: Schema.Literal("crashed"), message: Schema.String })

/** @internal */
export const SnapshotAnnounce = Schema.Struct({ t: Schema.Literal("snapshot"), bytes: Count })

/** Every message a REPL child writes, by its `t`. @internal */
export const ChildMessage = Schema.Union(Ready, ResultEnvelope, Call, Crashed)

/** @internal */
export type ChildMessage = typeof ChildMessage.Type

/** The body of an exec result (the final signal is decoded on its own, see {@link FinalWire}). @internal */
export const ExecBody = Schema.Struct({
  stdout: Schema.String,
  stderr: Schema.String,
  /** Characters written in all, as the child counts them (only the marker's count trusts it). */
  stdoutTotal: Schema.optional(Count),
  stderrTotal: Schema.optional(Count),
  error: Schema.optional(Schema.String),
  errorTotal: Schema.optional(Count),
  timedOut: Schema.Boolean
})

/** A final signal as the child sends it; the value's length is checked against the session's cap after. @internal */
export const FinalWire = Schema.Union(
  Schema.Struct({ source: Schema.Literal("FINAL"), value: Schema.String }),
  Schema.Struct({
    source: Schema.Literal("FINAL_VAR"),
    name: Schema.String.pipe(Schema.maxLength(1000)),
    value: Schema.String
  })
)

/** @internal */
export const ContextBody = Schema.Struct({ ok: Schema.Boolean, error: Schema.optional(Schema.String) })

/** A variable read: its string form (`null`: no such variable), or the error reading it. @internal */
export const GetVarBody = Schema.Union(
  Schema.Struct({ value: Schema.NullOr(Schema.String) }),
  Schema.Struct({ error: Schema.String })
)

/** @internal */
export const ListVarsBody = Schema.Union(
  Schema.Struct({
    value: Schema.Array(
      // (Names and type names are cut to 1,000 characters where they are shown.)
      Schema.Struct({ name: Schema.String, type: Schema.String })
    )
  }),
  Schema.Struct({ error: Schema.String })
)

/**
 * Decode `input` with `schema`: the value, or a short description of what is
 * wrong (at most 300 characters). It never throws and never formats the
 * guest's value as a whole: Effect's own formatters print the actual value,
 * recursively, and a value nested 200,000 deep overflows the host's stack.
 *
 * @internal
 */
export const decode = <A, I>(schema: Schema.Schema<A, I>) => {
  const run = Schema.decodeUnknownEither(schema, { errors: "first" })
  return (input: unknown): Either.Either<A, string> => {
    try {
      return Either.mapLeft(run(input), (error) => describe(error.issue, []).slice(0, 300))
    } catch {
      return Either.left("the message could not be checked")
    }
  }
}

/** The first issue, with its path; the actual value only as its kind or a short preview. */
const describe = (issue: ParseResult.ParseIssue, path: ReadonlyArray<PropertyKey>): string => {
  switch (issue._tag) {
    case "Pointer":
      return describe(issue.issue, [...path, ...(Array.isArray(issue.path) ? issue.path : [issue.path])])
    case "Composite": {
      const first = Array.isArray(issue.issues) ? issue.issues[0] : issue.issues
      return first === undefined ? at(path, "invalid") : describe(first as ParseResult.ParseIssue, path)
    }
    case "Refinement":
    case "Transformation":
      return describe(issue.issue, path)
    case "Type":
      return at(path, `expected ${String(issue.ast)}, got ${preview(issue.actual)}`)
    case "Missing":
      return at(path, "is missing")
    case "Unexpected":
      return at(path, "is unexpected")
    case "Forbidden":
      return at(path, "is forbidden")
  }
}

const at = (path: ReadonlyArray<PropertyKey>, message: string) =>
  path.length === 0 ? message : `at ${path.map((p) => JSON.stringify(String(p).slice(0, 50))).join(".")}: ${message}`

const preview = (actual: unknown): string => {
  if (actual === null) return "null"
  if (Array.isArray(actual)) return "an array"
  switch (typeof actual) {
    case "string":
      return JSON.stringify(actual.slice(0, 40)) + (actual.length > 40 ? "..." : "")
    case "number":
    case "boolean":
    case "undefined":
      return String(actual)
    default:
      return `an ${typeof actual}`
  }
}
