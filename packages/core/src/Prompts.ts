/**
 * System prompts and the per-turn messages of the run loop.
 *
 * @since 0.1.0
 */
import type * as Sandbox from "@rlm-runtime/sandbox/Sandbox"
import type { ContextMetadata } from "@rlm-runtime/trace/TraceEvent"
import * as RlmContext from "./RlmContext.js"

/**
 * The system prompt for a Python REPL.
 *
 * @since 0.1.0
 * @category Prompts
 */
export const PYTHON_SYSTEM_PROMPT = `You answer a question about a prompt that is too large to read at once.
The prompt is not in this conversation. It is stored in a persistent Python REPL that you drive by writing code.

In the REPL:
- \`P\` is the whole prompt as one str; \`context\` is the same str, or a list of str when the prompt is a list of documents.
- \`peek(n=2000)\` and \`tail(n=2000)\` return the first / last n characters; \`lenP()\` returns len(P).
- \`slice(start, end)\` returns P[start:end]; \`find(needle, start=0)\` returns every offset where needle occurs.
- \`chunk(size, overlap=0)\` returns P cut into consecutive pieces covering it in order.
- \`llm_query(prompt)\` asks a sub-model and returns its reply as a str. It sees only the prompt you pass it,
  so include the snippet it should read (tens of thousands of characters are fine; the whole P is not).
- \`llm_query_batched(prompts)\` runs many sub-model calls concurrently and returns the replies in order. Prefer it to loops of llm_query.
- \`rlm_query(prompt)\` starts a recursive RLM over the given text, for a sub-problem that is itself large.
- \`budget()\` returns a dict of what is left: steps, subCalls, inputTokens, outputTokens, totalTokens, costUsd,
  timeMs and depth (None: no limit). Check it before a large batch of sub-calls.
- \`SHOW_VARS()\` lists the variables you created. Variables persist between your code blocks.
- print() what you want to see. Output longer than the display limit is cut, so print summaries, not whole chunks.

How to reply:
- Put code to run in \`\`\`repl fenced blocks. Blocks run in order, and you then see their output.
- Work step by step: look at the structure of P first, then search, then read the relevant parts with sub-calls.
- When you know the answer, write on its own line, outside any code block, either FINAL(your answer)
  or FINAL_VAR(variable_name) to answer with the value of a REPL variable. Do not answer before you have looked at the data.`

/**
 * The system prompt for a JavaScript REPL.
 *
 * @since 0.1.0
 * @category Prompts
 */
export const JAVASCRIPT_SYSTEM_PROMPT = `You answer a question about a prompt that is too large to read at once.
The prompt is not in this conversation. It is stored in a persistent JavaScript REPL (plain ECMAScript, no Node.js,
no modules, no network) that you drive by writing code.

In the REPL:
- \`P\` is the whole prompt as a string; \`context\` is the same string, or an array of strings when the prompt is a list of documents.
- \`peek(n = 2000)\` and \`tail(n = 2000)\` return the first / last n characters; \`lenP()\` returns P.length.
- \`slice(start, end)\` returns P.slice(start, end); \`find(needle, start = 0)\` returns every offset where needle occurs.
- \`chunk(size, overlap = 0)\` returns P cut into consecutive pieces covering it in order.
- \`llm_query(prompt)\` asks a sub-model and returns its reply as a string (it looks synchronous; do not await it).
  The sub-model sees only the prompt you pass, so include the snippet it should read.
- \`llm_query_batched(prompts)\` runs many sub-model calls concurrently and returns the replies in order.
- \`rlm_query(prompt)\` starts a recursive RLM over the given text, for a sub-problem that is itself large.
- \`budget()\` returns an object of what is left: steps, subCalls, inputTokens, outputTokens, totalTokens, costUsd,
  timeMs and depth (null: no limit). Check it before a large batch of sub-calls.
- \`SHOW_VARS()\` lists the variables you created. Top-level variables persist between your code blocks.
- console.log() what you want to see. Output longer than the display limit is cut, so log summaries.
- \`P\`, \`context\` and the helpers are read-only. Call llm_query in the block's normal flow, not after an \`await\`.

How to reply:
- Put code to run in \`\`\`repl fenced blocks. Blocks run in order, and you then see their output.
- When you know the answer, write on its own line, outside any code block, either FINAL(your answer)
  or FINAL_VAR(variable_name) to answer with the value of a REPL variable. Do not answer before you have looked at the data.`

