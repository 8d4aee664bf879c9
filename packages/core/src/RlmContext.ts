/**
 * The prompt an RLM works over: one text or a list of documents. The root
 * model never sees it; it is told only the `metadata`, and reads the text
 * through code in the REPL (`peek`, `slice`, `find`, `chunk`, …: the REPL's
 * helpers, defined by the sandbox, not here).
 *
 * @since 0.1.0
 */

import type { ContextMetadata } from "@rlm-runtime/trace/TraceEvent"
import * as Schema from "effect/Schema"

/**
 * The text put between documents when a list of documents is joined into `P`.
 *
 * @since 0.1.0
 * @category Constants
 */
export const DOCUMENT_SEPARATOR = "\n\n"

/**
 * @since 0.1.0
 * @category Models
 */
export interface RlmContext {
  readonly _tag: "RlmContext"
  readonly type: "text" | "documents"
  /** The whole prompt; documents joined with `DOCUMENT_SEPARATOR`. */
  readonly text: string
  /** The documents, when built from a list. */
  readonly documents: ReadonlyArray<string> | undefined
}

/**
 * What a `RlmContext` can be built from.
 *
 * @since 0.1.0
 * @category Models
 */
export type Input = string | ReadonlyArray<string> | RlmContext

/**
 * @since 0.1.0
 * @category Guards
 */
export const isRlmContext = (u: unknown): u is RlmContext =>
  typeof u === "object" && u !== null && "_tag" in u && u._tag === "RlmContext"

/**
 * Build a context from one text or a list of documents.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = (input: Input): RlmContext => {
  if (isRlmContext(input)) return input
  if (typeof input === "string") return { _tag: "RlmContext", type: "text", text: input, documents: undefined }
  const documents = [...input]
  return { _tag: "RlmContext", type: "documents", text: documents.join(DOCUMENT_SEPARATOR), documents }
}

/**
 * The characters in `[start, end)`; out-of-range bounds are clamped, as with
 * `String.prototype.slice`.
 *
 * @deprecated Since 0.2.0. The host never reads the context this way: model
 * code does, with the REPL's `slice(start, end)` helper (same semantics).
 * Use `self.text.slice(start, end)` on the host.
 * @since 0.1.0
 * @category Accessors
 */
export const slice = (self: RlmContext, start: number, end?: number): string => self.text.slice(start, end)

/**
 * Every offset at or after `from` where `needle` occurs, overlapping hits
 * included, in increasing order. An empty needle has no hits.
 *
 * @deprecated Since 0.2.0. The host never searches the context: model code
 * does, with the REPL's `find(needle, start)` helper (same semantics).
 * @since 0.1.0
 * @category Accessors
 */
export const find = (self: RlmContext, needle: string, options?: { readonly from?: number }): ReadonlyArray<number> => {
  const hits: Array<number> = []
  if (needle.length === 0) return hits
  let i = self.text.indexOf(needle, Math.max(0, options?.from ?? 0))
  while (i !== -1) {
    hits.push(i)
    i = self.text.indexOf(needle, i + 1)
  }
  return hits
}

/**
 * What the deprecated {@link chunk} throws.
 *
 * @deprecated Since 0.2.0, with {@link chunk}.
 * @since 0.1.0
 * @category Errors
 */
export class InvalidChunkSize extends Schema.TaggedError<InvalidChunkSize>("@rlm-runtime/core/InvalidChunkSize")(
  "InvalidChunkSize",
  { size: Schema.Number, overlap: Schema.Number, message: Schema.String }
) {}

/**
 * Cut the text into pieces of `size` characters, each starting
 * `size - overlap` after the previous one, until the text is covered.
 * Throws `InvalidChunkSize` unless `size >= 1` and `0 <= overlap < size`.
 *
 * @deprecated Since 0.2.0. The host never chunks the context: model code
 * does, with the REPL's `chunk(size, overlap)` helper (same semantics).
 * @since 0.1.0
 * @category Accessors
 */
export const chunk = (self: RlmContext, size: number, overlap = 0): ReadonlyArray<string> => {
  if (!Number.isInteger(size) || !Number.isInteger(overlap) || size < 1 || overlap < 0 || overlap >= size) {
    throw new InvalidChunkSize({
      size,
      overlap,
      message: `chunk(size=${size}, overlap=${overlap}): size must be an integer >= 1 and overlap an integer in [0, size)`
    })
  }
  const out: Array<string> = []
  const step = size - overlap
  for (let i = 0; i < self.text.length; i += step) out.push(self.text.slice(i, i + size))
  return out
}

/**
 * The summary the root model is told about the context: type, sizes and a
 * short preview.
 *
 * @since 0.1.0
 * @category Accessors
 */
export const metadata = (self: RlmContext, options?: { readonly previewChars?: number }): ContextMetadata => {
  const lengths = self.documents ? self.documents.map((d) => d.length) : [self.text.length]
  return {
    type: self.type,
    totalChars: self.text.length,
    documentCount: lengths.length,
    documentLengths: lengths,
    preview: self.text.slice(0, options?.previewChars ?? 200)
  }
}

/**
 * Render metadata as the lines shown to the root model. Long document lists
 * are summarised.
 *
 * @since 0.1.0
 * @category Formatting
 */
export const describe = (meta: ContextMetadata): string => {
  const lengths =
    meta.documentLengths.length <= 20
      ? meta.documentLengths.join(", ")
      : `${meta.documentLengths.slice(0, 20).join(", ")}, … (${meta.documentLengths.length - 20} more)`
  return [
    `Context type: ${meta.type === "text" ? "one text (a str)" : "a list of documents"}`,
    `Total characters: ${meta.totalChars}`,
    `Documents: ${meta.documentCount} (lengths: ${lengths})`,
    `Preview of the first ${meta.preview.length} characters: ${JSON.stringify(meta.preview)}`
  ].join("\n")
}
