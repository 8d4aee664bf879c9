/**
 * `codeqa`: a generated JavaScript code base (files of small integer
 * functions that call functions of other files) and a multiple-choice
 * question about what one function returns for an argument, which needs
 * following its calls across files. Scored by accuracy: the answer's letter
 * (`B`, `(B)`, `B) 17`), or the value of one of the choices, against the
 * right letter.
 *
 * @since 0.1.0
 */
import * as text from "../internal/text.js"
import * as Random from "../Random.js"
import { charsOf, EvalTask, type Family, type GenerateOptions, taskId } from "../Task.js"

const VERBS = "compute scale merge adjust count resolve encode rank shift blend".split(" ")
const NOUNS = "Order Tax Route Score Batch Index Token Price Frame Ledger".split(" ")
const LETTERS = ["A", "B", "C", "D"] as const

type Body =
  | { readonly _tag: "Leaf"; readonly a: number; readonly b: number }
  | { readonly _tag: "Call"; readonly callee: number; readonly c: number; readonly d: number }
  | { readonly _tag: "Two"; readonly left: number; readonly right: number; readonly c: number; readonly e: number }

const signed = (n: number) => (n < 0 ? ` - ${-n}` : ` + ${n}`)

const renderBody = (body: Body, names: ReadonlyArray<string>): string => {
  switch (body._tag) {
    case "Leaf":
      return `x * ${body.a}${signed(body.b)}`
    case "Call":
      return `${names[body.callee]}(x${signed(body.c)})${signed(body.d)}`
    case "Two":
      return `${names[body.left]}(x${signed(body.c)}) + ${names[body.right]}(x${signed(body.e)})`
  }
}

const evaluate = (bodies: ReadonlyArray<Body>, i: number, x: number): number => {
  const body = bodies[i]
  if (body === undefined) return 0
  switch (body._tag) {
    case "Leaf":
      return x * body.a + body.b
    case "Call":
      return evaluate(bodies, body.callee, x + body.c) + body.d
    case "Two":
      return evaluate(bodies, body.left, x + body.c) + evaluate(bodies, body.right, x + body.e)
  }
}

/**
 * @since 0.1.0
 * @category Generators
 */
export const generate = (options: GenerateOptions): EvalTask => {
  const rng = Random.make("codeqa", options.seed, options.size, options.index)
  const target = charsOf(options.size)
  const names: Array<string> = []
  const bodies: Array<Body> = []
  const depth: Array<number> = []
  let length = 0
  const perFile = 12
  while (length < target || bodies.length < 8) {
    const i = bodies.length
    const file = Math.floor(i / perFile)
    // Callees from earlier files (or earlier in this one): the call graph is a DAG, every call ends.
    const pickCallee = () => {
      const earlier = file * perFile
      const limit = earlier > 0 && rng.chance(0.8) ? earlier : i
      return rng.int(Math.max(0, limit - 40), limit - 1)
    }
    let body: Body
    const roll = rng.next()
    if (i < 4 || roll < 0.3) body = { _tag: "Leaf", a: rng.int(1, 3), b: rng.int(-9, 9) }
    else if (roll < 0.8) body = { _tag: "Call", callee: pickCallee(), c: rng.int(-5, 5), d: rng.int(-9, 9) }
    else body = { _tag: "Two", left: pickCallee(), right: pickCallee(), c: rng.int(-5, 5), e: rng.int(-5, 5) }
    names.push(`${rng.pick(VERBS)}${rng.pick(NOUNS)}${text.pad(i, 4)}`)
    bodies.push(body)
    depth.push(
      body._tag === "Leaf"
        ? 1
        : body._tag === "Call"
          ? 1 + (depth[body.callee] ?? 1)
          : 1 + Math.max(depth[body.left] ?? 1, depth[body.right] ?? 1)
    )
    length += renderBody(body, names).length + (names[i] ?? "").length + 40
  }
  const deepest = Math.max(...depth)
  const wanted = Math.min(deepest, rng.int(3, 5))
  const candidates = depth.flatMap((d, i) => (d >= wanted && d <= wanted + 2 ? [i] : []))
  const fn = rng.pick(candidates.length > 0 ? candidates : [depth.indexOf(deepest)])
  const arg = rng.int(1, 9)
  const value = evaluate(bodies, fn, arg)
  const offsets = rng.shuffle([-7, -5, -3, -2, -1, 1, 2, 3, 4, 6, 8, 10]).slice(0, 3)
  const choices = rng.shuffle([value, ...offsets.map((o) => value + o)])
  const letter = LETTERS[choices.indexOf(value)] ?? "A"
  const files: Array<string> = []
  for (let f = 0; f * perFile < bodies.length; f++) {
    const lines = [`// ===== file: src/${text.name(rng, 2).toLowerCase()}_${f}.js =====`]
    for (let i = f * perFile; i < Math.min(bodies.length, (f + 1) * perFile); i++) {
      const body = bodies[i]
      if (body === undefined) continue
      lines.push(`export function ${names[i]}(x) {\n  return ${renderBody(body, names)}\n}`)
    }
    files.push(lines.join("\n"))
  }
  const choiceText = choices.map((c, k) => `${LETTERS[k]}) ${c}`).join("  ")
  const details: Record<string, string | number> = {
    function: names[fn] ?? "",
    argument: arg,
    callDepth: depth[fn] ?? 0
  }
  choices.forEach((c, k) => {
    details[`choice${LETTERS[k]}`] = c
  })
  return new EvalTask({
    id: taskId("codeqa", options),
    kind: "codeqa",
    size: options.size,
    seed: options.seed,
    index: options.index,
    context: files.join("\n\n"),
    question: `In this code base, what does ${names[fn]}(${arg}) return? ${choiceText}. Answer with the letter only.`,
    truth: letter,
    details
  })
}

