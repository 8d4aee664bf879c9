import { assert, describe, it } from "@effect/vitest"
import { Schema } from "effect"
import { readFileSync } from "node:fs"
import { Prompts, Protocol, Step } from "../src/index.js"

/**
 * The table of `docs/protocol.md` ("Every case"), row by row, through the pure
 * step: no sandbox, no model. Each row of the doc must have a row here with the
 * same case and outcome, and each row here must be in the doc.
 */

type Outcome = "answer" | "feedback" | "ask" | "fails"

interface Row {
  readonly case: string
  readonly outcome: Outcome
  readonly decided: () => Step.Decided
  /** What else the row says: the answer, what the model is told, the error and its partial answer. */
  readonly check: (decided: Step.Decided) => void
}

const config = (patch: Partial<Step.Config> = {}): Step.Config => ({
  query: "q",
  language: "python",
  maxSteps: 5,
  maxConsecutiveErrors: 100,
  maxSandboxRestarts: 3,
  maxAnswerChars: 1_000_000,
  requireReplBeforeFinal: false,
  ...patch
})

const start = Step.initial("system", "first turn")

const ok = (code: string, stdout = "out\n"): Step.BlockOutcome => ({
  block: { code, stdout, stderr: "", truncated: false, durationMs: 1 }
})
const failing = (code: string): Step.BlockOutcome => ({
  block: { code, stdout: "", stderr: "", error: "NameError: boom", truncated: false, durationMs: 1 }
})

/** An ordinary step: the reply parsed, its blocks' outcomes (by default each block ran fine), the variable read. */
const step = (
  reply: string,
  options: {
    readonly cfg?: Step.Config
    readonly state?: Step.RunState
    readonly outcomes?: ReadonlyArray<Step.BlockOutcome>
    readonly read?: Step.VarRead
  } = {}
) => {
  const parsed = Protocol.parse(reply, { language: "python" })
  const outcomes = options.outcomes ?? parsed.code.map((code) => ok(code))
  return Step.decide(options.cfg ?? config(), options.state ?? start, { reply, parsed, outcomes, read: options.read })
}

/** A state after `n` steps of code that printed: REPL output seen, and maybe a rejected answer kept. */
const after = (n: number, partialAnswer?: string) =>
  new Step.RunState(
    {
      ...start,
      step: n,
      sawOutput: n > 0,
      ...(partialAnswer !== undefined ? { partialAnswer } : {})
    },
    true
  )

const forced = (
  reply: string,
  options: {
    readonly cfg?: Step.Config
    readonly state?: Step.RunState
    readonly read?: Step.VarRead
    readonly exceeded?: Step.Exceeded
  } = {}
) => {
  const cfg = options.cfg ?? config()
  const parsed = Protocol.parse(reply, { language: "python" })
  return Step.decideForced(
    cfg,
    options.state ?? after(cfg.maxSteps, "half an answer"),
    { reply, parsed, read: options.read, exceeded: options.exceeded },
    "note"
  )
}

const answered = (answer: string, source: "FINAL" | "FINAL_VAR" | "forced") => (d: Step.Decided) =>
  assert.deepStrictEqual(d.decision, { _tag: "Answered", answer, value: answer, source })

const told =
  (...fragments: ReadonlyArray<string>) =>
  (d: Step.Decided) => {
    const message = d.decision._tag === "Continue" ? d.decision.message : ""
    for (const fragment of fragments) assert.include(message, fragment)
  }

const failedWith = (limit: string, partial: string | undefined, fragment?: string) => (d: Step.Decided) => {
  const f = d.decision._tag === "Fail" ? d.decision.failure : undefined
  assert.strictEqual(f?._tag, "BudgetExceeded")
  if (f?._tag !== "BudgetExceeded") return
  assert.strictEqual(f.limit, limit)
  assert.strictEqual(f.partialAnswer, partial)
  if (fragment !== undefined) assert.include(f.message, fragment)
}

