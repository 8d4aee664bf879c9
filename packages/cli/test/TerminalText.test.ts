import { assert, describe, it } from "@effect/vitest"
import * as TerminalText from "@rlm-runtime/cli/TerminalText"
import { FastCheck as fc } from "effect"

const { sanitize } = TerminalText

/** Every code unit that must never reach a terminal. */
const unsafeChars = [
  ...Array.from({ length: 0x20 }, (_, i) => i).filter((c) => c !== 0x0a && c !== 0x09),
  ...Array.from({ length: 0x21 }, (_, i) => 0x7f + i),
  0x202a,
  0x202b,
  0x202c,
  0x202d,
  0x202e,
  0x2066,
  0x2067,
  0x2068,
  0x2069
].map((c) => String.fromCharCode(c))

/** Controls, escape-sequence pieces and ordinary text, mixed: the hostile alphabet. */
const hostileChar = fc.oneof(
  fc.constantFrom(...unsafeChars),
  fc.constantFrom("[", "]", "P", "X", "^", "_", "\\", ";", "0", "2", "J", "m", "(", "B", "#", " ", "\n", "\t"),
  fc.string({ unit: "grapheme", maxLength: 2 })
)
const hostileText = fc.array(hostileChar, { maxLength: 60 }).map((parts) => parts.join(""))

/** Text with nothing to remove: any Unicode (incl. emoji, RTL, CJK) but the unsafe characters. */
const printableText = fc
  .string({ unit: "grapheme", maxLength: 80 })
  .map((s) => [...s].filter((ch) => ch.length > 1 || !TerminalText.isUnsafeChar(ch.charCodeAt(0))).join(""))

const hasUnsafe = (text: string) => [...text].some((ch) => ch.length === 1 && unsafeChars.includes(ch))

/** Known attacks, each with what is left of it. */
const attacks: ReadonlyArray<readonly [name: string, attack: string]> = [
  ["window title (OSC 0, BEL)", "\x1b]0;pwned\x07"],
  ["window title (OSC 2, ST)", "\x1b]2;pwned\x1b\\"],
  ["clear screen (CSI 2J)", "\x1b[2J"],
  ["cursor home and erase line", "\x1b[H\x1b[K"],
  ["SGR colour", "\x1b[1;31m"],
  ["private mode (hide cursor)", "\x1b[?25l"],
  ["OSC 52 clipboard write", "\x1b]52;c;cm0gLXJmIH4vKg==\x07"],
  ["OSC 52 with ST", "\x1b]52;c;cm0gLXJmIH4vKg==\x1b\\"],
  ["OSC 8 hyperlink", "\x1b]8;;https://evil.example/\x07click\x1b]8;;\x07"],
  ["8-bit CSI clear screen", "\x9b2J"],
  ["8-bit OSC title, 8-bit ST", "\x9d0;pwned\x9c"],
  ["8-bit DCS", "\x90q#0;2;0;0;0\x9c"],
  ["DCS (ESC P) with ST", "\x1bP+q544e\x1b\\"],
  ["APC", "\x1b_hidden\x1b\\"],
  ["PM", "\x1b^hidden\x1b\\"],
  ["SOS", "\x1bXhidden\x1b\\"],
  ["two-char ESC c (full reset)", "\x1bc"],
  ["nF charset switch ESC ( 0", "\x1b(0"],
  ["DEC alignment test ESC # 8", "\x1b#8"],
  ["carriage return overwrite", "\r"],
  ["bell, backspace, DEL", "\x07\x08\x7f"],
  ["NUL and vertical tab, form feed", "\x00\x0b\x0c"],
  ["bidi override", "\u202e"],
  ["bidi isolate", "\u2066\u2069"],
  ["CAN-aborted OSC", "\x1b]0;pwned\x18"]
]

describe("TerminalText.sanitize", () => {
  it.prop("the output has no control character but \\n and \\t", [hostileText], ([text]) => {
    const out = sanitize(text)
    assert.isFalse(hasUnsafe(out), JSON.stringify(out))
    assert.isTrue(TerminalText.isSafe(out))
  })

  it.prop(
    "the output has no control character, for any string of any code units",
    [fc.string({ unit: "binary" })],
    ([text]) => TerminalText.isSafe(sanitize(text))
  )

  it.prop("it is idempotent", [hostileText], ([text]) => sanitize(sanitize(text)) === sanitize(text))

  it.prop("printable text (non-ASCII, \\n and \\t included) is unchanged", [printableText], ([text]) => {
    assert.strictEqual(sanitize(text), text)
  })

  it("keeps non-ASCII text, emoji, tabs, newlines and bidi marks exactly", () => {
    const text = "Grüße — 東京 🚀👩‍👩‍👧\tשלום عربي\u200e\u200f\u061c\nline two\n"
    assert.strictEqual(sanitize(text), text)
  })

  for (const [name, attack] of attacks) {
    it(`neutralises ${name}`, () => {
      assert.strictEqual(sanitize(attack), attack.includes("click") ? "click" : "")
    })
  }

  it.prop(
    "a known attack between printable texts is removed and the texts are kept",
    [printableText, fc.constantFrom(...attacks.map(([, attack]) => attack)), printableText],
    ([before, attack, after]) => {
      assert.strictEqual(sanitize(before + attack + after), before + (attack.includes("click") ? "click" : "") + after)
    }
  )

  it("a sequence cut short by the end of the text is removed as far as it got", () => {
    assert.strictEqual(sanitize("answer\x1b"), "answer")
    assert.strictEqual(sanitize("answer\x1b["), "answer")
    assert.strictEqual(sanitize("answer\x1b[2"), "answer")
    assert.strictEqual(sanitize("answer\x1b]0;pwn"), "answer")
    assert.strictEqual(sanitize("answer\x1b]52;c;cm0gLXJm"), "answer")
    assert.strictEqual(sanitize("answer\x9b1;3"), "answer")
    assert.strictEqual(sanitize("answer\x9d0;pw"), "answer")
    assert.strictEqual(sanitize("answer\x1b("), "answer")
  })

  it("a sequence cut short by a byte that cannot belong to it keeps that byte's text", () => {
    // CSI parameters end at the newline; the newline and what follows stay.
    assert.strictEqual(sanitize("a\x1b[12\nb"), "a\nb")
    // ESC before a non-ASCII letter: only the ESC goes.
    assert.strictEqual(sanitize("a\x1bé"), "aé")
    // ESC ESC [2J: the first ESC alone, then the whole CSI.
    assert.strictEqual(sanitize("a\x1b\x1b[2Jb"), "ab")
    // An OSC ended by a new ESC sequence: both go.
    assert.strictEqual(sanitize("a\x1b]0;t\x1b[2Jb"), "ab")
    // A BEL inside CSI parameters ends it; the final byte is then plain text.
    assert.strictEqual(sanitize("a\x1b[2\x07Jb"), "aJb")
  })

  it("\\r\\n line ends become \\n", () => {
    assert.strictEqual(sanitize("one\r\ntwo\r\n"), "one\ntwo\n")
  })

  it("isSafe is true exactly when sanitize changes nothing", () => {
    fc.assert(fc.property(hostileText, (text) => TerminalText.isSafe(text) === (sanitize(text) === text)))
  })
})
