import * as FileSystem from "@effect/platform/FileSystem"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import {
  type ChatRequest,
  ChatResponse,
  estimateRequestTokens,
  estimateTokens,
  LlmError,
  ToolCall,
  Usage
} from "../LlmAdapter.js"

/** @internal */
export const shapeHint = `{"script": [string | [{"name": string, "arguments"?: any, "id"?: string}, ...] | {"text": string, "toolCalls": [...]}, ...], "rules": [{"match": string, "reply": string}, ...], "latencyMs"?: number, "usage"?: "estimated" | "unknown"}`

/** @internal */
export const promptOf = (request: ChatRequest): string => request.messages.map((m) => m.content).join("\n")

export { estimateTokens }

const preview = (text: string, max = 160): string => JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text)

/** @internal */
export interface ScriptedCall {
  readonly id?: string | undefined
  readonly name: string
  readonly arguments?: unknown
}

/** @internal */
export type ScriptEntry =
  | string
  | ReadonlyArray<ScriptedCall>
  | { readonly text: string; readonly toolCalls: ReadonlyArray<ScriptedCall> }

/** @internal */
export interface Scripted {
  readonly text: string
  readonly toolCalls: ReadonlyArray<ToolCall>
}

const scripted = (entry: ScriptEntry, index: number): Scripted => {
  if (typeof entry === "string") return { text: entry, toolCalls: [] }
  const calls: ReadonlyArray<ScriptedCall> =
    "toolCalls" in entry ? entry.toolCalls : (entry as ReadonlyArray<ScriptedCall>)
  return {
    text: "text" in entry ? entry.text : "",
    toolCalls: calls.map(
      (call, i) =>
        new ToolCall(
          {
            id: call.id ?? `call_${index + 1}_${i}`,
            name: call.name,
            arguments:
              typeof call.arguments === "string"
                ? call.arguments
                : JSON.stringify(call.arguments === undefined ? {} : call.arguments)
          },
          true
        )
    )
  }
}

/** @internal */
export const scriptReply = (script: ReadonlyArray<ScriptEntry>, index: number): Effect.Effect<Scripted, LlmError> =>
  index < script.length
    ? Effect.succeed(scripted(script[index] as ScriptEntry, index))
    : Effect.fail(
        new LlmError({
          reason: "ScriptExhausted",
          message:
            `FakeAdapter script exhausted: root call #${index + 1} was made but the script has only ${script.length} ` +
            `repl${script.length === 1 ? "y" : "ies"}. Add more entries to "script" (for example a last reply ` +
            `"FINAL(answer)" so the run ends).`
        })
      )

/** @internal */
export const ruleReply = (
  rules: ReadonlyArray<{ readonly match: string; readonly reply: string }>,
  request: ChatRequest
): Effect.Effect<string, LlmError> => {
  const prompt = promptOf(request)
  const rule = rules.find((r) => prompt.includes(r.match))
  return rule !== undefined
    ? Effect.succeed(rule.reply)
    : Effect.fail(
        new LlmError({
          reason: "NoRuleMatched",
          message:
            `No FakeAdapter rule matches this sub-call prompt (${prompt.length} characters, starting ${preview(prompt)}). ` +
            `Add a rule {"match": "<a substring of the prompt>", "reply": "..."} to "rules"` +
            (rules.length === 0
              ? " (there are no rules yet)"
              : ` (tried ${rules.map((r) => JSON.stringify(r.match)).join(", ")})`) +
            `; a rule with "match": "" matches every prompt.`
        })
      )
}

/** @internal */
export const response = (
  request: ChatRequest,
  reply: Scripted,
  model: string,
  usageMode: "estimated" | "unknown"
): ChatResponse => {
  let text = reply.text
  // Like a provider's max_tokens: the reply stops at the output cap.
  const cut = request.maxOutputTokens !== undefined && estimateTokens(text) > request.maxOutputTokens
  if (cut) text = text.slice(0, Math.max(0, request.maxOutputTokens ?? 0) * 4)
  const toolCalls = cut ? [] : reply.toolCalls
  const finishReason = cut ? "length" : toolCalls.length > 0 ? "tool-calls" : "stop"
  const calls = toolCalls.length > 0 ? { toolCalls } : {}
  if (usageMode === "unknown") {
    return new ChatResponse({ text, model, usage: Usage.unknown, finishReason, ...calls }, true)
  }
  const inputTokens = estimateRequestTokens(request.messages)
  const outputTokens = estimateTokens(text) + toolCalls.reduce((n, call) => n + estimateTokens(call.arguments), 0)
  return new ChatResponse(
    {
      text,
      model,
      usage: new Usage({ inputTokens, outputTokens, totalTokens: inputTokens + outputTokens }, true),
      finishReason,
      ...calls
    },
    true
  )
}

/** @internal */
export const isInterruptedOnly = <E>(cause: Cause.Cause<E>): boolean => Cause.isInterruptedOnly(cause)

/** @internal */
export const readFile = (path: string) => Effect.flatMap(FileSystem.FileSystem, (fs) => fs.readFileString(path))
