/**
 * Random Fake scripts and random policies for the run-loop laws.
 *
 * A script is data (root replies made of ```repl blocks calling the host
 * functions, sub-call rules with replies of random lengths) rendered to the
 * strings the `FakeAdapter` consumes. Root replies are shared by the root run
 * and by every child run (the fake hands them out in call order).
 */
import type { FakeAdapter } from "@rlm-runtime/adapters"
import { Trace } from "@rlm-runtime/trace"
import type * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import { FastCheck as fc } from "effect"
import type { Policy } from "../../src/index.js"

export type Stmt =
  | { readonly _tag: "llm"; readonly key: number; readonly pad: number }
  | { readonly _tag: "batch"; readonly keys: ReadonlyArray<number>; readonly pad: number }
  | { readonly _tag: "rlm"; readonly pad: number }
  | { readonly _tag: "rlmBatch"; readonly size: number; readonly pad: number }
  | { readonly _tag: "throw" }
  | { readonly _tag: "final" }

export type Reply =
  | { readonly _tag: "code"; readonly stmts: ReadonlyArray<Stmt>; readonly guarded: boolean }
  | { readonly _tag: "final"; readonly text: string }
  | { readonly _tag: "prose" }

export interface Script {
  readonly replies: ReadonlyArray<Reply>
  /** Reply length of the rule for key k (`k0`..`k3`). */
  readonly ruleLengths: ReadonlyArray<number>
  /** A rule matching every prompt; without it keys 3 fails with NoRuleMatched. */
  readonly catchAll: boolean
}

const stmt = (rlmWeight: number): fc.Arbitrary<Stmt> =>
  fc.oneof(
    { weight: 4, arbitrary: fc.record({ _tag: fc.constant("llm" as const), key: fc.nat(3), pad: fc.nat(200) }) },
    {
      weight: 4,
      arbitrary: fc.record({
        _tag: fc.constant("batch" as const),
        keys: fc.array(fc.nat(3), { maxLength: 10 }),
        pad: fc.nat(120)
      })
    },
    {
      weight: rlmWeight,
      arbitrary: fc.record({ _tag: fc.constant("rlm" as const), pad: fc.nat(100) })
    },
    {
      weight: rlmWeight,
      arbitrary: fc.record({
        _tag: fc.constant("rlmBatch" as const),
        size: fc.integer({ min: 1, max: 3 }),
        pad: fc.nat(60)
      })
    },
    { weight: 1, arbitrary: fc.constant({ _tag: "throw" as const }) },
    { weight: 1, arbitrary: fc.constant({ _tag: "final" as const }) }
  )

const reply = (rlmWeight: number): fc.Arbitrary<Reply> =>
  fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        _tag: fc.constant("code" as const),
        stmts: fc.array(stmt(rlmWeight), { minLength: 1, maxLength: 4 }),
        guarded: fc.boolean()
      })
    },
    {
      weight: 2,
      arbitrary: fc.record({ _tag: fc.constant("final" as const), text: fc.stringMatching(/^[a-z ]{0,30}$/) })
    },
    { weight: 1, arbitrary: fc.constant({ _tag: "prose" as const }) }
  )

/**
 * A random script; with `endsWithFinal` its last reply is always `FINAL(...)`.
 * `rlmWeight` (default 1, of 13 for the other statements) sets how often code
 * starts child RLMs.
 */
export const script = (options: { readonly rlmWeight?: number; readonly endsWithFinal?: boolean } = {}) =>
  fc
    .record({
      replies: fc.array(reply(options.rlmWeight ?? 1), { minLength: 1, maxLength: 7 }),
      ruleLengths: fc.array(fc.nat(400), { minLength: 4, maxLength: 4 }),
      catchAll: fc.boolean(),
      final: options.endsWithFinal ? fc.constant(true) : fc.boolean()
    })
    .map(
      ({ catchAll, final, replies, ruleLengths }): Script => ({
        replies: final ? [...replies, { _tag: "final", text: "the end" }] : replies,
        ruleLengths,
        catchAll
      })
    )

const renderStmt = (s: Stmt, r: number, uid: string): string => {
  switch (s._tag) {
    case "llm":
      return `var r${r} = llm_query('k${s.key} #${uid} ' + 'x'.repeat(${s.pad}))`
    case "batch":
      return `var r${r} = llm_query_batched([${s.keys
        .map((k, j) => `'k${k} #${uid}.${j} ' + 'x'.repeat(${s.pad + j})`)
        .join(", ")}])`
    case "rlm":
      return `var r${r} = rlm_query('task #${uid} ' + 'y'.repeat(${s.pad}))`
    case "rlmBatch":
      return `var r${r} = rlm_query_batched([${Array.from(
        { length: s.size },
        (_, j) => `'task #${uid}.${j} ' + 'y'.repeat(${s.pad + j})`
      ).join(", ")}])`
    case "throw":
      return `throw new Error('model bug #${uid}')`
    case "final":
      return `FINAL('from code #${uid}')`
  }
}