const NumberFromText = Schema.NumberFromString

const rows: ReadonlyArray<Row> = [
  {
    case: "`FINAL(text)` outside code",
    outcome: "answer",
    decided: () => step("I counted.\nFINAL(42)"),
    check: answered("42", "FINAL")
  },
  {
    case: "a decorated or indented marker",
    outcome: "answer",
    decided: () => step("**FINAL(42)**"),
    check: (d) => {
      answered("42", "FINAL")(d)
      for (const reply of ["   FINAL(42)", "> FINAL(42)", "- FINAL(42)", "`FINAL(42)`", "1. FINAL(42)"]) {
        answered("42", "FINAL")(step(`Done.\n${reply}`))
      }
    }
  },
  {
    case: "text after the balancing `)`",
    outcome: "answer",
    decided: () => step("FINAL(42) (from line 9)"),
    check: answered("42", "FINAL")
  },
  {
    case: "`FINAL(` whose parentheses never balance",
    outcome: "feedback",
    decided: () => step("FINAL(f(x) = 2"),
    check: (d) => {
      told("never balance", "FINAL_VAR(name)")(d)
      assert.strictEqual(d.state.consecutiveErrors, 1, "nothing was run: a failed step")
    }
  },
  {
    case: "`FINAL_VAR(x)`, `x` exists",
    outcome: "answer",
    decided: () => step("FINAL_VAR(x)", { read: { _tag: "Value", name: "x", value: "forty-two" } }),
    check: answered("forty-two", "FINAL_VAR")
  },
  {
    case: "`FINAL_VAR(x)`, no variable `x`",
    outcome: "feedback",
    decided: () => step("FINAL_VAR(x)", { read: { _tag: "Missing", name: "x" } }),
    check: told("FINAL_VAR(x) names a variable that does not exist", "SHOW_VARS()", "FINAL(text)")
  },
  {
    case: "`FINAL_VAR(x)`, `x` cannot be read",
    outcome: "feedback",
    decided: () => step("FINAL_VAR(x)", { read: { _tag: "Unreadable", name: "x", message: "__str__ raised" } }),
    check: told("FINAL_VAR(x) could not be read: __str__ raised", "FINAL(text)")
  },
  {
    case: "`FINAL_VAR` of something that is not a name",
    outcome: "feedback",
    decided: () => step("FINAL_VAR(x + 1)"),
    check: told("FINAL_VAR needs a variable name")
  },
  {
    case: "an answer the `output` Schema rejects",
    outcome: "feedback",
    decided: () => step("FINAL(abc)", { cfg: config({ output: NumberFromText }) }),
    check: (d) => {
      told("does not have the required shape")(d)
      assert.strictEqual(d.state.partialAnswer, "abc")
    }
  },
  {
    case: "an answer over `maxAnswerChars`",
    outcome: "feedback",
    decided: () => step("FINAL(123456)", { cfg: config({ maxAnswerChars: 5 }) }),
    check: told("it has 6 characters, over maxAnswerChars=5")
  },
  {
    case: "an answer before any REPL output (`requireReplBeforeFinal`)",
    outcome: "feedback",
    decided: () => step("FINAL(42)", { cfg: config({ requireReplBeforeFinal: true }) }),
    check: told("you must run code in the REPL and look at its output before answering")
  },
  {
    case: "fenced code",
    outcome: "feedback",
    decided: () => step("```repl\nprint(len(P))\n```", { outcomes: [ok("print(len(P))", "1200\n")] }),
    check: told("REPL output:\n1200")
  },
  {
    case: "bare code",
    outcome: "feedback",
    decided: () => step("print(len(P))", { outcomes: [ok("print(len(P))", "1200\n")] }),
    check: (d) => {
      told("REPL output:\n1200")(d)
      assert.deepStrictEqual(Protocol.parse("print(len(P))").code, ["print(len(P))"])
    }
  },
  {
    case: "prose with no fence and no marker",
    outcome: "feedback",
    decided: () => step("The answer is 42."),
    check: (d) => {
      told(Step.proseHint)(d)
      assert.deepStrictEqual(Protocol.parse("The answer is 42.").code, [], "nothing is run")
      assert.strictEqual(d.state.consecutiveErrors, 1)
    }
  },
  {
    case: "prose before a marker",
    outcome: "answer",
    decided: () => step("I computed it.\nFINAL(42)"),
    check: (d) => {
      answered("42", "FINAL")(d)
      assert.deepStrictEqual(Protocol.parse("I computed it.\nFINAL(42)").code, [])
    }
  },
  {
    case: "an empty reply",
    outcome: "feedback",
    decided: () => step(""),
    check: told("Your reply had no code and no final answer")
  },
  {
    case: "a block in another language",
    outcome: "feedback",
    decided: () => step("```bash\nls\n```"),
    check: told("A ```bash block was ignored")
  },
  {
    case: "an unclosed fence",
    outcome: "feedback",
    decided: () => step("```repl\nprint(1)", { outcomes: [ok("print(1)", "1\n")] }),
    check: told("REPL output:\n1", "never closed")
  },
  {
    case: "a marker inside fenced code",
    outcome: "feedback",
    decided: () => step("```repl\nFINAL(x)\n```", { outcomes: [ok("FINAL(x)", "")] }),
    check: (d) => {
      told("(no output)")(d)
      assert.isUndefined(Protocol.parse("```repl\nFINAL(x)\n```").final)
    }
  },
  {
    case: "`maxConsecutiveErrors` failed steps in a row",
    outcome: "fails",
    decided: () =>
      step("```repl\nboom()\n```", {
        cfg: config({ maxConsecutiveErrors: 2 }),
        state: new Step.RunState({ ...after(1, "half an answer"), consecutiveErrors: 1 }, true),
        outcomes: [failing("boom()")]
      }),
    check: failedWith("maxConsecutiveErrors", "half an answer", "2 steps in a row failed")
  },
  {
    case: "step `maxSteps` ends without an answer",
    outcome: "ask",
    decided: () => step("```repl\nx = 1\n```", { state: after(4) }),
    check: (d) => {
      assert.deepStrictEqual(d.decision, { _tag: "AskForAnswer", message: Prompts.answerNow("q") })
      assert.strictEqual(d.state.messages.at(-1)?.content, Prompts.answerNow("q"))
    }
  },
  {
    case: "forced: `FINAL(text)`",
    outcome: "answer",
    decided: () => forced("FINAL(42)"),
    check: answered("42", "forced")
  },
  {
    case: "forced: `FINAL_VAR(x)`, `x` exists",
    outcome: "answer",
    decided: () => forced("FINAL_VAR(x)", { read: { _tag: "Value", name: "x", value: "forty-two" } }),
    check: answered("forty-two", "forced")
  },
  {
    case: "forced: plain prose",
    outcome: "answer",
    decided: () => forced("The answer is 42."),
    check: answered("The answer is 42.", "forced")
  },
  {
    case: "forced: code only",
    outcome: "fails",
    decided: () => forced("```repl\nx = 1\n```"),
    check: (d) => {
      failedWith("maxSteps", "half an answer", "no code is run")(d)
      failedWith("maxSteps", "I think so.", "code")(forced("I think so.\n```repl\nx = 1\n```", { state: after(5) }))
    }
  },
  {
    case: "forced: bare code",
    outcome: "fails",
    decided: () => forced("print(x)"),
    check: failedWith("maxSteps", "half an answer", "code")
  },
  {
    case: "forced: an empty reply",
    outcome: "fails",
    decided: () => forced("   "),
    check: (d) => {
      failedWith("maxSteps", "half an answer", "the reply was empty")(d)
      failedWith("maxSteps", undefined)(forced("", { state: after(5) }))
    }
  },
  {
    case: "forced: `FINAL_VAR(x)`, no variable `x`",
    outcome: "fails",
    decided: () => forced("FINAL_VAR(x)", { read: { _tag: "Missing", name: "x" } }),
    check: failedWith("maxSteps", "half an answer", "does not exist")
  },
  {
    case: "forced: a malformed marker",
    outcome: "fails",
    decided: () => forced("FINAL(f(x) = 2"),
    check: failedWith("maxSteps", "half an answer", "never balance")
  },
  {
    case: "forced: an answer the `output` Schema rejects",
    outcome: "fails",
    decided: () => forced("FINAL(abc)", { cfg: config({ output: NumberFromText }) }),
    check: failedWith("maxSteps", "abc", "required shape")
  },
  {
    case: "forced: an answer over `maxAnswerChars`",
    outcome: "fails",
    decided: () => forced("FINAL(1234567890123456)", { cfg: config({ maxAnswerChars: 15 }) }),
    check: (d) => {
      failedWith("maxSteps", "half an answer", "over maxAnswerChars=15")(d)
      const over = forced("FINAL(123456)", { cfg: config({ maxAnswerChars: 5 }), state: after(5, "1234567") })
      failedWith("maxSteps", undefined)(over)
    }
  },
  {
    case: "forced: no REPL output ever seen (`requireReplBeforeFinal`)",
    outcome: "fails",
    decided: () => forced("FINAL(42)", { cfg: config({ requireReplBeforeFinal: true }), state: start }),
    check: (d) => {
      failedWith("maxSteps", "42", "requireReplBeforeFinal")(d)
      answered("42", "forced")(forced("FINAL(42)", { cfg: config({ requireReplBeforeFinal: true }) }))
    }
  },
  {
    case: 'forced after another limit (`onBudgetExceeded: "answer-now"`)',
    outcome: "fails",
    decided: () =>
      forced("```repl\nllm_query(P)\n```", {
        exceeded: { limit: "maxSubCalls", value: 3, used: 3, message: "Budget exceeded: maxSubCalls=3." }
      }),
    check: (d) => {
      failedWith("maxSubCalls", "half an answer", "Budget exceeded: maxSubCalls=3.")(d)
      answered(
        "42",
        "forced"
      )(
        forced("FINAL(42)", {
          exceeded: { limit: "maxSubCalls", value: 3, used: 3, message: "Budget exceeded: maxSubCalls=3." }
        })
      )
    }
  }
]

