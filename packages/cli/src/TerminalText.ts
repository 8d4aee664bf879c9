/**
 * Text that is safe to write to a terminal. Everything of the model's or the
 * guest's that `rlm` prints to a terminal (progress and error lines on stderr,
 * the answer on stdout when it is a TTY) goes through {@link sanitize} first, so
 * a hostile context cannot set the window title, clear the screen, write the
 * clipboard (OSC 52) or hide text from the user.
 *
 * What is removed:
 * - C0 controls (U+0000–U+001F) except `\n` and `\t`, so also `\r`, BEL, BS,
 *   and DEL (U+007F);
 * - escape sequences, whole: CSI (`ESC [` or U+009B, parameters, intermediates,
 *   final byte), the string sequences OSC, DCS, SOS, PM and APC (`ESC ]`, `ESC P`,
 *   `ESC X`, `ESC ^`, `ESC _` or U+009D, U+0090, U+0098, U+009E, U+009F) up to
 *   their terminator (BEL, ST as `ESC \` or U+009C, CAN or SUB; without one, to
 *   the end of the text, as a terminal would swallow it), and the short `ESC x`
 *   and `ESC ( B` (nF) forms;
 * - every other 8-bit C1 control (U+0080–U+009F);
 * - the Unicode bidirectional embeddings, overrides and isolates (U+202A–U+202E,
 *   U+2066–U+2069): they make a line read differently from its characters
 *   ("Trojan Source") and an unclosed one spills into the lines after it. The
 *   implicit marks (U+200E, U+200F, U+061C) open nothing and are kept, and so is
 *   right-to-left text itself.
 *
 * A sequence cut short (the text ends, or a byte that cannot belong to it
 * arrives) is removed as far as it got; the byte that ended it is then read on
 * its own. Everything else, non-ASCII text and emoji included, is kept as is.
 *
 * @since 0.2.0
 */

const ESC = 0x1b
const BEL = 0x07
const CAN = 0x18
const SUB = 0x1a
const C1_CSI = 0x9b
const C1_ST = 0x9c

/** Characters that start a string sequence after ESC: `]` OSC, `P` DCS, `X` SOS, `^` PM, `_` APC. */
const isStringIntroducer = (c: number) => c === 0x5d || c === 0x50 || c === 0x58 || c === 0x5e || c === 0x5f

/** The 8-bit forms of the string sequences: OSC, DCS, SOS, PM, APC. */
const isC1StringIntroducer = (c: number) => c === 0x9d || c === 0x90 || c === 0x98 || c === 0x9e || c === 0x9f

const isBidiControl = (c: number) => (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069)

/**
 * Whether a character (a UTF-16 code unit) is never written to a terminal:
 * the C0 controls but `\n` and `\t`, DEL, the C1 controls and the bidi
 * controls listed above.
 *
 * @since 0.2.0
 * @category Predicates
 */
export const isUnsafeChar = (code: number): boolean =>
  (code < 0x20 && code !== 0x0a && code !== 0x09) || (code >= 0x7f && code <= 0x9f) || isBidiControl(code)

/**
 * Whether `text` has no character {@link sanitize} would remove.
 *
 * @since 0.2.0
 * @category Predicates
 */
export const isSafe = (text: string): boolean => {
  for (let i = 0; i < text.length; i++) {
    if (isUnsafeChar(text.charCodeAt(i))) return false
  }
  return true
}

/** The end of a CSI whose parameters start at `i`: parameters 0x30–0x3F, intermediates 0x20–0x2F, a final 0x40–0x7E. */
const skipCsi = (text: string, start: number): number => {
  let i = start
  while (i < text.length) {
    const c = text.charCodeAt(i)
    if (c >= 0x30 && c <= 0x3f) i++
    else break
  }
  while (i < text.length) {
    const c = text.charCodeAt(i)
    if (c >= 0x20 && c <= 0x2f) i++
    else break
  }
  if (i < text.length) {
    const c = text.charCodeAt(i)
    if (c >= 0x40 && c <= 0x7e) return i + 1
  }
  // Cut short: drop what was read; the byte that ended it is read on its own.
  return i
}

/** The end of a string sequence whose body starts at `start`: after BEL, ST, CAN or SUB; at ESC (not `ESC \`); or the end. */
const skipString = (text: string, start: number): number => {
  let i = start
  while (i < text.length) {
    const c = text.charCodeAt(i)
    if (c === BEL || c === C1_ST || c === CAN || c === SUB) return i + 1
    if (c === ESC) return text.charCodeAt(i + 1) === 0x5c ? i + 2 : i
    i++
  }
  return i
}

/** The end of an escape sequence starting with the ESC at `start`. */
const skipEscape = (text: string, start: number): number => {
  const next = start + 1
  if (next >= text.length) return next
  const c = text.charCodeAt(next)
  if (c === 0x5b) return skipCsi(text, next + 1)
  if (isStringIntroducer(c)) return skipString(text, next + 1)
  if (c >= 0x20 && c <= 0x2f) {
    // nF: intermediates, then one final byte 0x30–0x7E.
    let i = next
    while (i < text.length && text.charCodeAt(i) >= 0x20 && text.charCodeAt(i) <= 0x2f) i++
    if (i < text.length && text.charCodeAt(i) >= 0x30 && text.charCodeAt(i) <= 0x7e) return i + 1
    return i
  }
  if (c >= 0x30 && c <= 0x7e) return next + 1
  // ESC before a control, DEL or a non-ASCII character: only the ESC goes.
  return next
}

/**
 * `text` without control characters, escape sequences and bidi controls
 * (see the module description); `\n` and `\t` stay. Pure and idempotent, and
 * the identity on text {@link isSafe} accepts.
 *
 * @since 0.2.0
 * @category Sanitizing
 */
export const sanitize = (text: string): string => {
  if (isSafe(text)) return text
  let out = ""
  let kept = 0
  let i = 0
  while (i < text.length) {
    const c = text.charCodeAt(i)
    if (!isUnsafeChar(c)) {
      i++
      continue
    }
    out += text.slice(kept, i)
    i =
      c === ESC
        ? skipEscape(text, i)
        : c === C1_CSI
          ? skipCsi(text, i + 1)
          : isC1StringIntroducer(c)
            ? skipString(text, i + 1)
            : i + 1
    kept = i
  }
  return out + text.slice(kept)
}
