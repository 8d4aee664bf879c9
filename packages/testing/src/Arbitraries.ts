/**
 * `Arbitrary`s for property tests of an RLM app: policies, contexts, queries
 * and scripted runs (a Fake script of root replies with fenced blocks of
 * trivial code, sub-calls and a final answer, in the sandbox's language).
 *
 * Policies and contexts are derived from Schemas (`Arbitrary.make`), bounded
 * so that every run stays small: a few steps, a few sub-calls, short texts.
 *
 * @since 0.2.0
 */
import * as FakeAdapter from "@rlm-runtime/adapters/FakeAdapter"
import * as Policy from "@rlm-runtime/core/Policy"
import type * as RlmContext from "@rlm-runtime/core/RlmContext"
import * as Arbitrary from "effect/Arbitrary"
import * as FastCheck from "effect/FastCheck"
import * as Schema from "effect/Schema"
import type * as RlmTest from "./RlmTest.js"

/**
 * The bounded part of a `Policy` the {@link policy} Arbitrary draws. The
 * limits a replay cannot reproduce are left at their defaults: wall-clock
 * limits (`timeoutMs`, `callTimeoutMs`) depend on the machine, and a
 * concurrency above 1 lets concurrent child runs race for a shared budget, so
 * which of them meets a limit first is the scheduler's choice.
 *
 * @since 0.2.0
 * @category Schemas
 */
export const PolicyFields = Schema.Struct({
  maxSteps: Schema.Int.pipe(Schema.between(1, 6)),
  maxSubCalls: Schema.Int.pipe(Schema.between(0, 30)),
  maxTotalTokens: Schema.optional(Schema.Int.pipe(Schema.between(0, 30_000))),
  maxDepth: Schema.Literal(0, 1),
  concurrency: Schema.Literal(1),
  onBudgetExceeded: Schema.Literal("fail", "answer-now")
})

/**
 * @since 0.2.0
 * @category Schemas
 */
export type PolicyFields = typeof PolicyFields.Type

/**
 * A small `Policy`: each run it governs stays short, and some limits are
 * tight enough to be hit.
 *
 * @since 0.2.0
 * @category Arbitraries
 */
export const policy: FastCheck.Arbitrary<Policy.Policy> = Arbitrary.make(PolicyFields).map((fields) =>
  Policy.make(fields)
)

/**
 * A context: a text of up to 2,000 characters, or up to 4 documents.
 *
 * @since 0.2.0
 * @category Schemas
 */
export const ContextInput = Schema.Union(
  Schema.String.pipe(Schema.maxLength(2_000)),
  Schema.Array(Schema.String.pipe(Schema.maxLength(400))).pipe(Schema.minItems(1), Schema.maxItems(4))
)

/**
 * @since 0.2.0
 * @category Arbitraries
 */
export const context: FastCheck.Arbitrary<RlmContext.Input> = Arbitrary.make(ContextInput)

/**
 * A question: 1 to 80 characters.
 *
 * @since 0.2.0
 * @category Arbitraries
 */
export const query: FastCheck.Arbitrary<string> = Arbitrary.make(
  Schema.String.pipe(Schema.minLength(1), Schema.maxLength(80))
)

/**
 * One statement of model code: a sub-call, a batch of sub-calls, a child run
 * (`rlm_query`) or a print.
 *
 * @since 0.2.0
 * @category Models
 */
export type Statement =
  | { readonly _tag: "llm"; readonly key: number; readonly pad: number }
  | { readonly _tag: "batch"; readonly keys: ReadonlyArray<number>; readonly pad: number }
  | { readonly _tag: "rlm"; readonly pad: number }
  | { readonly _tag: "print"; readonly text: string }

/**
 * One root reply: a fenced block of statements, or a final answer.
 *
 * @since 0.2.0
 * @category Models
 */
export type ScriptedReply =
  | { readonly _tag: "code"; readonly statements: ReadonlyArray<Statement> }
  | { readonly _tag: "final"; readonly text: string }

const word = FastCheck.stringMatching(/^[a-z][a-z ]{0,20}$/)

const statement = (childRuns: boolean): FastCheck.Arbitrary<Statement> =>
  FastCheck.oneof(
    {
      weight: 4,
      arbitrary: FastCheck.record({
        _tag: FastCheck.constant("llm" as const),
        key: FastCheck.nat(2),
        pad: FastCheck.nat(80)
      })
    },
    {
      weight: 3,
      arbitrary: FastCheck.record({
        _tag: FastCheck.constant("batch" as const),
        keys: FastCheck.array(FastCheck.nat(2), { minLength: 1, maxLength: 4 }),
        pad: FastCheck.nat(40)
      })
    },
    {
      weight: childRuns ? 2 : 0,
      arbitrary: FastCheck.record({ _tag: FastCheck.constant("rlm" as const), pad: FastCheck.nat(40) })
    },
    { weight: 1, arbitrary: FastCheck.record({ _tag: FastCheck.constant("print" as const), text: word }) }
  )

