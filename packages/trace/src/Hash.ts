/**
 * SHA-256 digests used by traces (prompt and reply hashes) and by the LLM
 * cache (request keys).
 *
 * @since 0.1.0
 */
import { createHash } from "node:crypto"

/**
 * The SHA-256 digest of the UTF-8 bytes of `text`, as 64 lowercase hex
 * characters.
 *
 * @since 0.1.0
 * @category Hashing
 */
export const sha256 = (text: string): string => createHash("sha256").update(text, "utf8").digest("hex")

/**
 * The digest and length of a text, as stored in a `SubCall` event
 * (`promptSha256`/`promptChars`, `replySha256`/`replyChars`).
 *
 * @since 0.1.0
 * @category Hashing
 */
export const describe = (text: string): { readonly sha256: string; readonly chars: number } => ({
  sha256: sha256(text),
  chars: text.length
})
