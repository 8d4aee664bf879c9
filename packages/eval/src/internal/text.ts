/**
 * Filler text, names and answer normalization shared by the task generators.
 *
 * @internal
 */
import type { Random } from "../Random.js"

/** Words of the filler: none of them is a word any question or needle uses. */
const WORDS = (
  "river stone garden window morning evening quiet bright yellow narrow gentle market village harbor lantern " +
  "meadow orchard pebble breeze candle ribbon marble willow thunder meadowlark kettle blanket journey letter " +
  "painter baker sailor farmer teacher poem story chapter mountain valley forest cloud summer winter autumn " +
  "spring table chair basket bridge road path field hill lake ocean island coast wave shore tide moon sun star " +
  "walked carried painted opened closed watched listened wrote read sang folded gathered noticed remembered " +
  "slowly softly often rarely always never together alone again early late under over between beside near far"
).split(" ")

/** One filler sentence of 6 to 14 words, capitalized, ending with a period. */
export const sentence = (rng: Random): string => {
  const n = rng.int(6, 14)
  const words: Array<string> = []
  for (let i = 0; i < n; i++) words.push(rng.pick(WORDS))
  const first = words[0] ?? "river"
  words[0] = first.charAt(0).toUpperCase() + first.slice(1)
  return `${words.join(" ")}.`
}

/** Filler text of about `chars` characters (sentences joined by spaces; never quadratic). */
export const filler = (rng: Random, chars: number): string => {
  const parts: Array<string> = []
  let length = 0
  while (length < chars) {
    const s = sentence(rng)
    parts.push(s)
    length += s.length + 1
  }
  return parts.join(" ")
}

const SYLLABLES = "ka lo mi ne ra su ti vo za be do fi gu ha jo ku la me no pe ri sa to vu".split(" ")

/** A capitalized made-up name of 2 to 4 syllables. */
export const name = (rng: Random, syllables?: number): string => {
  const n = syllables ?? rng.int(2, 4)
  let out = ""
  for (let i = 0; i < n; i++) out += rng.pick(SYLLABLES)
  return out.charAt(0).toUpperCase() + out.slice(1)
}

/** `count` distinct names. */
export const distinctNames = (rng: Random, count: number, syllables = 3): Array<string> => {
  const seen = new Set<string>()
  const out: Array<string> = []
  let guard = 0
  while (out.length < count) {
    // Grow the name when the space is crowded.
    const n = syllables + Math.floor(guard / (count * 20 + 100))
    const candidate = name(rng, n)
    guard++
    if (seen.has(candidate)) continue
    seen.add(candidate)
    out.push(candidate)
  }
  return out
}

/**
 * An answer reduced to what exact match compares: trimmed, lower case, inner
 * whitespace collapsed, surrounding quotes, brackets, backticks and a trailing
 * period removed, and an "answer:" prefix dropped.
 */
export const normalize = (text: string): string => {
  let t = text.trim().toLowerCase().replace(/\s+/g, " ")
  t = t.replace(/^(final answer|answer)\s*[:=-]\s*/, "")
  for (;;) {
    const before = t
    t = t.trim().replace(/[.!;,]+$/, "")
    if (/^(["'`*(<[{]).*(["'`*)>\]}])$/.test(t) && t.length >= 2) t = t.slice(1, -1)
    if (t === before) break
  }
  return t.trim()
}

/** The first number in an answer (commas between digit groups allowed), if any. */
export const firstNumber = (text: string): number | undefined => {
  const m = /-?\d[\d,]*(\.\d+)?/.exec(text)
  if (m === null) return undefined
  const n = Number(m[0].replace(/,/g, ""))
  return Number.isFinite(n) ? n : undefined
}

/** Zero-padded decimal. */
export const pad = (n: number, width: number): string => String(n).padStart(width, "0")
