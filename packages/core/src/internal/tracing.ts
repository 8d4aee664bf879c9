/**
 * Helpers for the run tree's spans (see `Tracing`).
 */
import type * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import { Attribute, GenAiAttribute } from "../Tracing.js"

/** Attributes with the `undefined` values left out. @internal */
export const defined = (attributes: Record<string, unknown>): Record<string, unknown> =>
  Object.fromEntries(Object.entries(attributes).filter(([, v]) => v !== undefined))

/** Token counts as attributes; only those the provider reported. @internal */
export const tokens = (usage: {
  readonly inputTokens?: number | undefined
  readonly outputTokens?: number | undefined
  readonly totalTokens?: number | undefined
}): Record<string, unknown> =>
  defined({
    [Attribute.inputTokens]: usage.inputTokens,
    [Attribute.outputTokens]: usage.outputTokens,
    [Attribute.totalTokens]: usage.totalTokens
  })

/** A reply's model, tokens and finish reason. @internal */
export const reply = (response: LlmAdapter.ChatResponse, genAi = false): Record<string, unknown> =>
  defined({
    [Attribute.model]: response.model,
    ...tokens(response.usage),
    [Attribute.finishReason]: response.finishReason,
    ...(genAi
      ? {
          [GenAiAttribute.responseModel]: response.model,
          [GenAiAttribute.inputTokens]: response.usage.inputTokens,
          [GenAiAttribute.outputTokens]: response.usage.outputTokens
        }
      : {})
  })

const messageOf = (u: unknown): string | undefined => {
  const message = typeof u === "object" && u !== null ? (u as { message?: unknown }).message : undefined
  return typeof message === "string" && message !== "" ? message : undefined
}

/** "ok", "error" or "interrupted", and the typed error's message. @internal */
export const outcome = (exit: Exit.Exit<unknown, unknown>): Record<string, unknown> => {
  if (exit._tag === "Success") return { [Attribute.status]: "ok" }
  if (Cause.isInterruptedOnly(exit.cause)) return { [Attribute.status]: "interrupted" }
  const failure = Cause.failureOption(exit.cause)
  return defined({
    [Attribute.status]: "error",
    [Attribute.error]: failure._tag === "Some" ? messageOf(failure.value) : "defect"
  })
}

/** Annotate the current span with the outcome of its effect. @internal */
export const annotateOutcome = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.onExit(self, (exit) => Effect.annotateCurrentSpan(outcome(exit)))
