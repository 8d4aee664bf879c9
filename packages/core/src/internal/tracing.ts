/**
 * Helpers for the run tree's spans (see `Tracing`).
 */
import type * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import type * as Tracer from "effect/Tracer"
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

/** Set `attributes` on `span`, the `undefined` ones left out. @internal */
export const setAttributes = (span: Tracer.Span, attributes: Record<string, unknown>): void => {
  for (const key in attributes) {
    const value = attributes[key]
    if (value !== undefined) span.attribute(key, value)
  }
}

/**
 * `body` in a span named `name` (`Effect.useSpan`, the span its parent): the
 * body gets the span and sets attributes on it directly, and `onEnd` sets
 * those the exit decides as it ends. (Each `Effect.annotateCurrentSpan` looks
 * the current span up in its own few effects: on the hot path of a run, the
 * spans' annotations made up a third of the effects of a step.) @internal
 */
export const spanned = <A, E, R>(
  name: string,
  attributes: Record<string, unknown>,
  body: (span: Tracer.Span) => Effect.Effect<A, E, R>,
  onEnd?: (span: Tracer.Span, exit: Exit.Exit<A, E>) => void
): Effect.Effect<A, E, R> =>
  Effect.useSpan(name, { attributes, captureStackTrace: false }, (span) => {
    const inner = Effect.withParentSpan(body(span), span)
    return onEnd === undefined ? inner : Effect.onExit(inner, (exit) => Effect.sync(() => onEnd(span, exit)))
  })

/** An `onEnd` of {@link spanned}: the outcome of the span's effect. @internal */
export const endWithOutcome = (span: Tracer.Span, exit: Exit.Exit<unknown, unknown>): void =>
  setAttributes(span, outcome(exit))