/**
 * A stricter Python prompt for local Llama-family models, which tend to
 * answer from the preview instead of using the REPL. Pair it with
 * `requireReplBeforeFinal`.
 *
 * @since 0.1.0
 * @category Prompts
 */
export const LLAMA_SYSTEM_PROMPT = `You are a program that answers a question by writing Python code. You cannot see the data.
The data is in a Python REPL in the variable P (a str). You MUST use the REPL before answering.

Rules, all mandatory:
1. Every reply is EITHER one \`\`\`repl code block OR one final answer line. Never both. Never plain prose.
2. Your first reply MUST be a \`\`\`repl block that looks at the data, for example: print(lenP()); print(peek(500))
3. Use print() to see values. You only see what you print. Long output is cut.
4. Helpers: peek(n), tail(n), lenP(), slice(start, end), find(needle) -> list of offsets, chunk(size, overlap) -> list of str,
   llm_query(prompt) -> str (a helper model reads the text you include in the prompt),
   llm_query_batched(list_of_prompts) -> list of str, SHOW_VARS().
5. Store results in variables. Variables persist between replies.
6. To answer, reply with exactly one line: FINAL(the answer) or FINAL_VAR(name_of_variable). Nothing else on that line.
7. Do not guess. Do not answer from memory. Answer only from what your code printed.`

/**
 * How the root model replies: `"fenced"` (code in ```` ```repl ```` blocks,
 * `FINAL(...)` / `FINAL_VAR(name)` lines) or `"tools"` (the provider's tools
 * API: a `run_code` tool and a `final_answer` tool).
 *
 * @since 0.2.0
 * @category Models
 */
export type ReplyProtocol = "fenced" | "tools"

const toolsHowTo = (language: "python" | "javascript") => `How to reply:
- Run code by calling the run_code tool with {"code": "<${language === "javascript" ? "JavaScript" : "Python"} code>"}. Do not put code in your message text:
  only run_code calls are run. Several run_code calls in one reply run in order, and each call's result is its output.
- Work step by step: look at the structure of P first, then search, then read the relevant parts with sub-calls.
- When you know the answer, call the final_answer tool: {"answer": "<your answer>"}, or {"variable": "<name>"} to answer
  with the value of a REPL variable. Do not answer before you have looked at the data.
- Every reply must call at least one of the two tools.`

/** The REPL part of a fenced prompt, without its "How to reply" section. */
const replPart = (prompt: string) => prompt.slice(0, prompt.indexOf("How to reply:"))

/**
 * The system prompt for a Python REPL driven through tools.
 *
 * @since 0.2.0
 * @category Prompts
 */
export const PYTHON_TOOLS_SYSTEM_PROMPT = `${replPart(PYTHON_SYSTEM_PROMPT)}${toolsHowTo("python")}`

/**
 * The system prompt for a JavaScript REPL driven through tools.
 *
 * @since 0.2.0
 * @category Prompts
 */
export const JAVASCRIPT_TOOLS_SYSTEM_PROMPT = `${replPart(JAVASCRIPT_SYSTEM_PROMPT)}${toolsHowTo("javascript")}`

/**
 * The system prompt for a language and reply protocol (default `"fenced"`);
 * with user tools, followed by their listing (see {@link toolListing}).
 *
 * @since 0.1.0
 * @category Prompts
 */
