import { assert, describe, it } from "@effect/vitest"
import { FastCheck as fc, Schema } from "effect"
import { Prompts, Protocol, Step } from "../src/index.js"

/** The pure step, with no sandbox and no model: replies, block outcomes and variable reads are plain values. */

const config = (patch: Partial<Step.Config> = {}): Step.Config => ({
  query: "q",
  language: "python",
  maxSteps: 50,
  maxConsecutiveErrors: 100,
  maxSandboxRestarts: 100,
  maxAnswerChars: 1_000_000,
  requireReplBeforeFinal: false,
  ...patch
})

const start = Step.initial("system", "first turn")

const fence = (code: string) => ["```repl", code, "```"].join("\n")

const ok = (code = "x = 1", stdout = "fine\n"): Step.BlockOutcome => ({
  block: { code, stdout, stderr: "", truncated: false, durationMs: 1 }
})
const failed = (code = "boom()"): Step.BlockOutcome => ({
  block: { code, stdout: "", stderr: "", error: "NameError: boom", truncated: false, durationMs: 1 }
})
const lost = (code = "crash()"): Step.BlockOutcome => ({
  block: { code, stdout: "", stderr: "", error: "the interpreter crashed", truncated: false, durationMs: 0 },
  lost: { reason: "Crashed", message: "the interpreter crashed" }
})

/** A step whose reply is one block with this outcome. */
const codeStep = (outcome: Step.BlockOutcome): Step.Input => {
  const reply = fence(outcome.block.code)
  return { reply, parsed: Protocol.parse(reply), outcomes: [outcome] }
}

/** A step whose reply is only a final marker. */
const finalStep = (marker: string, read?: Step.VarRead): Step.Input => ({
  reply: marker,
  parsed: Protocol.parse(marker),
  outcomes: [],
  read
})

/** Decide steps in order while they continue; the decisions, and the last state. */
const drive = (cfg: Step.Config, inputs: ReadonlyArray<Step.Input>, state = start) => {
  const decisions: Array<Step.Decided> = []
  let current = state
  for (const input of inputs) {
    const decided = Step.decide(cfg, current, input)
    decisions.push(decided)
    current = decided.state
    if (decided.decision._tag !== "Continue") break
  }
  return { decisions, state: current }
}

const word = fc.stringMatching(/^[A-Za-z0-9]{1,24}$/)

