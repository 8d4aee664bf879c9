/**
 * A seeded pseudo-random generator, deterministic across platforms: the same
 * seed gives the same numbers on every machine and Node version (32-bit
 * integer arithmetic only, through `Math.imul` and `>>> 0`; no
 * `Math.random`).
 *
 * The generator is sfc32 (Chris Doty-Humphrey's Small Fast Counting
 * generator), seeded by hashing the seed's parts (numbers and strings) with
 * xmur3. A generator is a mutable object: one is made per task and never
 * shared between fibers.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 * @category Models
 */
export interface Random {
  /** A uniform 32-bit unsigned integer. */
  readonly nextU32: () => number
  /** A uniform float in `[0, 1)`. */
  readonly next: () => number
  /** A uniform integer in `[min, max]` (both included). */
  readonly int: (min: number, max: number) => number
  /** One element of a non-empty array. */
  readonly pick: <A>(items: ReadonlyArray<A>) => A
  /** `true` with probability `p`. */
  readonly chance: (p: number) => boolean
  /** A shuffled copy (Fisher–Yates). */
  readonly shuffle: <A>(items: ReadonlyArray<A>) => Array<A>
}

/** xmur3: a 32-bit string hash whose successive outputs seed sfc32. */
const xmur3 = (text: string): (() => number) => {
  let h = 1779033703 ^ text.length
  for (let i = 0; i < text.length; i++) {
    h = Math.imul(h ^ text.charCodeAt(i), 3432918353)
    h = (h << 13) | (h >>> 19)
  }
  return () => {
    h = Math.imul(h ^ (h >>> 16), 2246822507)
    h = Math.imul(h ^ (h >>> 13), 3266489909)
    h ^= h >>> 16
    return h >>> 0
  }
}

/**
 * A generator seeded by `parts` (for a task: its kind, seed, size and index):
 * equal parts give equal sequences.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const make = (...parts: ReadonlyArray<string | number>): Random => {
  const seed = xmur3(parts.map(String).join("\u0000"))
  let a = seed()
  let b = seed()
  let c = seed()
  let d = seed()
  const nextU32 = () => {
    a >>>= 0
    b >>>= 0
    c >>>= 0
    d >>>= 0
    const t = (a + b + d) >>> 0
    d = (d + 1) >>> 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) >>> 0
    c = (c << 21) | (c >>> 11)
    c = (c + t) >>> 0
    return t
  }
  // Warm up: the first outputs of a fresh sfc32 are weakly mixed.
  for (let i = 0; i < 12; i++) nextU32()
  const next = () => nextU32() / 4294967296
  const int = (min: number, max: number) => {
    const lo = Math.ceil(min)
    const hi = Math.floor(max)
    if (hi <= lo) return lo
    return lo + Math.floor(next() * (hi - lo + 1))
  }
  const pick = <A>(items: ReadonlyArray<A>): A => {
    if (items.length === 0) throw new RangeError("Random.pick: empty array")
    return items[int(0, items.length - 1)] as A
  }
  const shuffle = <A>(items: ReadonlyArray<A>): Array<A> => {
    const out = [...items]
    for (let i = out.length - 1; i > 0; i--) {
      const j = int(0, i)
      const tmp = out[i] as A
      out[i] = out[j] as A
      out[j] = tmp
    }
    return out
  }
  return { nextU32, next, int, pick, chance: (p) => next() < p, shuffle }
}
