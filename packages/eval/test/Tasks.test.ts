import { assert, describe, it } from "@effect/vitest"
import * as Prompts from "@rlm-runtime/core/Prompts"
import * as Method from "@rlm-runtime/eval/Method"
import * as Random from "@rlm-runtime/eval/Random"
import * as Task from "@rlm-runtime/eval/Task"
import * as Tasks from "@rlm-runtime/eval/Tasks"
import * as CodeQa from "@rlm-runtime/eval/tasks/CodeQa"
import * as Oolong from "@rlm-runtime/eval/tasks/Oolong"
import * as Pairs from "@rlm-runtime/eval/tasks/Pairs"
import { Either, FastCheck as fc } from "effect"

const seed = fc.integer({ min: -1_000_000, max: 1_000_000 })
const size = fc.integer({ min: 64, max: 12_000 })
const index = fc.integer({ min: 0, max: 50 })
const kind = fc.constantFrom(...Task.kinds)
const params = { numRuns: 40 }

/** An answer that is certainly wrong for the task, of the task's own shape. */
const wrongAnswer = (task: Task.EvalTask): string => {
  switch (task.kind) {
    case "sniah":
      return String(Number(task.truth) + 1)
    case "oolong":
      return task.details.questionType === "count"
        ? (Oolong.LABELS.find((l) => !task.question.includes(`"${l}"`)) ?? "none")
        : (Oolong.LABELS.find((l) => l !== task.truth) ?? "none")
    case "pairs":
      return "R999998-R999999"
    case "multidoc":
      return `${task.truth}x`
    case "codeqa":
      return ["A", "B", "C", "D"].find((l) => l !== task.truth) ?? "A"
  }
}

describe("generators and scorers", () => {
  it.prop(
    "the same (seed, size, index) gives the same task",
    [kind, seed, size, index],
    ([k, s, n, i]) => {
      const a = Tasks.generate(k, { seed: s, size: n, index: i })
      const b = Tasks.generate(k, { seed: s, size: n, index: i })
      assert.strictEqual(a.id, b.id)
      assert.strictEqual(a.context, b.context)
      assert.strictEqual(a.question, b.question)
      assert.strictEqual(a.truth, b.truth)
      assert.deepStrictEqual(a.details, b.details)
    },
    { fastCheck: params }
  )

  it.prop(
    "another seed gives another context",
    [kind, seed, size, index],
    ([k, s, n, i]) => {
      const a = Tasks.generate(k, { seed: s, size: n, index: i })
      const b = Tasks.generate(k, { seed: s + 1, size: n, index: i })
      assert.notStrictEqual(a.context, b.context)
    },
    { fastCheck: params }
  )

  it.prop(
    "the truth is recoverable from the context (a reference solver finds it)",
    [kind, seed, size, index],
    ([k, s, n, i]) => {
      const task = Tasks.generate(k, { seed: s, size: n, index: i })
      assert.strictEqual(Tasks.families[k].solve(task.context, task.question), task.truth)
    },
    { fastCheck: params }
  )

  it.prop(
    "the scorer gives full marks to the truth and none to a wrong answer",
    [kind, seed, size, index],
    ([k, s, n, i]) => {
      const task = Tasks.generate(k, { seed: s, size: n, index: i })
      assert.strictEqual(Tasks.score(task, task.truth), 1)
      assert.strictEqual(Tasks.score(task, wrongAnswer(task)), 0)
      assert.strictEqual(Tasks.score(task, ""), 0)
    },
    { fastCheck: params }
  )

  it.prop(
    "the context is about the size asked for (4 characters per token)",
    [kind, seed, fc.integer({ min: 2048, max: 20_000 }), index],
    ([k, s, n, i]) => {
      const task = Tasks.generate(k, { seed: s, size: n, index: i })
      const ratio = task.context.length / Task.charsOf(n)
      assert.isTrue(ratio > 0.9 && ratio < 1.15, `${task.id}: ${task.context.length} chars for ${n} tokens`)
    },
    { fastCheck: { numRuns: 20 } }
  )

  it("a 10m-token sniah context (~40 MB) is generated in one pass, its needle intact", () => {
    const task = Tasks.generate("sniah", { seed: 7, size: 10 * 1024 * 1024, index: 0 })
    assert.isTrue(task.context.length >= 40 * 1024 * 1024)
    assert.strictEqual(Tasks.families.sniah.solve(task.context, task.question), task.truth)
  })
})