describe("Step.decide (pure: no sandbox, no model)", () => {
  it.prop(
    "the consecutive-error limit: the run fails at the first step that makes maxConsecutiveErrors failed steps in a row",
    [fc.array(fc.boolean(), { minLength: 1, maxLength: 30 }), fc.integer({ min: 1, max: 6 })],
    ([failing, max]) => {
      const cfg = config({ maxConsecutiveErrors: max })
      const { decisions } = drive(
        cfg,
        failing.map((f) => codeStep(f ? failed() : ok()))
      )
      let run = 0
      const expected = failing.findIndex((f) => {
        run = f ? run + 1 : 0
        return run >= max
      })
      const last = decisions.at(-1)?.decision
      if (expected === -1) {
        assert.strictEqual(decisions.length, failing.length)
        assert.strictEqual(last?._tag, "Continue")
      } else {
        assert.strictEqual(decisions.length, expected + 1)
        assert.strictEqual(last?._tag, "Fail")
        if (last?._tag === "Fail" && last.failure._tag === "BudgetExceeded") {
          assert.strictEqual(last.failure.limit, "maxConsecutiveErrors")
          assert.strictEqual(last.failure.used, max)
        } else assert.fail("expected BudgetExceeded")
      }
    }
  )

  it.prop(
    "a reply with neither code nor an answer counts as a failed step; an empty reply is told so",
    [fc.integer({ min: 1, max: 5 })],
    ([max]) => {
      const { decisions } = drive(
        config({ maxConsecutiveErrors: max }),
        Array.from({ length: max }, () => finalStep(""))
      )
      assert.strictEqual(decisions.length, max)
      assert.include(decisions[0]?.record.feedback ?? "", "no code and no final answer")
      assert.strictEqual(decisions.at(-1)?.decision._tag, "Fail")
    }
  )

  it.prop(
    "requireReplBeforeFinal: FINAL in the reply before any REPL output is rejected; after output, or set by code, it answers",
    [word, fc.boolean()],
    ([text, viaCode]) => {
      const cfg = config({ requireReplBeforeFinal: true })
      if (viaCode) {
        // FINAL(...) called by code is the REPL's own output: accepted at once.
        const outcome: Step.BlockOutcome = { ...ok(), final: { source: "FINAL", value: text } }
        const d = Step.decide(cfg, start, codeStep(outcome))
        assert.deepStrictEqual(d.decision, { _tag: "Answered", answer: text, value: text, source: "FINAL" })
        return
      }
      const first = Step.decide(cfg, start, finalStep(`FINAL(${text})`))
      assert.strictEqual(first.decision._tag, "Continue")
      assert.include(first.record.feedback ?? "", "you must run code in the REPL")
      const looked = Step.decide(cfg, first.state, codeStep(ok()))
      assert.isTrue(looked.state.sawOutput)
      const answered = Step.decide(cfg, looked.state, finalStep(`FINAL(${text})`))
      assert.deepStrictEqual(answered.decision, { _tag: "Answered", answer: text, value: text, source: "FINAL" })
      // Without the option the first answer is taken.
      assert.strictEqual(Step.decide(config(), start, finalStep(`FINAL(${text})`)).decision._tag, "Answered")
    }
  )

  it.prop(
    "FINAL_VAR: the variable is read and answers; a missing one is told to the model, and nothing is read after a loss",
    [fc.stringMatching(/^[a-z_][a-z0-9_]{0,10}$/), word],
    ([name, value]) => {
      const cfg = config()
      const input = finalStep(`FINAL_VAR(${name})`)
      assert.strictEqual(Step.varToRead(cfg, start, input.parsed, input.outcomes), name)
      const found = Step.decide(cfg, start, { ...input, read: { _tag: "Value", name, value } })
      assert.deepStrictEqual(found.decision, { _tag: "Answered", answer: value, value, source: "FINAL_VAR" })
      const missing = Step.decide(cfg, start, { ...input, read: { _tag: "Missing", name } })
      assert.strictEqual(missing.decision._tag, "Continue")
      assert.include(missing.record.feedback ?? "", `FINAL_VAR(${name}) names a variable that does not exist`)
      assert.include(missing.state.messages.at(-1)?.content ?? "", "does not exist")
      // In the step that lost the interpreter, the REPL is not asked.
      const reply = `${fence("crash()")}\nFINAL_VAR(${name})`
      const parsed = Protocol.parse(reply)
      assert.isUndefined(Step.varToRead(cfg, start, parsed, [lost()]))
      const afterLoss = Step.decide(cfg, start, { reply, parsed, outcomes: [lost()] })
      assert.include(afterLoss.record.feedback ?? "", "the interpreter was lost during this step")
      assert.strictEqual(afterLoss.record.interpreterLost?.restarts, 1)
    }
  )

  it.prop(
    "a typed answer: one that decodes answers with its value; one that does not is told to the model and kept as the partial answer",
    [fc.integer(), word],
    ([count, junk]) => {
      const cfg = config({ output: Schema.Struct({ count: Schema.Number }) })
      const good = Step.decide(cfg, start, finalStep(`FINAL({"count": ${count}})`))
      assert.deepStrictEqual(good.decision, {
        _tag: "Answered",
        answer: `{"count": ${count}}`,
        value: { count },
        source: "FINAL"
      })
      const bad = Step.decide(cfg, start, finalStep(`FINAL(${junk})`))
      assert.strictEqual(bad.decision._tag, "Continue")
      assert.include(bad.record.feedback ?? "", "does not have the required shape")
      assert.strictEqual(bad.state.partialAnswer, junk)
    }
  )

  it.prop(
    "the answer cap: an answer answers iff it has at most maxAnswerChars characters",
    [fc.stringMatching(/^[a-z]{1,40}$/), fc.integer({ min: 1, max: 40 })],
    ([text, cap]) => {
      const d = Step.decide(config({ maxAnswerChars: cap }), start, finalStep(`FINAL(${text})`))
      if (text.length <= cap) assert.strictEqual(d.decision._tag, "Answered")
      else {
        assert.strictEqual(d.decision._tag, "Continue")
        assert.include(d.record.feedback ?? "", `over maxAnswerChars=${cap}`)
      }
    }
  )

  it.prop(
    "the interpreter-restart limit: losses are counted per run and the run fails at the one past maxSandboxRestarts",
    [fc.array(fc.boolean(), { maxLength: 12 }), fc.integer({ min: 0, max: 4 })],
    ([losses, max]) => {
      const { decisions } = drive(
        config({ maxSandboxRestarts: max }),
        losses.map((l) => codeStep(l ? lost() : ok()))
      )
      const total = losses.filter(Boolean).length
      const last = decisions.at(-1)
      if (total <= max) {
        assert.strictEqual(decisions.length, losses.length)
        assert.strictEqual(decisions.filter((d) => d.record.interpreterLost !== undefined).length, total)
        for (const d of decisions) {
          if (d.record.interpreterLost) assert.include(d.record.feedback ?? "", "[interpreter lost]")
        }
      } else {
        const fatal = losses.findIndex((_, i) => losses.slice(0, i + 1).filter(Boolean).length === max + 1)
        assert.strictEqual(decisions.length, fatal + 1)
        assert.strictEqual(last?.decision._tag === "Fail" && last.decision.failure._tag, "SandboxRestarts")
        assert.strictEqual(last?.record.interpreterLost?.restarts, max + 1)
      }
    }
  )

  it.prop(
    "after maxSteps the answer is asked for once, and the reply is the answer (or the run fails, keeping it as partial)",
    [
      fc.integer({ min: 1, max: 6 }),
      fc.oneof(
        word.map((w) => `FINAL(${w})`),
        word
      ),
      fc.integer({ min: 1, max: 30 })
    ],
    ([maxSteps, reply, cap]) => {
      const cfg = config({ maxSteps, maxAnswerChars: cap })
      const { decisions, state } = drive(
        cfg,
        Array.from({ length: maxSteps + 3 }, () => codeStep(ok()))
      )
      assert.strictEqual(decisions.length, maxSteps)
      const ask = decisions.at(-1)?.decision
      assert.strictEqual(ask?._tag, "AskForAnswer")
      assert.strictEqual(state.messages.at(-1)?.content, Prompts.answerNow("q"))
      const forced = Step.decideForced(cfg, state, { reply, parsed: Protocol.parse(reply) }, "note")
      assert.strictEqual(forced.state.step, maxSteps + 1)
      assert.strictEqual(forced.record.feedback?.split("\n")[0], "note")
      const text = reply.startsWith("FINAL(") ? reply.slice(6, -1) : reply
      if (text.length <= cap) {
        assert.deepStrictEqual(forced.decision, { _tag: "Answered", answer: text, value: text, source: "forced" })
      } else {
        const d = forced.decision
        assert.strictEqual(d._tag, "Fail")
        if (d._tag === "Fail" && d.failure._tag === "BudgetExceeded") {
          assert.strictEqual(d.failure.limit, "maxSteps")
          assert.isUndefined(d.failure.partialAnswer, "an answer over the cap is not kept")
        }
      }
    }
  )

  it.prop(
    "a budget limit hit inside a block fails the step; the blocks' outputs are in the next user turn otherwise",
    [fc.array(word, { minLength: 1, maxLength: 4 })],
    ([outs]) => {
      const outcomes = outs.map((o) => ok(`print(${JSON.stringify(o)})`, `${o}\n`))
      const reply = outs.map((_, i) => fence(outcomes[i]?.block.code ?? "")).join("\n")
      const d = Step.decide(config(), start, { reply, parsed: Protocol.parse(reply), outcomes })
      assert.strictEqual(d.decision._tag, "Continue")
      for (const o of outs) assert.include(d.decision._tag === "Continue" ? d.decision.message : "", o)
      assert.strictEqual(d.state.messages.length, start.messages.length + 2)
      const hit: Step.BlockOutcome = {
        ...ok(),
        budgetExceeded: { limit: "maxSubCalls", value: 0, used: 1, message: "Budget exceeded: maxSubCalls" }
      }
      const failedStep = Step.decide(config(), start, codeStep(hit))
      assert.strictEqual(failedStep.decision._tag === "Fail" && failedStep.decision.failure._tag, "BudgetExceeded")
    }
  )

  it.prop("RunState survives its Schema", [fc.array(word, { maxLength: 5 })], ([texts]) => {
    const { state } = drive(
      config(),
      texts.map((t) => codeStep(ok(`print(${JSON.stringify(t)})`, t)))
    )
    const back = Schema.decodeUnknownSync(Step.RunState)(
      JSON.parse(JSON.stringify(Schema.encodeSync(Step.RunState)(state)))
    )
    assert.deepStrictEqual(back, state)
  })
})

