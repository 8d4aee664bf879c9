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

  it("reads an indented FINAL( outside code as a marker", () => {
    const parsed = Protocol.parse("Some text\n  FINAL(yes)\n```repl\nx=1\n```")
    assert.deepStrictEqual(parsed.final, { _tag: "FinalText", text: "yes" })
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
    assert.match(parsed.warnings[0] as string, /never balance/)
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
  const text = FastCheck.string().filter(
    (s) => !s.includes(")") && !s.includes("(") && s.trim() === s && !s.includes("\r")
  )
  it.prop("FINAL(text) with no parentheses, written by formatFinal, parses back", [text], ([t]) => {
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

describe("Protocol.parse — FINAL(...) ends at its balancing )", () => {
  it("ignores what follows the balancing )", () => {
    assert.deepStrictEqual(Protocol.parse("FINAL(42) (from line 9)").final, { _tag: "FinalText", text: "42" })
    assert.deepStrictEqual(Protocol.parse("Done.\nFINAL(f(x) = 2) and g(y)").final, {
      _tag: "FinalText",
      text: "f(x) = 2"
    })
  })

  it("FINAL_VAR(name) ends at its ), too", () => {
    assert.deepStrictEqual(Protocol.parse("Done.\nFINAL_VAR(count) (the number of lines)").final, {
      _tag: "FinalVar",
      name: "count"
    })
  })

  it("does not count parentheses inside double quotes or backticks", () => {
    assert.deepStrictEqual(Protocol.parse('FINAL("a) b")').final, { _tag: "FinalText", text: '"a) b"' })
    assert.deepStrictEqual(Protocol.parse("FINAL(`x)` is it)").final, { _tag: "FinalText", text: "`x)` is it" })
  })

  it("an apostrophe is not a quote, and quotes that do not pair are not counted", () => {
    assert.deepStrictEqual(Protocol.parse("FINAL(it's (really) 42)").final, {
      _tag: "FinalText",
      text: "it's (really) 42"
    })
    assert.deepStrictEqual(Protocol.parse('FINAL(a 5" screen (small))').final, {
      _tag: "FinalText",
      text: 'a 5" screen (small)'
    })
  })

  it("an unbalanced FINAL( is no answer: the model is told, nothing is run", () => {
    const parsed = Protocol.parse("FINAL(f(x) = 2")
    assert.isUndefined(parsed.final)
    assert.deepStrictEqual(parsed.code, [])
    assert.match(parsed.warnings[0] as string, /never balance/)
  })

  /** Text whose parentheses balance, with no quote, no `\r`, trimmed. */
  const balanced: FastCheck.Arbitrary<string> = FastCheck.letrec<{ text: string; group: string }>((tie) => ({
    text: FastCheck.array(
      FastCheck.oneof(
        { weight: 3, arbitrary: FastCheck.stringMatching(/^[^()"`\r]{1,8}$/) },
        { weight: 1, arbitrary: tie("group") }
      ),
      { maxLength: 4, depthIdentifier: "balanced" }
    ).map((parts) => parts.join("")),
    group: tie("text").map((t) => `(${t})`)
  })).text.map((t) => t.trim())

  it.prop("parse(formatFinal(m)) is m for any text whose parentheses balance", [balanced], ([text]) => {
    const marker = { _tag: "FinalText" as const, text }
    assert.deepStrictEqual(Protocol.parse(`Done.\n${Protocol.formatFinal(marker)}`).final, marker)
    assert.deepStrictEqual(Protocol.parse(`Done.\n${Protocol.formatFinal(marker)} (from line 9)`).final, marker)
  })
})

describe("Protocol.parse — decorated markers", () => {
  const decorations: ReadonlyArray<readonly [string, string]> = [
    ["", ""],
    ["   ", ""],
    ["\t", ""],
    ["**", "**"],
    ["__", "__"],
    ["*", "*"],
    ["> ", ""],
    ["- ", ""],
    ["* ", ""],
    ["1. ", ""],
    ["`", "`"],
    ["> **", "**"],
    ["- `", "`"]
  ]
  const decoration = FastCheck.constantFrom(...decorations)
  const name = FastCheck.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,20}$/)
  const text = FastCheck.stringMatching(/^[A-Za-z0-9][A-Za-z0-9 ,.:;!?'-]{0,30}$/).map((t) => t.trim())
  const marker = FastCheck.oneof(
    text.map((t) => ({ _tag: "FinalText" as const, text: t })),
    name.map((n) => ({ _tag: "FinalVar" as const, name: n }))
  )

  it("reads the markers of the issue", () => {
    for (const reply of ["   FINAL(42)", "**FINAL(42)**", "> FINAL(42)", "- FINAL(42)", "`FINAL(42)`"]) {
      assert.deepStrictEqual(Protocol.parse(`I counted.\n${reply}`).final, { _tag: "FinalText", text: "42" }, reply)
    }
    assert.deepStrictEqual(Protocol.parse("I counted.\n__FINAL_VAR(x)__").final, { _tag: "FinalVar", name: "x" })
    assert.deepStrictEqual(Protocol.parse("**FINAL:** 42").final, { _tag: "FinalText", text: "42" })
  })

  it.prop(
    "a decorated marker parses to the same marker as the plain one, after prose or after code",
    [marker, decoration, FastCheck.boolean()],
    ([m, [open, close], afterCode]) => {
      const before = afterCode ? "```repl\nx = 1\n```" : "I have the answer."
      const plain = Protocol.parse(`${before}\n${Protocol.formatFinal(m)}`)
      const decorated = Protocol.parse(`${before}\n${open}${Protocol.formatFinal(m)}${close}`)
      assert.deepStrictEqual(plain.final, m)
      assert.deepStrictEqual(decorated.final, m)
    }
  )

  it.prop("a marker inside fenced code is never the reply's marker", [marker, decoration], ([m, [open, close]]) => {
    const parsed = Protocol.parse(`\`\`\`repl\n${open}${Protocol.formatFinal(m)}${close}\n\`\`\``)
    assert.isUndefined(parsed.final)
    assert.strictEqual(parsed.code.length, 1)
  })

  it.prop(
    "after bare code, a decorated marker (not only indented) parses to the plain one, and the code before it runs",
    [marker, decoration.filter(([open]) => open.trim().length > 0)],
    ([m, [open, close]]) => {
      const parsed = Protocol.parse(`x = peek(10)\n${open}${Protocol.formatFinal(m)}${close}`)
      assert.strictEqual(parsed.protocol, "bare")
      assert.deepStrictEqual(parsed.code, ["x = peek(10)"])
      assert.deepStrictEqual(parsed.final, m)
    }
  )

  it("in bare code an indented FINAL(...) is a call inside a block, not the reply's marker", () => {
    const reply = "if found:\n    FINAL(found)\nprint('not yet')"
    const parsed = Protocol.parse(reply)
    assert.strictEqual(parsed.protocol, "bare")
    assert.deepStrictEqual(parsed.code, [reply])
    assert.isUndefined(parsed.final)
  })
})

describe("Protocol.parse — a reply with no fence: bare code or prose", () => {
  it("prose is not run, and is told apart from bare code", () => {
    for (const reply of ["The answer is 42.", "Let me look at the data first.", "I'm not sure yet: let me think."]) {
      const parsed = Protocol.parse(reply)
      assert.strictEqual(parsed.protocol, "prose", reply)
      assert.deepStrictEqual(parsed.code, [])
      assert.strictEqual(parsed.prose, reply)
    }
  })

  it("prose before a marker is not run; the marker is the answer", () => {
    const parsed = Protocol.parse("I computed it.\nFINAL(42)")
    assert.strictEqual(parsed.protocol, "prose")
    assert.deepStrictEqual(parsed.code, [])
    assert.deepStrictEqual(parsed.final, { _tag: "FinalText", text: "42" })
  })

  it("code of the other language is prose when the language is given", () => {
    assert.strictEqual(Protocol.parse("const x = 1", { language: "javascript" }).protocol, "bare")
    assert.strictEqual(Protocol.parse("import json", { language: "python" }).protocol, "bare")
    assert.strictEqual(Protocol.parse("n: int = len(P)", { language: "python" }).protocol, "bare")
    assert.strictEqual(Protocol.parse("Note: the context is long.", { language: "python" }).protocol, "prose")
    assert.strictEqual(Protocol.parse("import json\nfor k in d:\n    print(k)").protocol, "bare")
    assert.strictEqual(Protocol.parse("if (x) {\n  y()\n}", { language: "python" }).protocol, "prose")
    assert.strictEqual(Protocol.parse("const x = 1", { language: "python" }).protocol, "prose")
    assert.strictEqual(Protocol.parse("for k in d:\n    print(k)", { language: "javascript" }).protocol, "prose")
  })

  const ident = FastCheck.stringMatching(/^[a-z_][a-z0-9_]{0,8}$/).filter(
    (s) => !["if", "for", "in", "is", "as", "do", "def", "del", "try", "let", "var", "new"].includes(s)
  )
  const words = FastCheck.array(FastCheck.stringMatching(/^[A-Za-z']{1,9}$/), { minLength: 1, maxLength: 8 }).map((w) =>
    w.join(" ")
  )
  const literal = FastCheck.oneof(
    FastCheck.integer({ min: 0, max: 999 }).map(String),
    words.map((w) => JSON.stringify(w.replace(/'/g, ""))),
    ident.map((i) => `${i}[0]`)
  )
  const call = FastCheck.tuple(ident, FastCheck.array(literal, { maxLength: 3 })).map(
    ([f, args]) => `${f}(${args.join(", ")})`
  )
  const expr = FastCheck.oneof(literal, call)

  const pythonLine = FastCheck.oneof(
    FastCheck.tuple(ident, expr).map(([v, e]) => `${v} = ${e}`),
    call,
    expr.map((e) => `print(${e})`),
    FastCheck.tuple(ident, ident, expr).map(([a, b, e]) => `${a}, ${b} = ${e}, ${e}`),
    FastCheck.constantFrom("import json", "from collections import Counter", "import re, math"),
    FastCheck.tuple(ident, ident, expr).map(([v, xs, e]) => `for ${v} in ${xs}:\n    total = ${e}\n    print(${v})`),
    FastCheck.tuple(ident, FastCheck.array(words, { minLength: 1, maxLength: 3 })).map(
      ([v, lines]) => `${v} = """${lines.join("\n")}\n"""`
    ),
    FastCheck.tuple(ident, words).map(([f, w]) => `def ${f}(x):\n    # ${w}\n    return x`)
  )
  const jsLine = FastCheck.oneof(
    FastCheck.tuple(FastCheck.constantFrom("const", "let", "var"), ident, expr).map(([k, v, e]) => `${k} ${v} = ${e};`),
    expr.map((e) => `console.log(${e})`),
    call.map((c) => `await ${c}`),
    FastCheck.tuple(ident, expr).map(([v, e]) => `for (const ${v} of items) {\n  print(${e});\n}`),
    FastCheck.tuple(ident, FastCheck.array(words, { minLength: 1, maxLength: 3 })).map(
      ([v, lines]) => `const ${v} = \`${lines.join("\n")}\``
    ),
    FastCheck.tuple(ident, words).map(([f, w]) => `function ${f}(x) {\n  // ${w}\n  return x\n}`)
  )

  /** A sentence: a capitalised word first, or a list item, never a statement. */
  const sentence = FastCheck.oneof(
    FastCheck.tuple(
      FastCheck.stringMatching(/^[A-Z][a-z']{0,8}$/),
      words,
      FastCheck.constantFrom(".", "!", "?", ":", "")
    ).map(([first, rest, end]) => `${first} ${rest}${end}`),
    words.map((w) => `- ${w}`),
    words.map((w) => `2. ${w}`)
  )

  it.prop(
    "generated bare code (Python) is run as one block",
    [FastCheck.array(pythonLine, { minLength: 1, maxLength: 6 })],
    ([lines]) => {
      const reply = lines.join("\n")
      for (const language of ["python", undefined] as const) {
        const parsed = Protocol.parse(reply, { language })
        assert.strictEqual(parsed.protocol, "bare")
        assert.deepStrictEqual(parsed.code, [reply])
      }
    }
  )

  it.prop(
    "generated bare code (JavaScript) is run as one block",
    [FastCheck.array(jsLine, { minLength: 1, maxLength: 6 })],
    ([lines]) => {
      const reply = lines.join("\n")
      for (const language of ["javascript", undefined] as const) {
        const parsed = Protocol.parse(reply, { language })
        assert.strictEqual(parsed.protocol, "bare")
        assert.deepStrictEqual(parsed.code, [reply])
      }
    }
  )

  it.prop(
    "generated prose, alone or with code lines, is never run",
    [
      FastCheck.array(sentence, { minLength: 1, maxLength: 5 }),
      FastCheck.array(pythonLine, { maxLength: 3 }),
      FastCheck.constantFrom<"python" | "javascript" | undefined>("python", "javascript", undefined)
    ],
    ([sentences, code, language]) => {
      const reply = [...code, ...sentences].join("\n")
      const parsed = Protocol.parse(reply, { language })
      assert.strictEqual(parsed.protocol, "prose")
      assert.deepStrictEqual(parsed.code, [])
    }
  )
})
