/**
 * A scripted "oracle" model for the end-to-end eval: as the root of an RLM it
 * writes real JavaScript REPL code that solves `sniah` and `oolong` through
 * `context`, chunks and `llm_query_batched` (or, when its system prompt offers
 * no sub-call, with plain code); as the sub-model it answers from the snippet
 * it is given; as the `direct` model it answers from the (cut) context it is
 * shown, so it fails once the needle or the records are cut off.
 */
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Method from "@rlm-runtime/eval/Method"
import type { Kind } from "@rlm-runtime/eval/Task"
import * as Tasks from "@rlm-runtime/eval/Tasks"
import * as Oolong from "@rlm-runtime/eval/tasks/Oolong"
import * as Sniah from "@rlm-runtime/eval/tasks/Sniah"
import { Effect, Layer } from "effect"

const SNIAH_ASK = "Find the special magic number for "
const OOLONG_ASK = "Count the records of each label in the text below."

const sniahCode = (key: string, subcalls: boolean) =>
  subcalls
    ? [
        "const parts = chunk(1500, 100)",
        `const replies = llm_query_batched(parts.map((p) => ${JSON.stringify(`${SNIAH_ASK}${key} in the text below. Reply with the number only, or NONE.\n\n`)} + p))`,
        'const hits = replies.map((r) => r.trim()).filter((r) => r !== "NONE")',
        'var answer = hits.length > 0 ? hits[0] : "not found"',
        "console.log(parts.length, answer)"
      ].join("\n")
    : [
        `const m = P.match(/special magic number for ${key} is (\\d+)/)`,
        'var answer = m ? m[1] : "not found"',
        "console.log(answer)"
      ].join("\n")

const oolongAnswer = (question: string) => {
  const quoted = [...question.matchAll(/"([a-z]+)"/g)].map((m) => m[1] ?? "")
  if (question.startsWith("How many")) return `var answer = String(total[${JSON.stringify(quoted[0])}] || 0)`
  if (quoted.length === 2) {
    const [x, y] = quoted.map((q) => JSON.stringify(q))
    return `var answer = (total[${x}] || 0) > (total[${y}] || 0) ? ${x} : ${y}`
  }
  return "var answer = Object.keys(total).sort((a, b) => total[b] - total[a])[0]"
}

const oolongCode = (question: string, subcalls: boolean) =>
  [
    "const total = {}",
    ...(subcalls
      ? [
          'const lines = P.split("\\n")',
          "const groups = []",
          'for (let i = 0; i < lines.length; i += 30) groups.push(lines.slice(i, i + 30).join("\\n"))',
          `const replies = llm_query_batched(groups.map((g) => ${JSON.stringify(`${OOLONG_ASK} Reply with JSON {label: count}.\n\n`)} + g))`,
          "for (const r of replies) { const c = JSON.parse(r); for (const k in c) total[k] = (total[k] || 0) + c[k] }"
        ]
      : ["for (const m of P.matchAll(/label=([a-z]+)/g)) total[m[1]] = (total[m[1]] || 0) + 1"]),
    oolongAnswer(question),
    "console.log(JSON.stringify(total), answer)"
  ].join("\n")

const questionOf = (text: string) => /Question: (.*)/.exec(text)?.[1] ?? ""

/** The kind of a task, from its question. */
export const kindOf = (question: string): Kind =>
  question.includes("special magic number")
    ? "sniah"
    : question.includes("label")
      ? "oolong"
      : question.includes("pair of records")
        ? "pairs"
        : question.includes("works for")
          ? "multidoc"
          : "codeqa"

const solveVisible = (context: string, question: string) => Tasks.families[kindOf(question)].solve(context, question)

const WHOLE_ASK = "Answer the question about the text below.\nQuestion: "

/** pairs, multidoc, codeqa: the whole context to one sub-call (small contexts only); no answer without sub-calls. */
const wholeCode = (question: string, subcalls: boolean) =>
  subcalls
    ? `var answer = llm_query(${JSON.stringify(`${WHOLE_ASK}${question}\n\n`)} + P).trim()\nconsole.log(answer)`
    : 'var answer = "unknown"\nconsole.log(answer)'

/** The oracle's reply to one request. */
export const reply = (request: LlmAdapter.ChatRequest): string => {
  const system = request.messages.find((m) => m.role === "system")?.content ?? ""
  const last = request.messages[request.messages.length - 1]?.content ?? ""
  if (request.role === "sub") {
    if (last.startsWith(SNIAH_ASK)) {
      const key = last.slice(SNIAH_ASK.length).split(" ")[0] ?? ""
      return Sniah.solve(last, `magic number for ${key}`) || "NONE"
    }
    if (last.startsWith(OOLONG_ASK)) return JSON.stringify(Object.fromEntries(Oolong.countLabels(last)))
    if (last.startsWith(WHOLE_ASK)) return solveVisible(last.slice(last.indexOf("\n\n") + 2), questionOf(last))
    return "I cannot tell."
  }
  if (system === Method.DIRECT_SYSTEM_PROMPT) {
    const user = request.messages[1]?.content ?? ""
    const question = questionOf(user)
    const body = user.slice("Context:\n".length)
    const end = [body.indexOf("\n[… the last"), body.lastIndexOf("\n\nQuestion: ")].filter((i) => i >= 0)
    const visible = body.slice(0, Math.min(...end))
    return solveVisible(visible, question) || "I do not know."
  }
  // The root of an RLM: code first, then the answer from the variable.
  if (request.messages.some((m) => m.role === "assistant")) return "FINAL_VAR(answer)"
  const first = request.messages.find((m) => m.role === "user")?.content ?? ""
  const question = questionOf(first)
  const subcalls = system.includes("llm_query")
  const kind = kindOf(question)
  const code =
    kind === "sniah"
      ? sniahCode(/magic number for ([a-z]+-[a-z]+)/.exec(question)?.[1] ?? "", subcalls)
      : kind === "oolong"
        ? oolongCode(question, subcalls)
        : wholeCode(question, subcalls)
  return `\`\`\`repl\n${code}\n\`\`\``
}

/** The oracle as an adapter; usage is estimated (chars / 4), so every run's tokens are deterministic. */
export const layer: Layer.Layer<LlmAdapter.LlmAdapter> = Layer.succeed(
  LlmAdapter.LlmAdapter,
  LlmAdapter.make({
    model: (role) => (role === "root" ? "oracle" : "oracle-sub"),
    chat: (request) =>
      Effect.sync(() => {
        const text = reply(request)
        const inputTokens = LlmAdapter.estimateRequestTokens(request.messages)
        const outputTokens = LlmAdapter.estimateTokens(text)
        return new LlmAdapter.ChatResponse({
          text,
          model: request.role === "root" ? "oracle" : "oracle-sub",
          usage: new LlmAdapter.Usage({ inputTokens, outputTokens, totalTokens: inputTokens + outputTokens }),
          finishReason: "stop"
        })
      })
  })
)