describe("scorers, one by one", () => {
  it.prop(
    "oolong counts: partial credit 0.75^distance, as OOLONG scores numbers",
    [seed, index, fc.integer({ min: 1, max: 6 })],
    ([s, i, d]) => {
      // Find a count question of this seed.
      let task = Tasks.generate("oolong", { seed: s, size: 1024, index: i })
      for (let j = i + 1; task.details.questionType !== "count"; j++)
        task = Tasks.generate("oolong", { seed: s, size: 1024, index: j })
      const truth = Number(task.truth)
      assert.closeTo(Oolong.score(task, String(truth + d)), 0.75 ** d, 1e-12)
      assert.closeTo(Oolong.score(task, `There are ${truth} records.`), 1, 1e-12)
    },
    { fastCheck: params }
  )

  it.prop(
    "pairs: F1 — a half-right answer scores strictly between 0 and 1, order and format do not matter",
    [seed, index],
    ([s, i]) => {
      const task = Tasks.generate("pairs", { seed: s, size: 2048, index: i })
      const truth = [...Pairs.parsePairs(task.truth)]
      const reversed = truth
        .map((p) => p.split("-").reverse().join(", "))
        .reverse()
        .join("; ")
      assert.strictEqual(Pairs.score(task, reversed), 1)
      const half = [truth[0] ?? "", "R999998-R999999"].join("\n")
      const f1 = Pairs.score(task, half)
      // precision 1/2, recall 1/|truth|.
      const p = 0.5
      const r = 1 / truth.length
      assert.closeTo(f1, (2 * p * r) / (p + r), 1e-12)
    },
    { fastCheck: params }
  )

  it.prop(
    "codeqa: the letter in any usual form, or the value of the right choice",
    [seed, index],
    ([s, i]) => {
      const task = Tasks.generate("codeqa", { seed: s, size: 1024, index: i })
      const value = task.details[`choice${task.truth}`]
      for (const form of [
        task.truth,
        `(${task.truth})`,
        `${task.truth.toLowerCase()}.`,
        `${task.truth}) ${value}`,
        String(value)
      ]) {
        assert.strictEqual(CodeQa.score(task, form), 1, form)
      }
    },
    { fastCheck: params }
  )

  it("exact match ignores case, whitespace, quotes and a trailing period, not the content", () => {
    const task = Tasks.generate("multidoc", { seed: 1, size: 4096, index: 0 })
    assert.strictEqual(Tasks.score(task, `  "${task.truth.toUpperCase()}".  `), 1)
    assert.strictEqual(Tasks.score(task, `Answer: ${task.truth}`), 1)
    assert.strictEqual(Tasks.score(task, `${task.truth} City`), 0)
  })
})

describe("Random", () => {
  it.prop(
    "int stays in its bounds; shuffle is a permutation; equal seeds, equal sequences",
    [seed, fc.integer({ min: -50, max: 50 }), fc.integer({ min: 0, max: 100 })],
    ([s, lo, span]) => {
      const a = Random.make(s, "x")
      const b = Random.make(s, "x")
      for (let k = 0; k < 50; k++) {
        const x = a.int(lo, lo + span)
        assert.isTrue(Number.isInteger(x) && x >= lo && x <= lo + span)
        assert.strictEqual(x, b.int(lo, lo + span))
      }
      const items = Array.from({ length: span }, (_, k) => k)
      assert.deepStrictEqual(
        [...a.shuffle(items)].sort((x, y) => x - y),
        items
      )
    }
  )

  it("the sequence is fixed across platforms (32-bit arithmetic only)", () => {
    // A change means every generated task changed.
    const rng = Random.make("golden", 1)
    const values = Array.from({ length: 4 }, () => rng.nextU32())
    assert.deepStrictEqual(values, GOLDEN)
  })
})

describe("sizes", () => {
  it("8k, 32k, 128k, 1m, 10m parse to binary token counts and format back", () => {
    for (const [text, tokens] of [
      ["8k", 8192],
      ["32k", 32768],
      ["128k", 131072],
      ["1m", 1048576],
      ["10m", 10485760],
      ["5000", 5000]
    ] as const) {
      assert.deepStrictEqual(Task.parseSize(text), Either.right(tokens))
      assert.deepStrictEqual(Task.parseSize(Task.formatSize(tokens)), Either.right(tokens))
    }
    assert.isTrue(Either.isLeft(Task.parseSize("8q")))
    assert.isTrue(Either.isLeft(Task.parseSize("10")))
  })
})

describe("rlm-no-subcalls", () => {
  it("runs without sub-call functions; a system prompt of the user's own loses its sub-call tools", () => {
    const options = Method.noSubcallsOptions({ policy: { maxSteps: 7 } })
    assert.strictEqual(options.subCalls, false)
    assert.isUndefined(options.systemPrompt)
    assert.deepStrictEqual(options.policy, { maxSteps: 7 })
    for (const language of ["python", "javascript"] as const) {
      for (const protocol of ["fenced", "tools"] as const) {
        const own = Method.noSubcallsOptions({ protocol, systemPrompt: Prompts.systemPromptFor(language, protocol) })
        assert.isFalse(/llm_query|rlm_query/.test(own.systemPrompt ?? ""), `${language} ${protocol}`)
        assert.include(own.systemPrompt ?? "", "peek(")
      }
    }
  })

  it("direct: the request fits the window and keeps the context's head", () => {
    const task = Tasks.generate("sniah", { seed: 2, size: 16_384, index: 0 })
    const { request, shownChars } = Method.directRequest(task, 2048)
    const chars = request.messages.reduce((n, m) => n + m.content.length, 0)
    assert.isTrue(chars <= 2048 * 4)
    assert.isTrue(shownChars > 2048 * 4 - 600)
    assert.include(request.messages[1]?.content ?? "", task.context.slice(0, shownChars))
    assert.include(request.messages[1]?.content ?? "", task.question)
    const whole = Method.directRequest(task, undefined)
    assert.strictEqual(whole.shownChars, task.context.length)
  })
})

/** xmur3 + sfc32 of ("golden", 1) after 12 warm-up outputs, computed independently (a Python port of both). */
const GOLDEN: ReadonlyArray<number> = [2450972058, 2908970324, 4085609263, 646318773]
