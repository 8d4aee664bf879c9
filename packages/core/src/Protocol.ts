/**
 * Parsing the root model's replies.
 *
 * Two protocols are understood:
 * - the paper's: code in fenced blocks (```` ```repl ````, ```` ```python ````, …) and a final answer as
 *   `FINAL(text)` or `FINAL_VAR(name)` at the start of a line outside the blocks;
 * - the seed's: a reply that is bare code, and `FINAL: text` / `FINAL_VAR: name` lines.
 *
 * A marker may be indented or decorated the way chat models write it
 * (`**FINAL(42)**`, `> FINAL(42)`, `- FINAL(42)`, `` `FINAL(42)` ``); the
 * answer of `FINAL(...)` ends at the `)` that balances its `(`. A reply with
 * no fence is code only when every line of it looks like code
 * ({@link looksLikeCode}); otherwise it is prose, and nothing is run.
 *
 * @since 0.1.0
 */
import type * as Sandbox from "@rlm-runtime/sandbox/Sandbox"
import * as Schema from "effect/Schema"

/**
 * A final answer written in the reply text (not by code).
 *
 * @since 0.1.0
 * @category Models
 */
export const FinalMarker = Schema.Union(
  Schema.TaggedStruct("FinalText", { text: Schema.String }),
  Schema.TaggedStruct("FinalVar", { name: Schema.String })
)

/**
 * @since 0.1.0
 * @category Models
 */
export type FinalMarker = typeof FinalMarker.Type

/**
 * How a reply was read:
 * - `"fenced"`: it has at least one fence; its ```` ```repl ```` blocks are the code;
 * - `"bare"`: no fence, and it looks like code (the seed's protocol); it is the code;
 * - `"prose"`: no fence, and it does not look like code; nothing is run (since 0.2.0);
 * - `"empty"`: nothing but white space.
 *
 * @since 0.1.0
 * @category Models
 */
export const ParsedReply = Schema.Struct({
  /** `"tools"`: read from the reply's tool calls (see `ToolProtocol`). */
  protocol: Schema.Literal("fenced", "bare", "prose", "empty", "tools"),
  code: Schema.Array(Schema.String),
  final: Schema.optional(FinalMarker),
  /** Problems worth telling the model (an unclosed fence, a malformed FINAL_VAR). */
  warnings: Schema.Array(Schema.String),
  /** The reply's text outside code and final-answer lines, trimmed (since 0.2.0). */
  prose: Schema.optional(Schema.String)
})

/**
 * @since 0.1.0
 * @category Models
 */
export type ParsedReply = typeof ParsedReply.Type

/**
 * @since 0.2.0
 * @category Models
 */
export interface ParseOptions {
  /** The sandbox's language: bare code is recognised by its syntax. Default: either language. */
  readonly language?: Sandbox.Language | undefined
}

const FENCE_LANGS = new Set(["", "repl", "python", "py", "python3", "javascript", "js", "typescript", "ts"])
const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/

const fenceOpen = /^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[ \t]*$/
const fenceClose = /^[ \t]*```[ \t]*$/

interface Line {
  readonly index: number
  readonly line: string
}

interface Split {
  readonly code: Array<string>
  /** Lines outside fences, with their index in `lines`. */
  readonly prose: Array<Line>
  readonly warnings: Array<string>
  readonly fenced: boolean
}

const splitFences = (lines: ReadonlyArray<string>): Split => {
  const code: Array<string> = []
  const prose: Array<Line> = []
  const warnings: Array<string> = []
  let fenced = false
  let i = 0
  while (i < lines.length) {
    const line = lines[i] as string
    const open = fenceOpen.exec(line)
    if (open) {
      fenced = true
      const lang = (open[1] ?? "").toLowerCase()
      const body: Array<string> = []
      i++
      while (i < lines.length && !fenceClose.test(lines[i] as string)) body.push(lines[i++] as string)
      if (i >= lines.length)
        warnings.push("A code block was opened with ``` but never closed; it was run up to the end.")
      i++
      if (FENCE_LANGS.has(lang)) {
        if (body.join("").trim().length > 0) code.push(body.join("\n"))
      } else {
        warnings.push(`A \`\`\`${lang} block was ignored: only \`\`\`repl code blocks are run.`)
      }
      continue
    }
    prose.push({ index: i, line })
    i++
  }
  return { code, prose, warnings, fenced }
}

// -----------------------------------------------------------------------------
// Final markers
// -----------------------------------------------------------------------------

