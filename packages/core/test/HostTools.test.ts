/**
 * Host functions as an @effect/ai Toolkit (issue 11, items 4 and 5): user
 * tools called from Python and JavaScript (good and bad arguments, a failing
 * handler, a defect), a name clash, `budget()` as sub-calls are made, and a
 * budget failure that model code cannot catch.
 */
import { Tool, Toolkit } from "@effect/ai"
import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox, PythonSandbox, type Sandbox } from "@rlm-runtime/sandbox"
import { Chunk, Effect, Exit, FastCheck, Layer, Schema, Stream } from "effect"
import { Budget, HostTools, Policy, Prompts, Rlm, RlmError } from "../src/index.js"

const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

class NotFound extends Schema.TaggedError<NotFound>()("NotFound", { message: Schema.String }) {}

const Lookup = Tool.make("lookup", {
  description: "Look a key up in the catalogue; returns its entry.",
  parameters: { key: Schema.String, limit: Schema.optional(Schema.Int) },
  success: Schema.Struct({ key: Schema.String, hits: Schema.Array(Schema.Number) }),
  failure: NotFound
})

const Crash = Tool.make("crash", { description: "Always dies.", success: Schema.String })

const Catalogue = Toolkit.make(Lookup, Crash)

/** What the handlers saw, decoded. */
const seen: Array<unknown> = []

const CatalogueLive = Catalogue.toLayer({
  lookup: ({ key, limit }) =>
    Effect.suspend(() => {
      seen.push({ key, limit })
      return key === "missing"
        ? Effect.fail(new NotFound({ message: `no entry for ${key}` }))
        : Effect.succeed({ key, hits: Array.from({ length: limit ?? 2 }, (_, i) => i) })
    }),
  crash: () => Effect.die(new Error("handler bug"))
})

type Language = "python" | "javascript"

const sandboxOf = (language: Language): Layer.Layer<Sandbox.Sandbox, Sandbox.SandboxError> =>
  language === "python" ? PythonSandbox.layer({ isolation: "process" }) : JavascriptSandbox.layer()

const programs: Record<Language, { readonly good: string; readonly bad: string; readonly failing: string }> = {
  python: {
    good: [
      "a = lookup('alpha')",
      "b = lookup('beta', limit=3)",
      "c = lookup(key='gamma', limit=None)",
      "print(a['hits'], b['hits'], c['key'], lookup.__doc__, str(__import__('inspect').signature(lookup)))"
    ].join("\n"),
    bad: [
      "out = []",
      "for call in (lambda: lookup(42), lambda: lookup('x', limit='many'), lambda: lookup()):",
      "    try:",
      "        call()",
      "    except Exception as e:",
      "        out.append(type(e).__name__ + ': ' + str(e))",
      "print('\\n'.join(out))"
    ].join("\n"),
    failing: [
      "for call in (lambda: lookup('missing'), crash):",
      "    try:",
      "        call()",
      "    except RuntimeError as e:",
      "        print('RuntimeError:', e)",
      "print('went on')"
    ].join("\n")
  },
  javascript: {
    good: [
      "var a = lookup('alpha')",
      "var b = lookup('beta', 3)",
      "var c = lookup('gamma', undefined)",
      "console.log(JSON.stringify(a.hits), JSON.stringify(b.hits), c.key, lookup.description, String(lookup).split('\\n')[0], lookup.length)"
    ].join("\n"),
    bad: [
      "var out = []",
      "for (const call of [() => lookup(42), () => lookup('x', 'many'), () => lookup()]) {",
      "  try { call() } catch (e) { out.push(e.name + ': ' + e.message) }",
      "}",
      "console.log(out.join('\\n'))"
    ].join("\n"),
    failing: [
      "for (const call of [() => lookup('missing'), () => crash()]) {",
      "  try { call() } catch (e) { console.log(e.name + ': ' + e.message) }",
      "}",
      "console.log('went on')"
    ].join("\n")
  }
}

/** The output of each step's blocks, in order. */
const outputs = (trace: { readonly events: ReadonlyArray<{ readonly _tag: string }> }) =>
  trace.events.flatMap((e) =>
    e._tag === "StepCompleted"
      ? (e as unknown as { blocks: ReadonlyArray<{ stdout: string; error?: string }> }).blocks.map(
          (b) => b.stdout + (b.error ?? "")
        )
      : []
  )