describe("Step.decideForced (pure)", () => {
  const cfg = config({ maxSteps: 3, maxAnswerChars: 12 })
  const asked = (partialAnswer?: string) =>
    new Step.RunState(
      { ...start, step: 3, sawOutput: true, ...(partialAnswer !== undefined ? { partialAnswer } : {}) },
      true
    )
  const code = fc.stringMatching(/^[a-z]{1,6} = [0-9]{1,4}$/)
  const noAnswer = fc.oneof(
    code.map((c) => fence(c)),
    code,
    fc.constantFrom("", "  \n ", "FINAL(open (paren", "FINAL_VAR(x + 1)"),
    word.map((w) => `FINAL_VAR(${/^[0-9]/.test(w) ? `v${w}` : w})`)
  )

  it.prop(
    "a reply that offers no answer (code, empty, a variable that does not exist, a malformed marker) never answers",
    [noAnswer, fc.option(fc.string({ maxLength: 20 }), { nil: undefined })],
    ([reply, partial]) => {
      const parsed = Protocol.parse(reply)
      const name = Step.forcedVarToRead(parsed)
      const read = name === undefined ? undefined : { _tag: "Missing" as const, name }
      const d = Step.decideForced(cfg, asked(partial), { reply, parsed, read }, "note")
      assert.strictEqual(d.decision._tag, "Fail")
      if (d.decision._tag === "Fail" && d.decision.failure._tag === "BudgetExceeded") {
        assert.strictEqual(d.decision.failure.limit, "maxSteps")
        const kept = d.decision.failure.partialAnswer
        assert.strictEqual(kept, partial !== undefined && partial.length <= 12 ? partial : undefined)
      } else assert.fail("expected BudgetExceeded")
    }
  )

  it.prop(
    "a FINAL(text) or plain prose within the cap is the answer, source forced; over it, the run fails",
    [
      fc.oneof(
        word.map((w) => `FINAL(${w})`),
        word.map((w) => `It is ${w}.`)
      )
    ],
    ([reply]) => {
      const parsed = Protocol.parse(reply)
      const text = parsed.final?._tag === "FinalText" ? parsed.final.text : reply
      const d = Step.decideForced(cfg, asked(), { reply, parsed }, "note")
      if (text.length <= 12) {
        assert.deepStrictEqual(d.decision, { _tag: "Answered", answer: text, value: text, source: "forced" })
      } else assert.strictEqual(d.decision._tag, "Fail")
    }
  )
})