export const systemPromptFor = (
  language: "python" | "javascript",
  protocol: ReplyProtocol = "fenced",
  tools: ReadonlyArray<Sandbox.ToolSpec> = [],
  options: { readonly subCalls?: boolean | undefined } = {}
): string => {
  const full =
    protocol === "tools"
      ? language === "javascript"
        ? JAVASCRIPT_TOOLS_SYSTEM_PROMPT
        : PYTHON_TOOLS_SYSTEM_PROMPT
      : language === "javascript"
        ? JAVASCRIPT_SYSTEM_PROMPT
        : PYTHON_SYSTEM_PROMPT
  const base = options.subCalls === false ? withoutSubCalls(full) : full
  return tools.length === 0 ? base : `${base}\n\n${toolListing(language, tools)}`
}

/**
 * What the system prompts say about sub-calls, and what each becomes without
 * them (`RunOptions.subCalls: false`): the lines that describe `llm_query`,
 * `llm_query_batched` and `rlm_query` go, and the advice about sub-calls is
 * reworded.
 */
const subCallText: ReadonlyArray<readonly [string, string]> = [
  [
    "- `llm_query(prompt)` asks a sub-model and returns its reply as a str. It sees only the prompt you pass it,\n  so include the snippet it should read (tens of thousands of characters are fine; the whole P is not).\n",
    ""
  ],
  [
    "- `llm_query_batched(prompts)` runs many sub-model calls concurrently and returns the replies in order. Prefer it to loops of llm_query.\n",
    ""
  ],
  [
    "- `llm_query(prompt)` asks a sub-model and returns its reply as a string (it looks synchronous; do not await it).\n  The sub-model sees only the prompt you pass, so include the snippet it should read.\n",
    ""
  ],
  ["- `llm_query_batched(prompts)` runs many sub-model calls concurrently and returns the replies in order.\n", ""],
  ["- `rlm_query(prompt)` starts a recursive RLM over the given text, for a sub-problem that is itself large.\n", ""],
  [" Check it before a large batch of sub-calls.", ""],
  [" Call llm_query in the block's normal flow, not after an `await`.", ""],
  [", then read the relevant parts with sub-calls.", ", then read the relevant parts."]
]

/**
 * A system prompt of this module without its sub-call tools (see
 * {@link subCallText}); a prompt of the user's own is returned as it is.
 *
 * @since 0.3.0
 * @category Prompts
 */
export const withoutSubCalls = (prompt: string): string =>
  subCallText.reduce((text, [from, to]) => text.split(from).join(to), prompt)

/**
 * The feedback for a reply that did nothing: no code and no final answer
 * (fenced), or no tool call (tools).
 *
 * @since 0.2.0
 * @category Messages
 */
export const nothingToDo = (protocol: ReplyProtocol = "fenced"): string =>
  protocol === "tools"
    ? "Your reply called no tool. Call run_code to run code in the REPL, or final_answer to answer."
    : "Your reply had no code and no final answer. Write code in a ```repl block, or answer with FINAL(...) / FINAL_VAR(name)."

/**
 * A tool's signature as model code calls it: \`name(a, b=None)\` in Python,
 * \`name(a, b)\` in JavaScript (required parameters first).
 *
 * @since 0.2.0
 * @category Prompts
 */
export const toolSignature = (language: "python" | "javascript", tool: Sandbox.ToolSpec): string => {
  const ordered = [...tool.parameters.filter((p) => !p.optional), ...tool.parameters.filter((p) => p.optional)]
  const params = ordered.map((p) =>
    p.optional ? (language === "python" ? `${p.name}=None` : `${p.name} = undefined`) : p.name
  )
  return `${tool.name}(${params.join(", ")})`
}

/**
 * The listing of user tools in the system prompt: each signature and
 * description, and how a failure shows.
 *
 * @since 0.2.0
 * @category Prompts
 */
