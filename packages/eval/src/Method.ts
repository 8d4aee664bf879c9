/**
 * How a task is answered:
 *
 * - `rlm`: `Rlm.run` with the run options given (the REPL, `llm_query`,
 *   `rlm_query`).
 * - `rlm-no-subcalls`: the paper's ablation, the REPL without sub-calls
 *   (`RunOptions.subCalls: false`): `llm_query`, `llm_query_batched`,
 *   `rlm_query` and `rlm_query_batched` are not defined in the REPL (a call
 *   the model makes anyway is a NameError / ReferenceError it can recover
 *   from) and the system prompt does not name them.
 * - `direct`: the base model given the whole context in one chat call (role
 *   `root`), cut to the window ({@link directRequest}).
 *
 * @since 0.1.0
 */
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import type * as Rlm from "@rlm-runtime/core/Rlm"
import * as Schema from "effect/Schema"
import type { EvalTask } from "./Task.js"

/**
 * @since 0.1.0
 * @category Models
 */
export const Method = Schema.Literal("rlm", "direct", "rlm-no-subcalls")

/**
 * @since 0.1.0
 * @category Models
 */
export type Method = typeof Method.Type

/**
 * Every method, in the order the report lists them.
 *
 * @since 0.1.0
 * @category Constants
 */
export const methods: ReadonlyArray<Method> = Method.literals

const SUBCALL = /\b(llm_query|llm_query_batched|rlm_query|rlm_query_batched)\b/

/**
 * A system prompt with the sub-call tools taken out: a line that defines one
 * (`- \`llm_query(prompt)\` …`) goes with its indented continuation lines; a
 * list of helpers keeps its other helpers; any other sentence that mentions
 * one is dropped, and advice about sub-calls ("with sub-calls", "before a
 * large batch of sub-calls") is reworded or dropped.
 *
 * @since 0.1.0
 * @category Prompts
 */
export const withoutSubcalls = (prompt: string): string => {
  const out: Array<string> = []
  let dropping = false
  for (const raw of prompt.split("\n")) {
    const continuation = /^\s{2,}\S/.test(raw) && !/^\s*(\d+\.|-)\s/.test(raw)
    if (dropping && continuation) continue
    dropping = /^\s*-\s*`(llm_query|llm_query_batched|rlm_query|rlm_query_batched)\(/.test(raw)
    if (dropping) continue
    let line = raw
      .replace(/,? then read the relevant parts with sub-calls/, ", then read the relevant parts")
      .replace(/\s*Check it before a large batch of sub-calls\./, "")
    if (SUBCALL.test(line)) {
      const indent = /^\s*/.exec(line)?.[0] ?? ""
      line = line.includes("->")
        ? line
            .split(/,\s*(?![^(]*\))/)
            .filter((part) => !SUBCALL.test(part))
            .join(", ")
        : line
            .split(/(?<=\.)\s+/)
            .filter((sentence) => !SUBCALL.test(sentence))
            .join(" ")
      if (line.trim().length === 0 || /^\s*-?\s*$/.test(line)) continue
      if (!line.startsWith(indent)) line = `${indent}${line.trimStart()}`
    }
    out.push(line)
  }
  // A list whose last items went away ends with its comma: close it.
  return out
    .map((line, i) => (line.endsWith(",") && !/^\s{2,}\S/.test(out[i + 1] ?? "") ? `${line.slice(0, -1)}.` : line))
    .join("\n")
}

/**
 * The run options of `rlm-no-subcalls`, from those of `rlm`: `subCalls:
 * false` (the REPL has no sub-call functions and the system prompt does not
 * name them). A system prompt of the user's own is rewritten with
 * {@link withoutSubcalls}.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const noSubcallsOptions = (options: Rlm.RunOptions): Rlm.RunOptions => ({
  ...options,
  subCalls: false,
  ...(options.systemPrompt !== undefined ? { systemPrompt: withoutSubcalls(options.systemPrompt) } : {})
})

/**
 * The system prompt of `direct`.
 *
 * @since 0.1.0
 * @category Prompts
 */
export const DIRECT_SYSTEM_PROMPT =
  "You answer a question about the context in the user's message. Read the context, then reply with the answer only: no explanation, no code."

/**
 * The `direct` request for a task: the system prompt, then the context (cut
 * to the window) and the question in one user message. With a `window` (in
 * tokens, estimated as `LlmAdapter.estimateTokens`, one per four characters),
 * the context keeps its head and is cut so the whole request is at most
 * `window` tokens; what was cut is said in one line. `shownChars` is how much
 * of the context the model saw.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const directRequest = (
  task: EvalTask,
  window: number | undefined
): { readonly request: LlmAdapter.ChatRequest; readonly shownChars: number } => {
  const head = (context: string) => `Context:\n${context}`
  const tail = (cut: number) =>
    `${cut > 0 ? `\n[… the last ${cut} characters of the context are cut: they do not fit the window …]` : ""}\n\nQuestion: ${task.question}`
  let shown = task.context.length
  if (window !== undefined) {
    const fixed = DIRECT_SYSTEM_PROMPT.length + head("").length + tail(task.context.length).length
    shown = Math.max(0, Math.min(task.context.length, window * 4 - fixed))
  }
  const context = task.context.slice(0, shown)
  const request = new LlmAdapter.ChatRequest({
    role: "root",
    messages: [
      new LlmAdapter.ChatMessage({ role: "system", content: DIRECT_SYSTEM_PROMPT }),
      new LlmAdapter.ChatMessage({ role: "user", content: `${head(context)}${tail(task.context.length - shown)}` })
    ]
  })
  return { request, shownChars: shown }
}
