import { assert, describe, it } from "@effect/vitest"
import { FastCheck } from "effect"
import * as TraceEvent from "../src/TraceEvent.js"

const field = FastCheck.option(FastCheck.nat(1_000_000), { nil: undefined })
const usage = FastCheck.record({ inputTokens: field, outputTokens: field, totalTokens: field }).map((u) => {
  const out: { inputTokens?: number; outputTokens?: number; totalTokens?: number } = {}
  if (u.inputTokens !== undefined) out.inputTokens = u.inputTokens
  if (u.outputTokens !== undefined) out.outputTokens = u.outputTokens
  if (u.totalTokens !== undefined) out.totalTokens = u.totalTokens
  return out
})

describe("TraceEvent.addUsage", () => {
  it.prop("is commutative and associative, with {} as identity", [usage, usage, usage], ([a, b, c]) => {
    assert.deepStrictEqual(TraceEvent.addUsage(a, b), TraceEvent.addUsage(b, a))
    assert.deepStrictEqual(
      TraceEvent.addUsage(TraceEvent.addUsage(a, b), c),
      TraceEvent.addUsage(a, TraceEvent.addUsage(b, c))
    )
    assert.deepStrictEqual(TraceEvent.addUsage(a, {}), a)
  })

  it("keeps a field unknown unless some side reports it, and never counts unknown as zero", () => {
    assert.deepStrictEqual(TraceEvent.addUsage({}, {}), {})
    assert.deepStrictEqual(TraceEvent.addUsage({ inputTokens: 3 }, { outputTokens: 4 }), {
      inputTokens: 3,
      outputTokens: 4
    })
    assert.deepStrictEqual(TraceEvent.addUsage({ inputTokens: 3 }, { inputTokens: 4 }), { inputTokens: 7 })
  })
})