export const toolListing = (language: "python" | "javascript", tools: ReadonlyArray<Sandbox.ToolSpec>): string =>
  [
    "More functions of the host are available in the REPL (they look synchronous; arguments are JSON values):",
    ...tools.map(
      (tool) => `- \`${toolSignature(language, tool)}\`${tool.description === "" ? "" : `: ${tool.description}`}`
    ),
    language === "python"
      ? "A call with bad arguments, or that fails, raises a RuntimeError with the reason."
      : "A call with bad arguments, or that fails, throws an Error with the reason."
  ].join("\n")

/**
 * The first user message: the query and what is known about the context.
 *
 * @since 0.1.0
 * @category Messages
 */
export const firstTurn = (query: string, meta: ContextMetadata, extra?: string): string =>
  [
    "The context is loaded in the REPL. What you know about it:",
    RlmContext.describe(meta),
    "",
    `Question: ${query}`,
    ...(extra ? ["", extra] : []),
    "",
    "Start by writing code to look at the context. Do not answer yet."
  ].join("\n")

/**
 * The message asking for an answer when the step budget is spent.
 *
 * @since 0.1.0
 * @category Messages
 */
export const answerNow = (query: string, protocol: ReplyProtocol = "fenced"): string =>
  [
    protocol === "tools"
      ? "You have no steps left. Do not run more code."
      : "You have no steps left. Do not write more code.",
    protocol === "tools"
      ? `Answer the question now by calling final_answer with {"answer": ...} or {"variable": ...}, using what you found so far.`
      : `Answer the question now with FINAL(your answer) or FINAL_VAR(variable_name), using what you found so far.`,
    `Question: ${query}`
  ].join("\n")

/**
 * Instructions added when the answer must decode with an output Schema.
 *
 * @since 0.1.0
 * @category Messages
 */
export const typedAnswer = (description: string, protocol: ReplyProtocol = "fenced"): string =>
  `The answer must be JSON matching: ${description}. Build it in a variable (Python: json.dumps(...); JavaScript: JSON.stringify(...)) and answer with ${protocol === "tools" ? 'final_answer({"variable": name})' : "FINAL_VAR(name)"}.`

/**
 * What happened to an interpreter that was lost, in words, from the sandbox
 * error's reason and message.
 *
 * @since 0.2.0
 * @category Messages
 */
export const interpreterLostCause = (reason: string, message: string): string => {
  if (reason === "MemoryExceeded" || /out of memory|memory limit/i.test(message)) return "ran out of memory"
  if (reason === "Timeout") return "ran past its time limit and did not stop when interrupted, so it was killed"
  if (reason === "Protocol") {
    return "broke the protocol with the host (it sent a malformed or oversized message), so it was stopped"
  }
  if (/stack|recursion/i.test(message)) return "overflowed its stack (recursion or nesting too deep)"
  return "crashed"
}

/**
 * The message telling the model its interpreter was lost and replaced.
 *
 * @since 0.2.0
 * @category Messages
 */
export const interpreterLost = (options: {
  readonly language: "python" | "javascript"
  readonly reason: string
  readonly message: string
  /** Losses in this run so far, this one included. */
  readonly restarts: number
  readonly maxRestarts: number
  /** Blocks of the reply after the lost one, which were not run. */
  readonly skipped: number
}): string => {
  const name = options.language === "javascript" ? "JavaScript" : "Python"
  const left = options.maxRestarts - options.restarts
  return [
    `[interpreter lost] The ${name} interpreter ${interpreterLostCause(options.reason, options.message)}, and was replaced by a fresh one.`,
    "All your REPL variables are gone: recompute what you still need, in smaller steps.",
    "`P`, `context` and the helper functions are loaded again, unchanged.",
    ...(options.skipped > 0
      ? [`The ${options.skipped === 1 ? "block" : `${options.skipped} blocks`} after the lost one did not run.`]
      : []),
    left > 0
      ? `Restarts left in this run: ${left}. Avoid what crashed it (very deep recursion or nesting, huge values).`
      : "No restarts are left: if the interpreter is lost again, the run fails."
  ].join("\n")
}
