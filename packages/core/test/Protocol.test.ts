import { assert, describe, it } from "@effect/vitest"
import { FastCheck } from "effect"
import * as Protocol from "../src/Protocol.js"

describe("Protocol.parse — the paper's protocol", () => {
  it("runs ```repl and ```python blocks in order and ignores prose", () => {
    const reply = [
      "Let me look at the context first.",
      "```repl",
      "x = peek(100)",
      "print(x)",
      "```",
      "Then count.",
      "```python",
      "n = lenP()",
      "```"
    ].join("\n")
    const parsed = Protocol.parse(reply)
    assert.strictEqual(parsed.protocol, "fenced")
    assert.deepStrictEqual(parsed.code, ["x = peek(100)\nprint(x)", "n = lenP()"])
    assert.isUndefined(parsed.final)
    assert.deepStrictEqual(parsed.warnings, [])
  })

  it("reads FINAL(text) at the start of a line outside code, across lines and parentheses", () => {
    const parsed = Protocol.parse("I found it.\nFINAL(The answer is f(x) = 2\nand more)")
    assert.deepStrictEqual(parsed.final, { _tag: "FinalText", text: "The answer is f(x) = 2\nand more" })
  })

  it("reads FINAL_VAR(name) and keeps code blocks before it", () => {
    const parsed = Protocol.parse("```repl\nanswer = 'x'\n```\nFINAL_VAR(answer)")
    assert.deepStrictEqual(parsed.code, ["answer = 'x'"])
    assert.deepStrictEqual(parsed.final, { _tag: "FinalVar", name: "answer" })
  })

  it("does not treat FINAL inside a code block as a marker", () => {
    const parsed = Protocol.parse("```repl\nFINAL(x)\n```")
    assert.isUndefined(parsed.final)
    assert.deepStrictEqual(parsed.code, ["FINAL(x)"])
  })

  it("does not treat an indented FINAL( as a marker", () => {
    const parsed = Protocol.parse("Some text\n  FINAL(no)\n```repl\nx=1\n```")
    assert.isUndefined(parsed.final)
  })

  it("warns about an unclosed fence and still runs its code", () => {
    const parsed = Protocol.parse("```repl\nprint(1)")
    assert.deepStrictEqual(parsed.code, ["print(1)"])
    assert.strictEqual(parsed.warnings.length, 1)
    assert.match(parsed.warnings[0] as string, /never closed/)
  })

  it("ignores blocks in other languages with a warning", () => {
    const parsed = Protocol.parse("```bash\nrm -rf /\n```\n```repl\nx = 1\n```")
    assert.deepStrictEqual(parsed.code, ["x = 1"])
    assert.match(parsed.warnings[0] as string, /bash/)
  })

  it("rejects FINAL_VAR with something that is not a name", () => {
    const parsed = Protocol.parse("```repl\nx=1\n```\nFINAL_VAR(x + 1)")
    assert.isUndefined(parsed.final)
    assert.match(parsed.warnings[0] as string, /variable name/)
  })

  it("warns about an unclosed FINAL(", () => {
    const parsed = Protocol.parse("```repl\nx=1\n```\nFINAL(oops")
    assert.isUndefined(parsed.final)
    assert.match(parsed.warnings[0] as string, /never closed/)
  })
})

describe("Protocol.parse — the seed's protocol", () => {
  it("treats a reply without fences as bare code", () => {
    const reply = "snippet = peek(80)\nsummary = llm_query(f'Summarize: {snippet}')\nanswer = summary"
    const parsed = Protocol.parse(reply)
    assert.strictEqual(parsed.protocol, "bare")
    assert.deepStrictEqual(parsed.code, [reply])
    assert.isUndefined(parsed.final)
  })

  it("reads FINAL_VAR: name", () => {
    const parsed = Protocol.parse("FINAL_VAR: answer")
    assert.deepStrictEqual(parsed.code, [])
    assert.deepStrictEqual(parsed.final, { _tag: "FinalVar", name: "answer" })
  })

  it("reads FINAL: text to the end of the reply, with code before it", () => {
    const parsed = Protocol.parse("x = 1\nFINAL: forty\ntwo")
    assert.deepStrictEqual(parsed.code, ["x = 1"])
    assert.deepStrictEqual(parsed.final, { _tag: "FinalText", text: "forty\ntwo" })
  })

  it("calls an empty or blank reply empty", () => {
    assert.strictEqual(Protocol.parse("").protocol, "empty")
    assert.strictEqual(Protocol.parse("  \n\n ").protocol, "empty")
  })

  it("normalises CRLF line endings", () => {
    const parsed = Protocol.parse("```repl\r\nx = 1\r\n```\r\nFINAL_VAR(x)")
    assert.deepStrictEqual(parsed.code, ["x = 1"])
    assert.deepStrictEqual(parsed.final, { _tag: "FinalVar", name: "x" })
  })
})

describe("Protocol round trips", () => {
  const text = FastCheck.string().filter((s) => !s.includes(")") && s.trim() === s && !s.includes("\r"))
  it.prop("FINAL(text) written by formatFinal parses back", [text], ([t]) => {
    const parsed = Protocol.parse(`Done.\n${Protocol.formatFinal({ _tag: "FinalText", text: t })}`)
    assert.deepStrictEqual(parsed.final, { _tag: "FinalText", text: t })
  })

  const ident = FastCheck.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,20}$/)
  it.prop("FINAL_VAR(name) written by formatFinal parses back", [ident], ([name]) => {
    const parsed = Protocol.parse(`\`\`\`repl\nx = 1\n\`\`\`\n${Protocol.formatFinal({ _tag: "FinalVar", name })}`)
    assert.deepStrictEqual(parsed.final, { _tag: "FinalVar", name })
  })

  const codeLine = FastCheck.stringMatching(/^[a-z][a-z0-9_ =+()'.]{0,30}$/)
  it.prop(
    "fenced blocks come back in order",
    [FastCheck.array(FastCheck.array(codeLine, { minLength: 1, maxLength: 4 }), { maxLength: 5 })],
    ([blocks]) => {
      const reply = blocks.map((b) => `Step:\n\`\`\`repl\n${b.join("\n")}\n\`\`\``).join("\n")
      const parsed = Protocol.parse(reply)
      assert.deepStrictEqual(
        parsed.code,
        blocks.map((b) => b.join("\n")).filter((c) => c.trim().length > 0)
      )
    }
  )
})