const scriptedReply = (childRuns: boolean): FastCheck.Arbitrary<ScriptedReply> =>
  FastCheck.oneof(
    {
      weight: 5,
      arbitrary: FastCheck.record({
        _tag: FastCheck.constant("code" as const),
        statements: FastCheck.array(statement(childRuns), { minLength: 1, maxLength: 3 })
      })
    },
    { weight: 1, arbitrary: FastCheck.record({ _tag: FastCheck.constant("final" as const), text: word }) }
  )

const quote = (text: string) => `'${text}'`

const renderStatement = (s: Statement, i: number, uid: string, language: RlmTest.Language): string => {
  const js = language === "js"
  const pad = (char: string, n: number) => (js ? `${quote(char)}.repeat(${n})` : `${quote(char)} * ${n}`)
  const bind = (expr: string) => (js ? `var r${i} = ${expr}` : `r${i} = ${expr}`)
  switch (s._tag) {
    case "llm":
      return bind(`llm_query(${quote(`k${s.key} #${uid} `)} + ${pad("x", s.pad)})`)
    case "batch":
      return bind(
        `llm_query_batched([${s.keys.map((k, j) => `${quote(`k${k} #${uid}.${j} `)} + ${pad("x", s.pad + j)}`).join(", ")}])`
      )
    case "rlm":
      return bind(`rlm_query(${quote(`task #${uid} `)} + ${pad("y", s.pad)})`)
    case "print":
      return js ? `console.log(${quote(s.text)})` : `print(${quote(s.text)})`
  }
}

/**
 * The text of a scripted reply in a language (`"js"` or `"python"`).
 *
 * @since 0.2.0
 * @category Rendering
 */
export const renderReply = (reply: ScriptedReply, index: number, language: RlmTest.Language): string =>
  reply._tag === "final"
    ? `FINAL(${reply.text})`
    : ["```repl", ...reply.statements.map((s, j) => renderStatement(s, j, `${index}.${j}`, language)), "```"].join("\n")

/**
 * @since 0.2.0
 * @category Models
 */
export interface ScriptedRunOptions {
  /** `"js"` (default) or `"python"`: the language of the code blocks. */
  readonly language?: RlmTest.Language | undefined
  /** Whether code starts child runs (`rlm_query`); default `true`. */
  readonly childRuns?: boolean | undefined
}

/**
 * A scripted run: a `FakeAdapter.FakeScript` whose root replies are 0 to 4
 * fenced blocks of trivial code (sub-calls, batches, child runs, prints) and
 * then a `FINAL(...)` answer, followed by a few more final answers for the
 * child runs (root replies are shared by the root run and its children, in
 * call order). Sub-calls are answered by rules of random lengths, and a
 * catch-all rule answers the rest.
 *
 * @since 0.2.0
 * @category Arbitraries
 */
export const scriptedRun = (options: ScriptedRunOptions = {}): FastCheck.Arbitrary<FakeAdapter.FakeScript> => {
  const language = options.language ?? "js"
  return FastCheck.record({
    replies: FastCheck.array(scriptedReply(options.childRuns ?? true), { maxLength: 4 }),
    answer: word,
    ruleLengths: FastCheck.array(FastCheck.nat(300), { minLength: 3, maxLength: 3 })
  }).map(
    ({ answer, replies, ruleLengths }) =>
      new FakeAdapter.FakeScript({
        script: [
          ...replies.map((reply, i) => renderReply(reply, i, language)),
          `FINAL(${answer})`,
          ...Array.from({ length: 8 }, (_, i) => `FINAL(child answer ${i})`)
        ],
        rules: [
          ...ruleLengths.map((n, k) => new FakeAdapter.FakeRule({ match: `k${k} `, reply: `r${k}:${"z".repeat(n)}` })),
          new FakeAdapter.FakeRule({ match: "", reply: "any" })
        ]
      })
  )
}

/**
 * Everything one recorded run of a property is made of: a question, a
 * context, a scripted run and a policy.
 *
 * @since 0.2.0
 * @category Models
 */
export interface RunInput {
  readonly query: string
  readonly context: RlmContext.Input
  readonly script: FakeAdapter.FakeScript
  readonly policy: Policy.Policy
}

/**
 * A {@link RunInput}: {@link query}, {@link context}, {@link scriptedRun} and
 * {@link policy}.
 *
 * @since 0.2.0
 * @category Arbitraries
 */
export const runInput = (options: ScriptedRunOptions = {}): FastCheck.Arbitrary<RunInput> =>
  FastCheck.record({ query, context, script: scriptedRun(options), policy })