/**
 * The letter an answer picks: a leading letter (`B`, `(B)`, `B) 17`), else
 * the letter of the choice whose value it names.
 *
 * @since 0.1.0
 * @category Scorers
 */
export const letterOf = (task: EvalTask, answer: string): string | undefined => {
  const t = text.normalize(answer).toUpperCase()
  const m = /^\(?([ABCD])\)?(?:$|[\s).:,-])/.exec(t)
  if (m !== null) return m[1]
  const n = text.firstNumber(t)
  if (n === undefined) return undefined
  return LETTERS.find((l) => task.details[`choice${l}`] === n)
}

/**
 * @since 0.1.0
 * @category Scorers
 */
export const score = (task: EvalTask, answer: string): number => (letterOf(task, answer) === task.truth ? 1 : 0)

// The reference solver: a small evaluator of the code base's expressions.

const tokenize = (expr: string) => expr.match(/\d+|[A-Za-z_]\w*|[-+*()]/g) ?? []

const interpret = (defs: ReadonlyMap<string, string>, name: string, x: number, memo: Map<string, number>): number => {
  const key = `${name}(${x})`
  const known = memo.get(key)
  if (known !== undefined) return known
  const tokens = tokenize(defs.get(name) ?? "0")
  let pos = 0
  const expr = (): number => {
    let v = term()
    while (tokens[pos] === "+" || tokens[pos] === "-") {
      const op = tokens[pos++]
      const r = term()
      v = op === "+" ? v + r : v - r
    }
    return v
  }
  const term = (): number => {
    let v = factor()
    while (tokens[pos] === "*") {
      pos++
      v *= factor()
    }
    return v
  }
  const factor = (): number => {
    const tok = tokens[pos++] ?? "0"
    if (tok === "(") {
      const v = expr()
      pos++
      return v
    }
    if (tok === "-") return -factor()
    if (/^\d/.test(tok)) return Number(tok)
    if (tok === "x") return x
    pos++ // "("
    const argument = expr()
    pos++ // ")"
    return interpret(defs, tok, argument, memo)
  }
  const v = expr()
  memo.set(key, v)
  return v
}

/**
 * The reference solver: evaluate the asked call over the code base's text and
 * pick the choice.
 *
 * @since 0.1.0
 * @category Solvers
 */
export const solve = (context: string, question: string): string => {
  const defs = new Map(
    [...context.matchAll(/export function (\w+)\(x\) \{\n {2}return (.+)\n\}/g)].map((m) => [m[1] ?? "", m[2] ?? ""])
  )
  const call = /what does (\w+)\((-?\d+)\) return/.exec(question)
  if (call === null) return ""
  const value = interpret(defs, call[1] ?? "", Number(call[2]), new Map())
  const choice = [...question.matchAll(/([ABCD])\) (-?\d+)/g)].find((m) => Number(m[2]) === value)
  return choice?.[1] ?? ""
}

/**
 * @since 0.1.0
 * @category Families
 */
export const family: Family = { kind: "codeqa", metric: "accuracy", generate, score, solve }