const renderReply = (reply: Reply, i: number): string => {
  if (reply._tag === "final") return `FINAL(${reply.text})`
  if (reply._tag === "prose") return "Let me think about this."
  const lines = reply.stmts.map((st, j) => renderStmt(st, j, `${i}.${j}`))
  const body = reply.guarded ? lines.map((line) => `try { ${line} } catch (e) { console.log('caught: ' + e) }`) : lines
  return ["```repl", ...body, "```"].join("\n")
}

/** The strings and rules a `FakeAdapter` is built with. */
export const render = (s: Script): { readonly script: Array<string>; readonly rules: Array<FakeAdapter.FakeRule> } => ({
  script: s.replies.map(renderReply),
  rules: [
    // k3 has no rule of its own: it fails unless there is a catch-all.
    ...s.ruleLengths.slice(0, 3).map((n, k) => ({ match: `k${k} `, reply: `r${k}:${"z".repeat(n)}` })),
    ...(s.catchAll ? [{ match: "", reply: `any:${"w".repeat(s.ruleLengths[3] ?? 0)}` }] : [])
  ]
})

export type PolicyInput = ConstructorParameters<typeof Policy.Policy>[0]

const maybe = <A>(tight: fc.Arbitrary<A>, loose: fc.Arbitrary<A>): fc.Arbitrary<A | undefined> =>
  fc.oneof(
    { weight: 2, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: tight },
    { weight: 1, arbitrary: loose }
  )

/** A random policy: each limit unset, tight, or loose. */
export const policy: fc.Arbitrary<PolicyInput> = fc
  .record({
    maxSteps: fc.integer({ min: 1, max: 5 }),
    maxSubCalls: fc.oneof(
      { weight: 2, arbitrary: fc.nat(14) },
      { weight: 1, arbitrary: fc.integer({ min: 15, max: 60 }) }
    ),
    maxInputTokens: maybe(fc.nat(3_000), fc.integer({ min: 3_000, max: 40_000 })),
    maxOutputTokens: maybe(fc.nat(300), fc.integer({ min: 300, max: 5_000 })),
    maxTotalTokens: maybe(fc.nat(4_000), fc.integer({ min: 4_000, max: 50_000 })),
    cost: maybe(
      fc.record({
        maxCostUsd: fc.double({ min: 0, max: 0.002, noNaN: true }),
        inputPerMillion: fc.double({ min: 0, max: 3, noNaN: true }),
        outputPerMillion: fc.double({ min: 0, max: 15, noNaN: true })
      }),
      fc.record({
        maxCostUsd: fc.double({ min: 0.002, max: 0.1, noNaN: true }),
        inputPerMillion: fc.double({ min: 0, max: 3, noNaN: true }),
        outputPerMillion: fc.double({ min: 0, max: 15, noNaN: true })
      })
    ),
    concurrency: fc.integer({ min: 1, max: 4 }),
    maxDepth: fc.nat(1),
    onBudgetExceeded: fc.constantFrom("fail" as const, "fail" as const, "answer-now" as const)
  })
  .map(({ cost, maxInputTokens, maxOutputTokens, maxTotalTokens, ...rest }) => ({
    ...rest,
    ...(maxInputTokens !== undefined ? { maxInputTokens } : {}),
    ...(maxOutputTokens !== undefined ? { maxOutputTokens } : {}),
    ...(maxTotalTokens !== undefined ? { maxTotalTokens } : {}),
    ...(cost !== undefined
      ? {
          maxCostUsd: cost.maxCostUsd,
          prices: { fake: { inputPerMillion: cost.inputPerMillion, outputPerMillion: cost.outputPerMillion } }
        }
      : {})
  }))

/** Delete timing fields (`durationMs`, `modelMs`, `timestamp`) at every depth. */
export const withoutTiming = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(withoutTiming)
  if (typeof value === "object" && value !== null) {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) {
      if (k === "durationMs" || k === "modelMs" || k === "timestamp") continue
      out[k] = withoutTiming(v)
    }
    return out
  }
  return value
}

/** The feedback of the one root call `onBudgetExceeded: "answer-now"` grants outside the budget. */
export const isAnswerNowStep = (e: TraceEvent.TraceEvent) =>
  e._tag === "StepCompleted" && (e.feedback ?? "").includes("onBudgetExceeded=answer-now")

/** The model calls recorded in a trace: root steps and sent `llm_query` sub-calls. */
export const callsOf = (trace: Trace.Trace) =>
  trace.events.flatMap(
    (e): Array<{ readonly model: string; readonly usage: TraceEvent.TokenUsage; readonly outsideBudget: boolean }> => {
      if (e._tag === "StepCompleted") return [{ model: e.model, usage: e.usage, outsideBudget: isAnswerNowStep(e) }]
      if (e._tag === "SubCall" && e.kind === "llm_query" && e.reply !== undefined) {
        return [{ model: e.model, usage: e.usage, outsideBudget: false }]
      }
      return []
    }
  )

export const usageSum = (trace: Trace.Trace) => {
  const u = Trace.totalUsage(trace)
  return { input: u.inputTokens ?? 0, output: u.outputTokens ?? 0, total: u.totalTokens ?? 0 }
}