for (const language of ["python", "javascript"] as const) {
  describe(`user tools (${language})`, () => {
    it.live(
      "called with good and bad arguments and a failing handler: decoded by the tool's Schema, errors raised in model code, the run goes on",
      () =>
        Effect.gen(function* () {
          seen.length = 0
          const p = programs[language]
          const layer = Layer.mergeAll(
            FakeAdapter.layerInstrumented({ script: [repl(p.good), repl(p.bad), repl(p.failing), "FINAL(done)"] }),
            sandboxOf(language),
            CatalogueLive
          )
          const [result, stats] = yield* Effect.gen(function* () {
            const result = yield* Rlm.run("q", "ctx", { tools: Catalogue })
            return [result, yield* (yield* FakeAdapter.FakeInstrumentation).stats] as const
          }).pipe(Effect.provide(layer))
          assert.strictEqual(result.answer, "done")
          const [good, bad, failing] = outputs(result.trace)
          if (language === "python") {
            assert.strictEqual(
              good,
              "[0, 1] [0, 1, 2] gamma Look a key up in the catalogue; returns its entry. (key, limit=None)\n"
            )
          } else {
            assert.strictEqual(
              good,
              "[0,1] [0,1,2] gamma Look a key up in the catalogue; returns its entry. function lookup(key, limit = undefined) { [host tool] } 1\n"
            )
          }
          // Only the good calls reached the handler, decoded.
          assert.deepStrictEqual(seen.slice(0, 3), [
            { key: "alpha", limit: undefined },
            { key: "beta", limit: 3 },
            { key: "gamma", limit: undefined }
          ])
          const badLines = (bad ?? "").trimEnd().split("\n")
          assert.strictEqual(badLines.length, 3)
          assert.match(badLines[0] ?? "", /Error: lookup: bad arguments: Expected string, actual 42 at key/)
          assert.match(badLines[1] ?? "", /Error: lookup: bad arguments: Expected .*, actual "many" at limit/)
          assert.match(badLines[2] ?? "", /TypeError: .*(missing|key)/)
          assert.deepStrictEqual(seen.slice(3), [{ key: "missing", limit: undefined }])
          const failingLines = (failing ?? "").trimEnd().split("\n")
          assert.match(failingLines[0] ?? "", /Error: lookup failed: no entry for missing/)
          assert.match(failingLines[1] ?? "", /Error: host call failed: Error: handler bug/)
          assert.strictEqual(failingLines[2], "went on")
          // The system prompt lists the tools, with their signatures and descriptions.
          const system = stats.requests[0]?.messages[0]?.content ?? ""
          const signature = language === "python" ? "lookup(key, limit=None)" : "lookup(key, limit = undefined)"
          assert.include(system, `\`${signature}\`: Look a key up in the catalogue; returns its entry.`)
          assert.include(system, "`crash()`: Always dies.")
        }),
      120_000
    )
  })
}

describe("user tools: Rlm.stream", () => {
  it.live("a stream run calls the user's tool too; its handlers come from the environment", () =>
    Effect.gen(function* () {
      seen.length = 0
      const events = yield* Rlm.stream("q", "ctx", { tools: Catalogue }).pipe(
        Stream.runCollect,
        Effect.provide(
          Layer.mergeAll(
            FakeAdapter.layer({ script: [repl("var e = lookup('delta', 1)"), "FINAL_VAR(e)"] }),
            JavascriptSandbox.layer(),
            CatalogueLive
          )
        )
      )
      const answered = Chunk.toReadonlyArray(events).find((e) => e._tag === "Answered")
      assert.strictEqual(answered?._tag === "Answered" ? answered.answer : undefined, '{ key: "delta", hits: [0] }')
      assert.deepStrictEqual(seen, [{ key: "delta", limit: 1 }])
    })
  )
})

