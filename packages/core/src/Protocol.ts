/**
 * Parsing the root model's replies.
 *
 * Two protocols are understood:
 * - the paper's: code in fenced blocks (```` ```repl ````, ```` ```python ````, …) and a final answer as
 *   `FINAL(text)` or `FINAL_VAR(name)` at the start of a line outside the blocks;
 * - the seed's: a reply that is bare code, and `FINAL: text` / `FINAL_VAR: name` lines.
 *
 * @since 0.1.0
 */
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
 * @since 0.1.0
 * @category Models
 */
export const ParsedReply = Schema.Struct({
  /** `"tools"`: read from the reply's tool calls (see `ToolProtocol`). */
  protocol: Schema.Literal("fenced", "bare", "empty", "tools"),
  code: Schema.Array(Schema.String),
  final: Schema.optional(FinalMarker),
  /** Problems worth telling the model (an unclosed fence, a malformed FINAL_VAR). */
  warnings: Schema.Array(Schema.String)
})

/**
 * @since 0.1.0
 * @category Models
 */
export type ParsedReply = typeof ParsedReply.Type

const FENCE_LANGS = new Set(["", "repl", "python", "py", "python3", "javascript", "js", "typescript", "ts"])
const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/

const fenceOpen = /^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[ \t]*$/
const fenceClose = /^[ \t]*```[ \t]*$/

interface Split {
  readonly code: Array<string>
  /** Lines outside fences, with their index in `lines`. */
  readonly prose: Array<{ readonly index: number; readonly line: string }>
  readonly warnings: Array<string>
  readonly fenced: boolean
}

const splitFences = (lines: ReadonlyArray<string>): Split => {
  const code: Array<string> = []
  const prose: Array<{ index: number; line: string }> = []
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

const finalVarName = (raw: string): string | undefined => {
  const name = raw.trim().replace(/^["'`]|["'`]$/g, "")
  return IDENT.test(name) ? name : undefined
}

/**
 * Find a final-answer marker among lines outside code. Returns the marker and
 * the index of the line where it starts.
 */
const findFinal = (
  lines: ReadonlyArray<string>,
  candidates: ReadonlyArray<{ readonly index: number; readonly line: string }>,
  warnings: Array<string>
): { readonly marker: FinalMarker; readonly index: number } | undefined => {
  for (const { index, line } of candidates) {
    const varParen = /^FINAL_VAR\((.*)\)\s*$/.exec(line)
    const varColon = /^FINAL_VAR:\s*(.*)$/.exec(line)
    const v = varParen ?? varColon
    if (v) {
      const name = finalVarName(v[1] ?? "")
      if (name !== undefined) return { marker: { _tag: "FinalVar", name }, index }
      warnings.push(`FINAL_VAR needs a variable name, got ${JSON.stringify((v[1] ?? "").trim())}.`)
      continue
    }
    if (line.startsWith("FINAL(")) {
      // The answer runs to the last ")" of the reply, so it may span lines and contain parentheses.
      const rest = [line.slice("FINAL(".length), ...lines.slice(index + 1)].join("\n")
      const close = rest.lastIndexOf(")")
      if (close === -1) {
        warnings.push("FINAL( was opened but never closed with ).")
        continue
      }
      return { marker: { _tag: "FinalText", text: rest.slice(0, close).trim() }, index }
    }
    const colon = /^FINAL:\s?(.*)$/.exec(line)
    if (colon) {
      const text = [colon[1] ?? "", ...lines.slice(index + 1)].join("\n").trim()
      return { marker: { _tag: "FinalText", text }, index }
    }
  }
  return undefined
}

/**
 * Parse one reply of the root model.
 *
 * Fenced code blocks are run in order; without any fence, the whole reply is
 * code (the seed's protocol), except for its final-answer lines. A final
 * marker must start a line outside code.
 *
 * @since 0.1.0
 * @category Parsing
 */
export const parse = (reply: string): ParsedReply => {
  const lines = reply.replace(/\r\n?/g, "\n").split("\n")
  const split = splitFences(lines)
  const warnings = [...split.warnings]
  if (split.fenced) {
    const found = findFinal(lines, split.prose, warnings)
    return {
      protocol: "fenced",
      code: split.code,
      ...(found ? { final: found.marker } : {}),
      warnings
    }
  }
  const all = lines.map((line, index) => ({ index, line }))
  const found = findFinal(lines, all, warnings)
  const codeLines = found ? lines.slice(0, found.index) : lines
  const code = codeLines.join("\n").trim()
  if (code.length === 0 && !found) return { protocol: "empty", code: [], warnings }
  return {
    protocol: "bare",
    code: code.length > 0 ? [code] : [],
    ...(found ? { final: found.marker } : {}),
    warnings
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
