/**
 * `sniah`: a single needle in a haystack, as in the paper's Figure 1. One
 * sentence "The special magic number for <key> is <7 digits>." sits at a
 * seeded depth in filler text of the task's size; the question asks for the
 * number. Scored by exact match (after `normalize`: case, whitespace, quotes
 * and a trailing period do not count).
 *
 * @since 0.1.0
 */
import * as text from "../internal/text.js"
import * as Random from "../Random.js"
import { charsOf, EvalTask, type Family, type GenerateOptions, taskId } from "../Task.js"

const KEY_WORDS = "amber cobalt crimson silver violet golden scarlet ivory jade onyx".split(" ")
const ANIMALS = "otter falcon badger heron lynx marten puffin ibis gecko walrus".split(" ")

const NEEDLE = /The special magic number for ([a-z]+-[a-z]+) is (\d+)\./g

/**
 * @since 0.1.0
 * @category Generators
 */
export const generate = (options: GenerateOptions): EvalTask => {
  const rng = Random.make("sniah", options.seed, options.size, options.index)
  const key = `${rng.pick(KEY_WORDS)}-${rng.pick(ANIMALS)}`
  const value = String(rng.int(1_000_000, 9_999_999))
  const needle = `The special magic number for ${key} is ${value}.`
  const depth = rng.next()
  const total = Math.max(0, charsOf(options.size) - needle.length - 2)
  const before = text.filler(rng, Math.floor(total * depth))
  const after = text.filler(rng, total - before.length)
  const context = [before, needle, after].filter((part) => part.length > 0).join(" ")
  return new EvalTask({
    id: taskId("sniah", options),
    kind: "sniah",
    size: options.size,
    seed: options.seed,
    index: options.index,
    context,
    question: `What is the special magic number for ${key}? Answer with the number only.`,
    truth: value,
    details: { depth: Math.round(depth * 1000) / 1000, needleOffset: context.indexOf(needle), key }
  })
}

/**
 * @since 0.1.0
 * @category Scorers
 */
export const score = (task: EvalTask, answer: string): number =>
  text.normalize(answer) === text.normalize(task.truth) ? 1 : 0

/**
 * The reference solver: the number of the needle whose key the question names.
 *
 * @since 0.1.0
 * @category Solvers
 */
export const solve = (context: string, question: string): string => {
  const key = /magic number for ([a-z]+-[a-z]+)/.exec(question)?.[1]
  for (const m of context.matchAll(NEEDLE)) if (m[1] === key) return m[2] ?? ""
  return ""
}

/**
 * @since 0.1.0
 * @category Families
 */
export const family: Family = { kind: "sniah", metric: "exact match", generate, score, solve }