describe("user tools: names", () => {
  for (const name of ["llm_query", "budget", "peek", "FINAL"]) {
    it.live(`a tool called ${name} fails the run at its start with RunFailed "Tools"`, () =>
      Effect.gen(function* () {
        const Clash = Toolkit.make(Tool.make(name, { success: Schema.String }))
        const layer = Layer.mergeAll(
          FakeAdapter.layerInstrumented({ script: ["FINAL(x)"] }),
          JavascriptSandbox.layer(),
          Clash.toLayer({ [name]: () => Effect.succeed("x") } as never)
        )
        const [exit, stats] = yield* Effect.gen(function* () {
          const exit = yield* Effect.exit(Rlm.run("q", "ctx", { tools: Clash }))
          return [exit, yield* (yield* FakeAdapter.FakeInstrumentation).stats] as const
        }).pipe(Effect.provide(layer))
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
          const e = exit.cause.error
          assert.instanceOf(e, RlmError.RunFailed)
          if (e._tag === "RunFailed") {
            assert.strictEqual(e.reason, "Tools")
            assert.include(e.message, `'${name}'`)
          }
        } else assert.fail("expected a typed failure")
        assert.strictEqual(stats.calls.root, 0)
      })
    )
  }

  it("Sandbox.checkTools refuses names that are not identifiers in both languages", () => {
    const spec = (name: string, params: ReadonlyArray<string> = []): Sandbox.ToolSpec => ({
      name,
      description: "",
      parameters: params.map((p) => ({ name: p, optional: false, kind: "json" }))
    })
    const check = (tools: ReadonlyArray<Sandbox.ToolSpec>) => HostTools.checkUserTools(tools)
    assert.isUndefined(check([spec("lookup", ["key", "limit"])]))
    for (const bad of ["class", "while", "_private", "a-b", "1x", "x y", "", "a".repeat(65)]) {
      assert.isString(check([spec(bad)]), bad)
      assert.isString(check([spec("ok", [bad])]), bad)
    }
    assert.isString(check([spec("twice"), spec("twice")]))
    assert.isString(check([spec("ok", ["a", "a"])]))
  })
})

describe("budget()", () => {
  for (const language of ["python", "javascript"] as const) {
    it.live(`in ${language}: what is left changes as sub-calls are made`, () =>
      Effect.gen(function* () {
        const code =
          language === "python"
            ? [
                "b0 = budget()",
                "llm_query('one')",
                "llm_query_batched(['two', 'three'])",
                "b1 = budget()",
                "print(b0['subCalls'], b1['subCalls'], b0['steps'], b0['depth'], b0['costUsd'], b0['totalTokens'] > b1['totalTokens'], b1['timeMs'] > 0)"
              ].join("\n")
            : [
                "var b0 = budget()",
                "llm_query('one')",
                "llm_query_batched(['two', 'three'])",
                "var b1 = budget()",
                "console.log(b0.subCalls, b1.subCalls, b0.steps, b0.depth, b0.costUsd, b0.totalTokens > b1.totalTokens, b1.timeMs > 0)"
              ].join("\n")
        const result = yield* Rlm.run("q", "ctx", {
          policy: { maxSubCalls: 10, maxSteps: 7, maxTotalTokens: 1_000_000, timeoutMs: 600_000 }
        }).pipe(
          Effect.provide(
            Layer.merge(
              FakeAdapter.layer({ script: [repl(code), "FINAL(done)"], rules: [{ match: "", reply: "ok" }] }),
              sandboxOf(language)
            )
          )
        )
        const none = language === "python" ? "None" : "null"
        const yes = language === "python" ? "True" : "true"
        assert.strictEqual(outputs(result.trace)[0], `10 7 6 1 ${none} ${yes} ${yes}\n`)
      })
    )
  }

  it.prop(
    "budgetLeft: a bounded limit's left is max(0, limit - used); an unset one is null",
    [
      FastCheck.record({
        maxSteps: FastCheck.integer({ min: 1, max: 100 }),
        maxSubCalls: FastCheck.integer({ min: 0, max: 1000 }),
        maxTotalTokens: FastCheck.option(FastCheck.integer({ min: 0, max: 10_000 }), { nil: undefined }),
        maxCostUsd: FastCheck.option(FastCheck.double({ min: 0, max: 10, noNaN: true }), { nil: undefined }),
        timeoutMs: FastCheck.option(FastCheck.integer({ min: 1, max: 100_000 }), { nil: undefined }),
        maxDepth: FastCheck.integer({ min: 0, max: 5 })
      }),
      FastCheck.record({
        subCalls: FastCheck.integer({ min: 0, max: 2000 }),
        totalTokens: FastCheck.integer({ min: 0, max: 20_000 }),
        costUsd: FastCheck.double({ min: 0, max: 20, noNaN: true }),
        step: FastCheck.integer({ min: 0, max: 200 }),
        depth: FastCheck.integer({ min: 0, max: 6 }),
        elapsedMs: FastCheck.integer({ min: 0, max: 200_000 })
      })
    ],
    ([limits, used]) => {
      const policy = Policy.make(Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined)) as never)
      const totals: Budget.Totals = {
        ...Budget.emptyTotals,
        subCalls: used.subCalls,
        totalTokens: used.totalTokens,
        costUsd: used.costUsd
      }
      const left = HostTools.budgetLeft(policy, totals, used)
      const expect = (limit: number | undefined, u: number) => (limit === undefined ? null : Math.max(0, limit - u))
      assert.strictEqual(left.steps, Math.max(0, limits.maxSteps - used.step))
      assert.strictEqual(left.subCalls, Math.max(0, limits.maxSubCalls - used.subCalls))
      assert.strictEqual(left.totalTokens, expect(limits.maxTotalTokens, used.totalTokens))
      assert.strictEqual(left.costUsd, expect(limits.maxCostUsd, used.costUsd))
      assert.strictEqual(left.timeMs, expect(limits.timeoutMs, used.elapsedMs))
      assert.strictEqual(left.depth, Math.max(0, limits.maxDepth - used.depth))
      assert.isNull(left.inputTokens)
      assert.isNull(left.outputTokens)
      // What budget() returns always encodes.
      assert.deepStrictEqual(Schema.decodeUnknownSync(HostTools.BudgetLeft)(left), left)
    }
  )

  it("is listed in both system prompts", () => {
    for (const language of ["python", "javascript"] as const) {
      assert.include(Prompts.systemPromptFor(language), "`budget()`")
    }
  })
})

