/**
 * `oolong`: many short labelled records; the question needs an aggregate
 * over all of them: the count of one label, the most frequent label, or which
 * of two labels is more frequent. Scored as OOLONG does: a label answer by
 * exact match, a count with partial credit by distance, `0.75 ** |answer −
 * truth|` (the first number in the answer; none scores 0).
 *
 * @since 0.1.0
 */
import * as text from "../internal/text.js"
import * as Random from "../Random.js"
import { charsOf, EvalTask, type Family, type GenerateOptions, taskId } from "../Task.js"

/**
 * The labels a record can carry.
 *
 * @since 0.1.0
 * @category Constants
 */
export const LABELS: ReadonlyArray<string> = ["billing", "shipping", "returns", "technical", "account", "feedback"]

/**
 * The question types.
 *
 * @since 0.1.0
 * @category Models
 */
export type QuestionType = "count" | "most" | "compare"

const RECORD = /\blabel=([a-z]+)\b/g

interface Row {
  readonly date: string
  readonly user: number
  label: string
  readonly note: string
}

const render = (row: Row, i: number) =>
  `[${text.pad(i + 1, 6)}] date=${row.date} user=u${text.pad(row.user, 5)} label=${row.label} :: ${row.note}`

const countsOf = (rows: ReadonlyArray<{ readonly label: string }>): Map<string, number> => {
  const counts = new Map<string, number>(LABELS.map((label) => [label, 0]))
  for (const row of rows) counts.set(row.label, (counts.get(row.label) ?? 0) + 1)
  return counts
}

/** The labels with the highest count. */
const leaders = (counts: ReadonlyMap<string, number>): Array<string> => {
  const max = Math.max(...counts.values())
  return [...counts].filter(([, n]) => n === max).map(([label]) => label)
}

/**
 * @since 0.1.0
 * @category Generators
 */
export const generate = (options: GenerateOptions): EvalTask => {
  const rng = Random.make("oolong", options.seed, options.size, options.index)
  const type: QuestionType = rng.pick(["count", "most", "compare"] as const)
  const weights = LABELS.map(() => 0.5 + rng.next())
  const totalWeight = weights.reduce((a, b) => a + b, 0)
  const drawLabel = () => {
    let x = rng.next() * totalWeight
    for (let i = 0; i < LABELS.length; i++) {
      x -= weights[i] ?? 0
      if (x < 0) return LABELS[i] ?? "billing"
    }
    return LABELS[LABELS.length - 1] ?? "billing"
  }
  const target = charsOf(options.size)
  const rows: Array<Row> = []
  let length = 0
  while (length < target || rows.length === 0) {
    const row: Row = {
      date: `2024-${text.pad(rng.int(1, 12), 2)}-${text.pad(rng.int(1, 28), 2)}`,
      user: rng.int(1, 99_999),
      label: drawLabel(),
      note: text.sentence(rng)
    }
    rows.push(row)
    length += render(row, rows.length - 1).length + 1
  }
  let question: string
  let truth: string
  const details: Record<string, string | number> = { questionType: type, records: rows.length }
  if (type === "count") {
    const label = rng.pick(LABELS)
    question = `How many records have the label "${label}"? Answer with a number only.`
    truth = String(countsOf(rows).get(label) ?? 0)
    details.label = label
  } else if (type === "most") {
    // Make the leader unique: a record of each other leader moves to the first.
    let top = leaders(countsOf(rows))
    while (top.length > 1) {
      const [first, second] = top
      const moved = rows.find((row) => row.label === second)
      if (moved !== undefined && first !== undefined) moved.label = first
      top = leaders(countsOf(rows))
    }
    question = "Which label occurs in the most records? Answer with the label only."
    truth = top[0] ?? ""
  } else {
    const [a, b] = rng.shuffle(LABELS)
    const x = a ?? "billing"
    const y = b ?? "shipping"
    const counts = countsOf(rows)
    if (counts.get(x) === counts.get(y)) {
      const moved = rows.find((row) => row.label === y) ?? rows[0]
      if (moved !== undefined) moved.label = x
    }
    const after = countsOf(rows)
    question = `Which label occurs in more records: "${x}" or "${y}"? Answer with the label only.`
    truth = (after.get(x) ?? 0) > (after.get(y) ?? 0) ? x : y
  }
  return new EvalTask({
    id: taskId("oolong", options),
    kind: "oolong",
    size: options.size,
    seed: options.seed,
    index: options.index,
    context: rows.map(render).join("\n"),
    question,
    truth,
    details
  })
}

/**
 * @since 0.1.0
 * @category Scorers
 */
export const score = (task: EvalTask, answer: string): number => {
  if (task.details.questionType === "count") {
    const n = text.firstNumber(answer)
    return n === undefined ? 0 : 0.75 ** Math.abs(n - Number(task.truth))
  }
  return text.normalize(answer) === text.normalize(task.truth) ? 1 : 0
}

/**
 * The label counts of a context (every `label=` of its records).
 *
 * @since 0.1.0
 * @category Solvers
 */
export const countLabels = (context: string): Map<string, number> =>
  countsOf([...context.matchAll(RECORD)].map((m) => ({ label: m[1] ?? "" })))

/**
 * The reference solver.
 *
 * @since 0.1.0
 * @category Solvers
 */
export const solve = (context: string, question: string): string => {
  const counts = countLabels(context)
  const quoted = [...question.matchAll(/"([a-z]+)"/g)].map((m) => m[1] ?? "")
  if (question.startsWith("How many")) return String(counts.get(quoted[0] ?? "") ?? 0)
  if (quoted.length === 2) {
    const [x = "", y = ""] = quoted
    return (counts.get(x) ?? 0) > (counts.get(y) ?? 0) ? x : y
  }
  return leaders(counts)[0] ?? ""
}

/**
 * @since 0.1.0
 * @category Families
 */
export const family: Family = {
  kind: "oolong",
  metric: "exact (labels) / 0.75^distance (counts)",
  generate,
  score,
  solve
}