const tagOf: Record<Outcome, Step.Decision["_tag"]> = {
  answer: "Answered",
  feedback: "Continue",
  ask: "AskForAnswer",
  fails: "Fail"
}

/** The rows of the table under "## Every case" in docs/protocol.md: case → outcome. */
const documented = (): ReadonlyMap<string, string> => {
  const doc = readFileSync(new URL("../../../docs/protocol.md", import.meta.url), "utf8")
  const section = doc.slice(doc.indexOf("## Every case"), doc.indexOf("Outside the step itself"))
  const table = section.split("\n").filter((line) => line.startsWith("| ") && !line.startsWith("| ---"))
  return new Map(
    table.slice(1).map((line) => {
      const cells = line.split(" | ").map((cell) => cell.replace(/^\| |\s\|$/g, "").trim())
      return [cells[0] as string, cells[2] as string]
    })
  )
}

describe("docs/protocol.md, every case, through the pure step", () => {
  it("the doc's table and this test have the same rows, with the same outcomes", () => {
    const doc = documented()
    assert.deepStrictEqual(
      [...doc.keys()],
      rows.map((r) => r.case)
    )
    for (const row of rows) assert.strictEqual(doc.get(row.case), row.outcome, row.case)
  })

  for (const row of rows) {
    it(`${row.case} → ${row.outcome}`, () => {
      const decided = row.decided()
      assert.strictEqual(decided.decision._tag, tagOf[row.outcome])
      row.check(decided)
    })
  }
})
