/**
 * `multidoc`: BrowseComp-style multi-hop questions over N documents. Facts
 * chain a person to a company ("X works for C."), a company to its
 * headquarters city ("C is headquartered in T.") and a city to its region
 * ("T lies in G Province."); each link of the asked chain is in a different
 * document, among many distractor facts of the same shape. A question needs
 * two facts (the city) or three (the region). Scored by exact match.
 *
 * @since 0.1.0
 */
import * as text from "../internal/text.js"
import * as Random from "../Random.js"
import { charsOf, EvalTask, type Family, type GenerateOptions, taskId } from "../Task.js"

const DOC_CHARS = 2_000

/**
 * @since 0.1.0
 * @category Generators
 */
export const generate = (options: GenerateOptions): EvalTask => {
  const rng = Random.make("multidoc", options.seed, options.size, options.index)
  const total = charsOf(options.size)
  const docs = Math.max(3, Math.round(total / DOC_CHARS))
  const hops = rng.pick([2, 3] as const)
  const firsts = text.distinctNames(rng, Math.max(4, docs))
  const people = firsts.map((first) => `${first} ${text.name(rng, 2)}`)
  const companies = text.distinctNames(rng, Math.max(4, Math.ceil(docs / 2))).map((n) => `${n} Works`)
  const cities = text.distinctNames(rng, Math.max(4, Math.ceil(docs / 3)))
  const regions = text.distinctNames(rng, Math.max(3, Math.ceil(docs / 6))).map((n) => `${n} Province`)
  const employer = people.map(() => rng.int(0, companies.length - 1))
  const seat = companies.map(() => rng.int(0, cities.length - 1))
  const region = cities.map(() => rng.int(0, regions.length - 1))
  const facts: Array<Array<string>> = Array.from({ length: docs }, () => [])
  // The asked chain: person 0's links, each in its own document.
  const chainDocs = rng.shuffle(Array.from({ length: docs }, (_, i) => i)).slice(0, 3)
  const c0 = employer[0] ?? 0
  const t0 = seat[c0] ?? 0
  const g0 = region[t0] ?? 0
  const place = (doc: number, fact: string) => facts[doc]?.push(fact)
  const personFact = (p: number) => `${people[p]} works for ${companies[employer[p] ?? 0]}.`
  const companyFact = (c: number) => `${companies[c]} is headquartered in ${cities[seat[c] ?? 0]}.`
  const cityFact = (t: number) => `${cities[t]} lies in ${regions[region[t] ?? 0]}.`
  place(chainDocs[0] ?? 0, personFact(0))
  place(chainDocs[1] ?? 0, companyFact(c0))
  place(chainDocs[2] ?? 0, cityFact(t0))
  const anywhere = () => rng.int(0, docs - 1)
  for (let p = 1; p < people.length; p++) place(anywhere(), personFact(p))
  for (let c = 0; c < companies.length; c++) if (c !== c0) place(anywhere(), companyFact(c))
  for (let t = 0; t < cities.length; t++) if (t !== t0) place(anywhere(), cityFact(t))
  const perDoc = Math.max(200, Math.floor(total / docs))
  const rendered: Array<string> = []
  for (let d = 0; d < docs; d++) {
    const sentences: Array<string> = []
    let length = 0
    while (length < perDoc) {
      const s = text.sentence(rng)
      sentences.push(s)
      length += s.length + 1
    }
    for (const fact of facts[d] ?? []) sentences.splice(rng.int(0, sentences.length), 0, fact)
    rendered.push(`### Document ${d + 1}\n${sentences.join(" ")}`)
  }
  const person = people[0] ?? ""
  const question =
    hops === 2
      ? `In which city is the company that ${person} works for headquartered? Answer with the city only.`
      : `In which province is the headquarters city of the company that ${person} works for? Answer with the province only.`
  return new EvalTask({
    id: taskId("multidoc", options),
    kind: "multidoc",
    size: options.size,
    seed: options.seed,
    index: options.index,
    context: rendered.join("\n\n"),
    question,
    truth: hops === 2 ? (cities[t0] ?? "") : (regions[g0] ?? ""),
    details: {
      documents: docs,
      hops,
      chainDocuments: chainDocs
        .slice(0, hops)
        .map((d) => d + 1)
        .join(",")
    }
  })
}

/**
 * @since 0.1.0
 * @category Scorers
 */
export const score = (task: EvalTask, answer: string): number =>
  text.normalize(answer) === text.normalize(task.truth) ? 1 : 0

/**
 * The reference solver: follow the facts from the person the question names.
 *
 * @since 0.1.0
 * @category Solvers
 */
export const solve = (context: string, question: string): string => {
  const worksFor = new Map(
    [...context.matchAll(/([A-Z][a-z]+ [A-Z][a-z]+) works for ([A-Z][a-z]+ Works)\./g)].map((m) => [m[1], m[2]])
  )
  const seatOf = new Map(
    [...context.matchAll(/([A-Z][a-z]+ Works) is headquartered in ([A-Z][a-z]+)\./g)].map((m) => [m[1], m[2]])
  )
  const regionOf = new Map(
    [...context.matchAll(/([A-Z][a-z]+) lies in ([A-Z][a-z]+ Province)\./g)].map((m) => [m[1], m[2]])
  )
  const person = /company that ([A-Z][a-z]+ [A-Z][a-z]+) works for/.exec(question)?.[1] ?? ""
  const city = seatOf.get(worksFor.get(person) ?? "") ?? ""
  return question.startsWith("In which province") ? (regionOf.get(city) ?? "") : city
}

/**
 * @since 0.1.0
 * @category Families
 */
export const family: Family = { kind: "multidoc", metric: "exact match", generate, score, solve }