describe("a budget failure inside a host call aborts the block", () => {
  const swallowing: Record<Language, string> = {
    python: [
      "a = llm_query('one')",
      "for i in range(3):",
      "    try:",
      "        llm_query('two')",
      "    except BaseException:",
      "        pass",
      "while True:",
      "    pass"
    ].join("\n"),
    javascript: [
      "var a = llm_query('one')",
      "for (let i = 0; i < 3; i++) {",
      "  try { llm_query('two') } catch (e) {}",
      "}",
      "while (true) {}"
    ].join("\n")
  }
  for (const language of ["python", "javascript"] as const) {
    it.live(
      `${language}: model code that catches everything around an over-budget llm_query is stopped there; the run ends with BudgetExceeded`,
      () =>
        Effect.gen(function* () {
          const layer = Layer.merge(
            FakeAdapter.layerInstrumented({
              script: [repl(swallowing[language]), "FINAL(never)"],
              rules: [{ match: "", reply: "ok" }]
            }),
            sandboxOf(language)
          )
          const started = Date.now()
          const [exit, stats] = yield* Effect.gen(function* () {
            const exit = yield* Effect.exit(
              Rlm.run("q", "ctx", { policy: { maxSubCalls: 1 }, execTimeout: "60 seconds" })
            )
            return [exit, yield* (yield* FakeAdapter.FakeInstrumentation).stats] as const
          }).pipe(Effect.provide(layer))
          // Stopped at the abort, not by the 60 s block limit.
          assert.isBelow(Date.now() - started, 30_000)
          assert.strictEqual(stats.calls.sub, 1)
          assert.strictEqual(stats.calls.root, 1)
          assert.isTrue(Exit.isFailure(exit))
          if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
            const e = exit.cause.error
            assert.instanceOf(e, RlmError.BudgetExceeded)
            if (e._tag === "BudgetExceeded") {
              assert.strictEqual(e.limit, "maxSubCalls")
              assert.strictEqual(e.used, 2)
              const events = e.trace?.events ?? []
              // One refused sub-call only: the later calls in the loop never reached the host.
              assert.strictEqual(events.filter((ev) => ev._tag === "SubCall").length, 2)
              assert.strictEqual(events.filter((ev) => ev._tag === "StepCompleted").length, 1)
              assert.strictEqual(events.at(-1)?._tag, "RunFinished")
            }
          } else assert.fail("expected BudgetExceeded")
        }),
      60_000
    )
  }

  it.live(
    "python: a block that also swallows the interrupts is killed after the grace period; still BudgetExceeded",
    () =>
      Effect.gen(function* () {
        const code = [
          "try:",
          "    llm_query('over')",
          "except BaseException:",
          "    pass",
          "while True:",
          "    try:",
          "        while True:",
          "            pass",
          "    except BaseException:",
          "        pass"
        ].join("\n")
        const started = Date.now()
        const exit = yield* Effect.exit(
          Rlm.run("q", "ctx", { policy: { maxSubCalls: 0 }, execTimeout: "60 seconds" }).pipe(
            Effect.provide(
              Layer.merge(FakeAdapter.layer({ script: [repl(code), "FINAL(never)"] }), sandboxOf("python"))
            )
          )
        )
        assert.isBelow(Date.now() - started, 30_000)
        assert.isTrue(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error._tag === "BudgetExceeded")
      })
  )
})