/**
 * What may come before a marker on its line: white space, quote marks (`>`),
 * a list bullet (`-`, `*`, `+`, `1.`), emphasis (`**`, `__`, `*`, `_`) and an
 * inline-code backtick, in any order.
 */
const decoration = /^(?:[ \t]+|>|[-*+](?=[ \t])|\d{1,3}[.)](?=[ \t])|\*{1,2}|_{1,2}|`)*/

/** The closing emphasis a decorated colon-form answer may end with. */
const closingDecoration = /[ \t]*(?:\*{1,2}|_{1,2}|`)+$/

const finalVarName = (raw: string): string | undefined => {
  const name = raw.trim().replace(/^["'`]|["'`]$/g, "")
  return IDENT.test(name) ? name : undefined
}

/**
 * The end of a `FINAL(` answer in `text` (which starts right after the `(`):
 * the index of the `)` that balances it, or `undefined`. With `quotes`, a
 * `(` or `)` inside `"…"` or `` `…` `` does not count (apostrophes are prose,
 * so `'` never quotes).
 */
const balancedEnd = (text: string, quotes: boolean): number | undefined => {
  let depth = 1
  let quote: string | undefined
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string
    if (quote !== undefined) {
      if (c === "\\") i++
      else if (c === quote) quote = undefined
      continue
    }
    if (quotes && (c === '"' || c === "`")) quote = c
    else if (c === "(") depth++
    else if (c === ")") {
      depth--
      if (depth === 0) return i
    }
  }
  return undefined
}

/**
 * The answer of a `FINAL(` whose text (after the `(`, to the end of the
 * reply) is `rest`: up to the balancing `)`, counting quoted parentheses out
 * when the quotes pair up, else counting every parenthesis.
 */
const finalText = (rest: string): string | undefined => {
  const end = balancedEnd(rest, true) ?? balancedEnd(rest, false)
  return end === undefined ? undefined : rest.slice(0, end).trim()
}

interface Found {
  readonly marker: FinalMarker
  readonly index: number
}

/**
 * Find a final-answer marker among lines outside code. Returns the marker and
 * the index of the line where it starts. `indented`: whether a marker indented
 * with white space only counts (not in bare code, where `    FINAL(x)` is a
 * call of the REPL function inside a block of code).
 */
const findFinal = (
  lines: ReadonlyArray<string>,
  candidates: ReadonlyArray<Line>,
  warnings: Array<string>,
  indented: boolean
): Found | undefined => {
  for (const { index, line: raw } of candidates) {
    const prefix = decoration.exec(raw)?.[0] ?? ""
    if (prefix.length > 0 && !indented && prefix.trim().length === 0) continue
    const line = raw.slice(prefix.length)
    if (!line.startsWith("FINAL")) continue
    // As for FINAL(...), what follows the closing ")" on its line is not part of the marker.
    const varParen = /^FINAL_VAR\(([^()\n]*)\)/.exec(line)
    const varColon = /^FINAL_VAR(?:\*\*|__)?:(?:\*\*|__)?[ \t]*(.*)$/.exec(line)
    const v = varParen ?? varColon
    if (v) {
      const decorated = varParen === null && prefix.trim().length > 0
      const name = finalVarName(decorated ? stripClosing(v[1] ?? "") : (v[1] ?? ""))
      if (name !== undefined) return { marker: { _tag: "FinalVar", name }, index }
      warnings.push(`FINAL_VAR needs a variable name, got ${JSON.stringify((v[1] ?? "").trim())}.`)
      continue
    }
    if (line.startsWith("FINAL(")) {
      const text = finalText([line.slice("FINAL(".length), ...lines.slice(index + 1)].join("\n"))
      if (text === undefined) {
        warnings.push(
          "FINAL( was opened but its parentheses never balance, so it was not taken as your answer. Write FINAL(answer) with as many ) as (, or put the answer in a variable and use FINAL_VAR(name)."
        )
        continue
      }
      return { marker: { _tag: "FinalText", text }, index }
    }
    const colon = /^FINAL(?:\*\*|__)?:(?:\*\*|__)?[ \t]?(.*)$/.exec(line)
    if (colon) {
      const text = [colon[1] ?? "", ...lines.slice(index + 1)].join("\n").trim()
      return { marker: { _tag: "FinalText", text: prefix.trim().length > 0 ? stripClosing(text) : text }, index }
    }
  }
  return undefined
}

const stripClosing = (text: string) => text.replace(closingDecoration, "").trim()

// -----------------------------------------------------------------------------
// Bare code or prose
// -----------------------------------------------------------------------------

const PY_BLOCK =
  /^(?:if|elif|else|for|while|def|class|with|try|except|finally|async[ \t]+(?:def|for|with))\b.*:[ \t]*(?:#.*)?$/
const PY_SIMPLE =
  /^(?:import[ \t]+[\w.]+(?:[ \t]+as[ \t]+\w+)?(?:[ \t]*,[ \t]*[\w.]+(?:[ \t]+as[ \t]+\w+)?)*|from[ \t]+[\w.]+[ \t]+import[ \t]+.+|pass|break|continue|(?:return|raise|del|assert|global|nonlocal|yield)(?:[ \t]+[^ \t].*)?)[ \t]*(?:#.*)?$/
const JS_KEYWORD =
  /^(?:(?:const|let|var)[ \t]+[\w$[{]|(?:if|for|while|switch|catch)[ \t]*\(|(?:else|try|finally|do)\b[ \t]*(?:\{|if\b|$)|(?:async[ \t]+)?function\b[ \t]*[\w$]*[ \t]*\(|class[ \t]+[\w$]+[ \t]*(?:extends[ \t]+[\w$.]+[ \t]*)?\{|return\b|throw\b|(?:import|export)\b|new[ \t]+[A-Z$_][\w$.]*[ \t]*\()/
/** An expression statement: a name (dotted), then a call, an index or an assignment. */
const STATEMENT = /^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*(?:\(|\[|[ \t]*(?:=(?!=)|[-+*/%&|^@]=|\*\*=|\/\/=|>>=|<<=))/
/** `x: int = …`: an annotated assignment (Python). */
const ANNOTATED = /^[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*[ \t]*:[ \t]*[A-Za-z_][\w.]*(?:\[[^\]]*\])?[ \t]*=(?!=)/
/** `a, b = …`: a tuple assignment. */
const TUPLE = /^[A-Za-z_$][\w$]*(?:[ \t]*,[ \t]*[A-Za-z_$][\w$]*)+[ \t]*=(?!=)/
/** A line that starts with a bracket, a quote, a decorator or a closing brace. */
const PUNCTUATION = /^[([{)\]}"'`@]/

const pyComment = (line: string) => line.startsWith("#")
const jsComment = (line: string) => line.startsWith("//") || line.startsWith("/*")

/** Whether one line, trimmed and not inside a bracket or a string, opens a statement of `language`. */
const codeLine = (line: string, language: Sandbox.Language | undefined): boolean => {
  const body = line.replace(/^await[ \t]+/, "")
  if (STATEMENT.test(body) || TUPLE.test(body) || PUNCTUATION.test(body)) return true
  const python =
    language !== "javascript" &&
    (pyComment(line) || PY_BLOCK.test(line) || PY_SIMPLE.test(line) || ANNOTATED.test(body))
  const javascript = language !== "python" && (jsComment(line) || JS_KEYWORD.test(line))
  return python || javascript
}

/**
 * Track what a line leaves open: brackets (so the lines of a multi-line call
 * are code) and multi-line strings (Python `"""`/`'''`, JavaScript `` ` ``),
 * whose lines may read like prose.
 */
interface Open {
  readonly depth: number
  readonly string: string | undefined
}

const scanLine = (line: string, open: Open): Open => {
  let depth = open.depth
  let string = open.string
  let i = 0
  while (i < line.length) {
    if (string !== undefined) {
      if (line[i] === "\\") i += 2
      else if (line.startsWith(string, i)) {
        i += string.length
        string = undefined
      } else i++
      continue
    }
    const c = line[i] as string
    if (c === "#") break
    if (line.startsWith("//", i)) break
    const triple = line.startsWith('"""', i) ? '"""' : line.startsWith("'''", i) ? "'''" : undefined
    if (triple !== undefined) {
      string = triple
      i += 3
      continue
    }
    if (c === '"' || c === "'") {
      // A one-line string: skip to its end (an unclosed one ends the line, as in Python).
      let j = i + 1
      while (j < line.length && line[j] !== c) j += line[j] === "\\" ? 2 : 1
      i = j + 1
      continue
    }
    if (c === "`") string = "`"
    else if (c === "(" || c === "[" || c === "{") depth++
    else if (c === ")" || c === "]" || c === "}") depth = Math.max(0, depth - 1)
    i++
  }
  return { depth, string }
}

/**
 * Whether a reply with no fence is bare code (the seed's protocol) rather than
 * prose: every line is blank, inside a bracket or multi-line string left open
 * by the lines before, indented under a line of code, or opens a statement —
 * a dotted name followed by `(`, `[` or an assignment, a tuple or (Python)
 * annotated assignment, a
 * line starting with a bracket, a quote or `@`, a comment, or a keyword form
 * of the language (Python: `import x`, `from x import y`, `if …:`, `def f(…):`,
 * `return …`; JavaScript: `const x`, `if (`, `function`, `return`, …),
 * optionally after `await`.
 *
 * The rule is conservative in both directions: a sentence ("The answer is
 * 42.", "Let me look at the data.") is never code, and the seed's bare code
 * (`snippet = peek(80)`, `print(x)`, loops, multi-line strings) always is.
 *
 * @since 0.2.0
 * @category Parsing
 */
export const looksLikeCode = (text: string, language?: Sandbox.Language): boolean => {
  let open: Open = { depth: 0, string: undefined }
  let previousCode = false
  let any = false
  for (const line of text.replace(/\r\n?/g, "\n").split("\n")) {
    const inside = open.depth > 0 || open.string !== undefined
    const trimmed = line.trim()
    if (!inside && trimmed.length > 0) {
      const indented = /^[ \t]/.test(line)
      if (!(indented && previousCode) && !codeLine(trimmed, language)) return false
      previousCode = true
      any = true
    }
    open = scanLine(line, open)
  }
  return any
}

// -----------------------------------------------------------------------------
// Parsing
// -----------------------------------------------------------------------------

const proseOf = (lines: ReadonlyArray<string>): string | undefined => {
  const text = lines.join("\n").trim()
  return text.length > 0 ? text : undefined
}

/**
 * Parse one reply of the root model.
 *
 * Fenced code blocks are run in order; without any fence, the reply up to its
 * final-answer line is code (the seed's protocol) when it {@link looksLikeCode},
 * else prose, and nothing is run. A final marker must start a line outside
 * code, after white space or decoration (`**`, `__`, `>`, a list bullet, a
 * backtick); in bare code only a marker at column 0 or decorated counts, an
 * indented one being a call of the REPL's `FINAL` inside a block.
 *
 * @since 0.1.0
 * @category Parsing
 */
export const parse = (reply: string, options: ParseOptions = {}): ParsedReply => {
  const lines = reply.replace(/\r\n?/g, "\n").split("\n")
  const split = splitFences(lines)
  const warnings = [...split.warnings]
  if (split.fenced) {
    const found = findFinal(lines, split.prose, warnings, true)
    const prose = proseOf(split.prose.filter((l) => found === undefined || l.index < found.index).map((l) => l.line))
    return {
      protocol: "fenced",
      code: split.code,
      ...(found ? { final: found.marker } : {}),
      warnings,
      ...(prose !== undefined ? { prose } : {})
    }
  }
  const all = lines.map((line, index) => ({ index, line }))
  const bareWarnings = [...warnings]
  // A reply that opens with a marker, even indented, is answering, not writing a block of code.
  const first = all.find((l) => l.line.trim().length > 0)
  const leadWarnings: Array<string> = []
  const leading = first === undefined ? undefined : findFinal(lines, [first], leadWarnings, true)
  // A malformed marker is not code to run: the model is told what is wrong with it.
  if (leading === undefined && leadWarnings.length > 0) {
    return { protocol: "prose", code: [], warnings: [...warnings, ...leadWarnings], prose: reply.trim() }
  }
  const bare = leading ?? findFinal(lines, all, bareWarnings, false)
  const before = (found: Found | undefined) => lines.slice(0, found ? found.index : lines.length).join("\n")
  const code = before(bare).trim()
  if (code.length === 0 && bare === undefined) return { protocol: "empty", code: [], warnings }
  if (code.length === 0 || looksLikeCode(before(bare), options.language)) {
    return {
      protocol: "bare",
      code: code.length > 0 ? [code] : [],
      ...(bare ? { final: bare.marker } : {}),
      warnings: bareWarnings
    }
  }
  // Prose: its marker may be indented, which one in bare code may not.
  const proseWarnings = [...warnings]
  const found = findFinal(lines, all, proseWarnings, true)
  const prose = proseOf(lines.slice(0, found ? found.index : lines.length))
  return {
    protocol: "prose",
    code: [],
    ...(found ? { final: found.marker } : {}),
    warnings: proseWarnings,
    ...(prose !== undefined ? { prose } : {})
  }
}

/**
 * Render a final marker back to reply text (the paper's protocol).
 *
 * @since 0.1.0
 * @category Formatting
 */
export const formatFinal = (marker: FinalMarker): string =>
  marker._tag === "FinalVar" ? `FINAL_VAR(${marker.name})` : `FINAL(${marker.text})`
