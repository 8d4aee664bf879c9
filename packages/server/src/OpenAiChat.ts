/**
 * How an OpenAI chat request maps to a run, and a run back to OpenAI's
 * objects. Pure functions over data.
 *
 * - The query is the text of the **last** message, which must be a `user`
 *   message with some text.
 * - The context is the earlier messages, rendered one after another,
 *   separated by a blank line, each as `<role>: <text>` (a `name` is added as
 *   `<role> (<name>): `). No earlier message: an empty context. A request's
 *   `context_id` replaces them (then any earlier message is ignored).
 * - Content is a string or a list of parts, of which only `text` parts are
 *   read (joined with a newline); any other part is a 400.
 *
 * @since 0.1.0
 */
import * as Budget from "@rlm-runtime/core/Budget"
import type * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import * as Either from "effect/Either"
import { ApiError, invalid } from "./ApiError.js"
import type { RunError, RunView } from "./RunRegistry.js"
import type { ChatCompletion, ChatCompletionChunk, ChatMessage, Usage } from "./ServerApi.js"

/**
 * The text of a message's content.
 *
 * @since 0.1.0
 * @category Mapping
 */
export const textOf = (message: ChatMessage, index: number): Either.Either<string, ApiError> => {
  const content = message.content
  if (content === undefined || content === null) return Either.right("")
  if (typeof content === "string") return Either.right(content)
  const texts: Array<string> = []
  for (const part of content) {
    if (part.type !== "text" || part.text === undefined) {
      return Either.left(
        invalid(
          `messages[${index}].content has a part of type ${JSON.stringify(part.type)}; only text parts are supported.`,
          `messages[${index}].content`,
          "unsupported_content"
        )
      )
    }
    texts.push(part.text)
  }
  return Either.right(texts.join("\n"))
}

/**
 * The query (the last user message) and the earlier messages.
 *
 * @since 0.1.0
 * @category Mapping
 */
export const split = (
  messages: ReadonlyArray<ChatMessage>
): Either.Either<{ readonly query: string; readonly history: ReadonlyArray<ChatMessage> }, ApiError> => {
  const last = messages[messages.length - 1]
  if (last === undefined || last.role !== "user") {
    return Either.left(
      invalid(
        last === undefined
          ? "messages is empty: the last message must be the user's query."
          : `the last message is a ${JSON.stringify(last.role)} message: the last message must be the user's query.`,
        "messages",
        "missing_query"
      )
    )
  }
  return Either.flatMap(textOf(last, messages.length - 1), (query) =>
    query.trim().length === 0
      ? Either.left(invalid("the last user message has no text: it is the query.", "messages", "missing_query"))
      : Either.right({ query, history: messages.slice(0, -1) })
  )
}

/**
 * The earlier messages as one context text (see the module's doc).
 *
 * @since 0.1.0
 * @category Mapping
 */
export const renderContext = (history: ReadonlyArray<ChatMessage>): Either.Either<string, ApiError> =>
  Either.map(Either.all(history.map((m, i) => Either.map(textOf(m, i), (text) => ({ m, text })))), (parts) =>
    parts.map(({ m, text }) => `${m.role}${m.name !== undefined ? ` (${m.name})` : ""}: ${text}`).join("\n\n")
  )

/**
 * Whole-tree totals as OpenAI's usage.
 *
 * @since 0.1.0
 * @category Mapping
 */
export const usageOf = (totals: Budget.Totals): Usage => ({
  prompt_tokens: totals.inputTokens,
  completion_tokens: totals.outputTokens,
  total_tokens: totals.totalTokens
})

/**
 * The chat completion's id for a run.
 *
 * @since 0.1.0
 * @category Mapping
 */
export const completionId = (runId: string): string => `chatcmpl-${runId.replace(/^run_/, "")}`

/**
 * A successful run as a chat completion.
 *
 * @since 0.1.0
 * @category Mapping
 */
