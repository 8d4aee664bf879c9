/**
 * `pairs`: the quadratic task, like OOLONG-Pairs. Records carry a color and a
 * 7-digit code; the question asks for every pair of records with the same
 * color whose codes add up to exactly 10,000,000. A few pairs are planted;
 * any other pair the random data makes is part of the truth too (computed
 * exactly). Scored by F1 over the set of pairs named in the answer (record
 * ids, read in order, two by two).
 *
 * @since 0.1.0
 */
import * as text from "../internal/text.js"
import * as Random from "../Random.js"
import { charsOf, EvalTask, type Family, type GenerateOptions, taskId } from "../Task.js"

const COLORS = "teal amber coral indigo olive maroon ochre slate plum khaki azure rust".split(" ")

/**
 * What two codes of a pair add up to.
 *
 * @since 0.1.0
 * @category Constants
 */
export const TARGET_SUM = 10_000_000

const ROW = /\b(R\d{6}) \| color=([a-z]+) \| code=(\d{7})\b/g

interface Row {
  color: string
  code: number
  readonly note: string
}

const idOf = (i: number) => `R${text.pad(i + 1, 6)}`

const render = (row: Row, i: number) => `${idOf(i)} | color=${row.color} | code=${row.code} | ${row.note}`

/** Every matching pair of `(id, color, code)` rows, each as `"a-b"` with `a < b`, sorted. */
const pairsOf = (rows: ReadonlyArray<{ readonly id: string; readonly color: string; readonly code: number }>) => {
  const byKey = new Map<string, Array<string>>()
  const out: Array<string> = []
  for (const row of rows) {
    const partners = byKey.get(`${row.color}:${TARGET_SUM - row.code}`) ?? []
    for (const other of partners) out.push(other < row.id ? `${other}-${row.id}` : `${row.id}-${other}`)
    const key = `${row.color}:${row.code}`
    const list = byKey.get(key)
    if (list === undefined) byKey.set(key, [row.id])
    else list.push(row.id)
  }
  return out.sort()
}

/**
 * @since 0.1.0
 * @category Generators
 */
export const generate = (options: GenerateOptions): EvalTask => {
  const rng = Random.make("pairs", options.seed, options.size, options.index)
  const target = charsOf(options.size)
  const rows: Array<Row> = []
  let length = 0
  while (length < target || rows.length < 2) {
    const row: Row = { color: rng.pick(COLORS), code: rng.int(1_000_000, 8_999_999), note: text.sentence(rng) }
    rows.push(row)
    length += render(row, rows.length - 1).length + 1
  }
  const planted = Math.min(rng.int(3, 5), Math.floor(rows.length / 2))
  const slots = rng.shuffle(rows.map((_, i) => i)).slice(0, planted * 2)
  for (let k = 0; k < planted; k++) {
    const a = rows[slots[2 * k] ?? 0]
    const b = rows[slots[2 * k + 1] ?? 1]
    if (a === undefined || b === undefined) continue
    b.color = a.color
    b.code = TARGET_SUM - a.code
  }
  const truth = pairsOf(rows.map((row, i) => ({ id: idOf(i), color: row.color, code: row.code })))
  return new EvalTask({
    id: taskId("pairs", options),
    kind: "pairs",
    size: options.size,
    seed: options.seed,
    index: options.index,
    context: rows.map(render).join("\n"),
    question: `List every pair of records that have the same color and whose codes add up to exactly ${TARGET_SUM}. Answer with the pairs of record ids, one pair per line, as R000001-R000002.`,
    truth: truth.join("\n"),
    details: { records: rows.length, planted, pairs: truth.length }
  })
}

/**
 * The pairs an answer names: its record ids in order, two by two, each pair
 * ordered.
 *
 * @since 0.1.0
 * @category Scorers
 */
export const parsePairs = (answer: string): Set<string> => {
  const ids = [...answer.toUpperCase().matchAll(/R\d{6}/g)].map((m) => m[0])
  const out = new Set<string>()
  for (let i = 0; i + 1 < ids.length; i += 2) {
    const a = ids[i] ?? ""
    const b = ids[i + 1] ?? ""
    out.add(a < b ? `${a}-${b}` : `${b}-${a}`)
  }
  return out
}

/**
 * F1 of the answer's pairs against the truth's (1 when both are empty).
 *
 * @since 0.1.0
 * @category Scorers
 */
export const score = (task: EvalTask, answer: string): number => {
  const truth = parsePairs(task.truth)
  const got = parsePairs(answer)
  if (truth.size === 0 && got.size === 0) return 1
  let hits = 0
  for (const pair of got) if (truth.has(pair)) hits++
  if (hits === 0) return 0
  const precision = hits / got.size
  const recall = hits / truth.size
  return (2 * precision * recall) / (precision + recall)
}

/**
 * The reference solver: every matching pair of the context's records.
 *
 * @since 0.1.0
 * @category Solvers
 */
export const solve = (context: string, _question: string): string =>
  pairsOf([...context.matchAll(ROW)].map((m) => ({ id: m[1] ?? "", color: m[2] ?? "", code: Number(m[3]) }))).join("\n")

/**
 * @since 0.1.0
 * @category Families
 */
export const family: Family = { kind: "pairs", metric: "F1", generate, score, solve }
