/**
 * How REPL output is cut before the model sees it.
 *
 * @since 0.1.0
 */

/**
 * The marker appended to output cut at the limit.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const truncationMarker = (omitted: number): string =>
  `\n[... output truncated: ${omitted} more characters not shown ...]`

/**
 * Keep the first `limit` characters of `text`; when anything is cut, append a
 * marker saying how much.
 *
 * @since 0.1.0
 * @category Combinators
 */
export const truncate = (text: string, limit: number): { readonly text: string; readonly truncated: boolean } =>
  text.length <= limit
    ? { text, truncated: false }
    : { text: text.slice(0, limit) + truncationMarker(text.length - limit), truncated: true }