export const completion = (view: RunView, model: string): ChatCompletion => ({
  id: completionId(view.id),
  object: "chat.completion",
  created: Math.floor(view.createdAt / 1000),
  model,
  choices: [{ index: 0, message: { role: "assistant", content: view.answer ?? "" }, finish_reason: "stop" }],
  usage: usageOf(view.totals ?? Budget.emptyTotals),
  rlm: {
    run_id: view.id,
    steps: view.steps ?? 0,
    root_calls: view.totals?.rootCalls ?? 0,
    sub_calls: view.totals?.subCalls ?? 0
  }
})

/**
 * A chunk of a streamed completion.
 *
 * @since 0.1.0
 * @category Mapping
 */
export const chunk = (
  id: string,
  created: number,
  model: string,
  delta: ChatCompletionChunk["choices"][number]["delta"],
  finishReason: string | null = null,
  usage?: Usage | null
): ChatCompletionChunk => ({
  id,
  object: "chat.completion.chunk",
  created,
  model,
  choices: [{ index: 0, delta, finish_reason: finishReason }],
  ...(usage !== undefined ? { usage } : {})
})

const clip = (text: string, max: number) => (text.length > max ? `${text.slice(0, max)}… [${text.length} chars]` : text)

/**
 * What a step shows as `reasoning_content`: the top run's steps only (a
 * child run's are its own business), each as its number, its code blocks and
 * the start of their output, and any feedback. `undefined` for other events.
 *
 * @since 0.1.0
 * @category Mapping
 */
export const reasoningOf = (event: TraceEvent.TraceEvent): string | undefined => {
  if (event._tag !== "StepCompleted" || event.runId !== "run") return undefined
  const lines = [`Step ${event.step}:`]
  for (const block of event.blocks) {
    lines.push("```", clip(block.code, 2000), "```")
    const output = [block.stdout, block.stderr].filter((s) => s.length > 0).join("\n")
    if (output.length > 0) lines.push(`→ ${clip(output, 1000)}`)
  }
  if (event.blocks.length === 0) lines.push(clip(event.reply, 2000))
  if (event.feedback !== undefined) lines.push(`(${clip(event.feedback, 500)})`)
  return `${lines.join("\n")}\n\n`
}

/**
 * Why a run did not answer, as the error the client gets:
 *
 * - a budget limit: 422 `budget_exceeded_error`, `code` the limit (the
 *   message says the best partial answer, if any, is in `GET /v1/runs/:id`);
 * - the model provider failed: 502 `upstream_error`;
 * - the wall time (`timeout`): 504 `timeout_error`;
 * - the sandbox, or a server-side option: 500 `server_error`;
 * - interrupted (`DELETE`, shutdown): 503 `server_error`, code `interrupted`.
 *
 * @since 0.1.0
 * @category Mapping
 */
export const runError = (error: RunError | undefined, runId: string): ApiError => {
  const suffix = ` (run ${runId})`
  if (error === undefined) {
    return new ApiError({ status: 500, type: "server_error", message: `the run ended without an answer${suffix}.` })
  }
  switch (error._tag) {
    case "BudgetExceeded":
      return new ApiError({
        status: 422,
        type: "budget_exceeded_error",
        code: error.limit,
        message: `${error.message}${suffix}`
      })
    case "RunFailed":
      switch (error.reason) {
        case "Model":
          return new ApiError({
            status: 502,
            type: "upstream_error",
            code: "model_failed",
            message: `${error.message}${suffix}`
          })
        case "Timeout":
          return new ApiError({
            status: 504,
            type: "timeout_error",
            code: "timeout",
            message: `${error.message}${suffix}`
          })
        default:
          return new ApiError({
            status: 500,
            type: "server_error",
            code: error.reason.toLowerCase(),
            message: `${error.message}${suffix}`
          })
      }
    case "Interrupted":
      return new ApiError({
        status: 503,
        type: "server_error",
        code: "interrupted",
        message: `${error.message}${suffix}`
      })
    case "Defect":
      return new ApiError({ status: 500, type: "server_error", code: "internal", message: `${error.message}${suffix}` })
  }
}
