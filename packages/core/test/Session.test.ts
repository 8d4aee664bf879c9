/**
 * Multi-turn sessions (issue 13): variables and `history` across turns in
 * Python and JavaScript, compaction over a scripted 20-turn conversation,
 * export → resume, forged states, serialized asks, and a closed session.
 */
import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter, LlmAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox, PythonSandbox, Sandbox } from "@rlm-runtime/sandbox"
import { Chunk, Effect, Exit, FastCheck, Fiber, Layer, Schedule, Schema, Scope, Stream } from "effect"
import { Rlm, type RunEvent, Session } from "../src/index.js"
import { counted } from "./utils/countedSandbox.js"

type Language = "python" | "javascript"

const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

const sandboxOf = (language: Language): Layer.Layer<Sandbox.Sandbox, Sandbox.SandboxError> =>
  language === "python" ? PythonSandbox.layer({ isolation: "process" }) : JavascriptSandbox.layer()

const env = (language: Language, options: FakeAdapter.Options) =>
  Layer.merge(FakeAdapter.layerInstrumented(options), sandboxOf(language))

/** Code of both languages, by language. */
const code = {
  python: {
    define: "x = 41\nitems = [1, 'two', {'k': None}]\nsquare = lambda n: n * n",
    useEarlier: "y = x + 1\nprint(history[0]['query'], history[0]['answer'], square(3))",
    restored: "z = x + len(items)\nprint(type(square).__name__ if 'square' in globals() else 'no square')"
  },
  javascript: {
    define: "var x = 41; var items = [1, 'two', { k: null }]; var square = (n) => n * n",
    useEarlier: "var y = x + 1; console.log(history[0].query, history[0].answer, square(3))",
    restored: "var z = x + items.length; console.log(typeof square === 'undefined' ? 'no square' : typeof square)"
  }
} as const

const rootRequests = (stats: FakeAdapter.Stats) => stats.requests.filter((r) => r.role === "root")

for (const language of ["javascript", "python"] as const) {
  describe(`Session (${language})`, () => {
    it.live(
      "a second ask sees the first one's variables, and history holds the earlier turns",
      () =>
        Effect.gen(function* () {
          const session = yield* Rlm.session({ context: "the context" })
          const first = yield* session.ask("Define x.")
          assert.strictEqual(first.answer, "defined")
          const second = yield* session.ask("What is x + 1?")
          assert.strictEqual(second.answer, "42")
          assert.strictEqual(second.source, "FINAL_VAR")
          assert.strictEqual(yield* session.turns, 2)
          const stdout = second.trace.events.flatMap((e) =>
            e._tag === "StepCompleted" ? e.blocks.map((b) => b.stdout) : []
          )
          assert.include(stdout.join(""), "Define x. defined 9")
          // Each turn is a run of its own.
          for (const result of [first, second]) {
            const tags = result.trace.events.map((e) => e._tag)
            assert.strictEqual(tags[0], "RunStarted")
            assert.strictEqual(tags.at(-1), "RunFinished")
          }
          // The second turn's root conversation starts from the first turn's messages.
          const stats = yield* FakeAdapter.FakeInstrumentation.pipe(Effect.flatMap((i) => i.stats))
          const requests = rootRequests(stats)
          const secondTurn = requests[2]!
          const contents = secondTurn.messages.map((m) => m.content)
          assert.include(contents[1]!, "Question: Define x.")
          assert.isTrue(contents.some((c) => c.includes("FINAL(defined)")))
          assert.include(contents.at(-1)!, "Question: What is x + 1?")
          assert.include(contents.at(-1)!, "turn 2 of a session")
        }).pipe(
          Effect.scoped,
          Effect.provide(
            env(language, {
              script: [repl(code[language].define), "FINAL(defined)", repl(code[language].useEarlier), "FINAL_VAR(y)"]
            })
          )
        ),
      60_000
    )
  })
}

/** What the summarizer saw: the compaction requests, and every other root request. */
interface Seen {
  readonly compactions: Array<LlmAdapter.ChatRequest>
  readonly root: Array<LlmAdapter.ChatRequest>
}

/**
 * The Fake adapter, except that a compaction request (recognized by its
 * system prompt) is answered by a deterministic summarizer: `SUMMARY#n`
 * then every "Final answer:" line of the request (the earlier summary's
 * lines included), so the summary is made of what it was given.
 */
const summarizing = (options: FakeAdapter.Options, seen: Seen) =>
  Layer.effect(
    LlmAdapter.LlmAdapter,
    Effect.map(FakeAdapter.makeInstrumented(options), ({ adapter }) =>
      LlmAdapter.make({
        model: adapter.model,
        chat: (request) => {
          if (request.role === "root" && request.messages[0]?.content.startsWith("You compact the history")) {
            seen.compactions.push(request)
            const text = request.messages.map((m) => m.content).join("\n")
            let turn = 0
            const summary = [
              `SUMMARY#${seen.compactions.length}`,
              ...text.split("\n").flatMap((l) => {
                const n = /^## Turn (\d+)$/.exec(l)
                if (n) turn = Number(n[1])
                const prior = /^Turn \d+ answered .*$/.exec(l)
                if (prior) return [prior[0]]
                const a = /^Final answer: (.*)$/.exec(l)
                return a ? [`Turn ${turn} answered ${a[1]}`] : []
              })
            ].join("\n")
            return Effect.succeed(
              new LlmAdapter.ChatResponse({
                text: summary,
                model: "fake",
                usage: new LlmAdapter.Usage({ inputTokens: 10, outputTokens: 5, totalTokens: 15 })
              })
            )
          }
          if (request.role === "root") seen.root.push(request)
          return adapter.chat(request)
        }
      })
    )
  )

const sumOfSquares = (n: number) => (n * (n + 1) * (2 * n + 1)) / 6

describe("Session compaction", () => {
  it.live(
    "a scripted 20-turn conversation compacts, the model sees the summary, answers stay right, history keeps all 20",
    () => {
      const seen: Seen = { compactions: [], root: [] }
      const turnCode = (i: number) =>
        repl(
          `var sq = ${i} * ${i}; var total = (typeof total === "undefined" ? 0 : total) + sq; var seenTurns = history.length`
        )
      const script = [
        ...Array.from({ length: 20 }, (_, k) => [turnCode(k + 1), "FINAL_VAR(total)"]).flat(),
        repl("var all = history.length + ':' + history.map((h) => h.answer).join(',')"),
        "FINAL_VAR(all)"
      ]
      return Effect.gen(function* () {
        const session = yield* Rlm.session({ context: "numbers", compactAt: 400 })
        const compacted: Array<RunEvent.SessionCompacted> = []
        for (let i = 1; i <= 20; i++) {
          const query = `Turn ${i}: add ${i} squared to the total.`
          if (i % 2 === 0) {
            const events = Chunk.toReadonlyArray(yield* Stream.runCollect(session.askStream(query)))
            for (const e of events) if (e._tag === "SessionCompacted") compacted.push(e)
            const at = events.findIndex((e) => e._tag === "SessionCompacted")
            if (at !== -1) {
              // After RunStarted and its call's ModelCallStarted (step 0), before any step.
              assert.strictEqual(events[0]?._tag, "RunStarted")
              const call = events[at - 1]
              assert.isTrue(call?._tag === "ModelCallStarted" && call.step === 0)
              assert.isTrue(events.slice(0, at).every((e) => e._tag !== "StepCompleted"))
            }
            const answered = events.at(-1)
            assert.strictEqual(answered?._tag, "Answered")
            assert.strictEqual(answered?._tag === "Answered" ? answered.answer : "", String(sumOfSquares(i)))
          } else {
            const result = yield* session.ask(query)
            assert.strictEqual(result.answer, String(sumOfSquares(i)), `turn ${i}`)
            // A turn's totals are its own: its two root calls, and a compaction's one.
            assert.isAtMost(result.totals.rootCalls, 3)
          }
        }
        const last = yield* session.ask("How many turns so far, and their answers?")
        const answers = Array.from({ length: 20 }, (_, k) => sumOfSquares(k + 1)).join(",")
        assert.strictEqual(last.answer, `20:${answers}`)

        // Compacted several times; the stream showed it (the even turns were streamed).
        assert.isAtLeast(seen.compactions.length, 3)
        assert.isAtLeast(compacted.length, 1)
        for (const e of compacted) assert.isTrue(e.tokensAfter < e.tokensBefore)
        // Each summary was given the previous one.
        for (const [i, request] of seen.compactions.entries()) {
          if (i > 0) assert.include(request.messages[1]!.content, `SUMMARY#${i}`)
        }
        // After the first compaction the model sees the summary, not the early turns' messages,
        // and its root history stays bounded.
        const firstCompaction = seen.root.findIndex((r) => r.messages.some((m) => m.content.includes("SUMMARY#1")))
        assert.isAbove(firstCompaction, 0)
        for (const request of seen.root.slice(firstCompaction)) {
          const contents = request.messages.map((m) => m.content).join("\n")
          assert.match(contents, /SUMMARY#\d+/)
          assert.notInclude(contents, "Question: Turn 1: add")
          assert.include(contents, "Turn 1 answered 1")
          // system prompt + summary + one kept turn + this turn: far below the 20 turns' messages.
          assert.isBelow(Session.estimateTokens(request.messages.slice(1)), 400 * 3)
        }
        const state = yield* session.export
        assert.strictEqual(state.turns.length, 21)
        assert.isDefined(state.summary)
        const summarized = state.summary!.turns
        assert.isTrue(state.turns.slice(0, summarized).every((t) => t.messages === undefined))
        assert.isTrue(state.turns.slice(summarized).every((t) => t.messages !== undefined))
        assert.deepStrictEqual(state.variables.total, sumOfSquares(20))
        assert.deepStrictEqual(state.variables.seenTurns, 19)
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(summarizing({ script }, seen), JavascriptSandbox.layer())))
    },
    120_000
  )

  it.effect("estimateTokens is characters / 4, rounded up, over contents and tool-call arguments", () =>
    Effect.sync(() => {
      const m = (content: string) => new LlmAdapter.ChatMessage({ role: "user", content })
      assert.strictEqual(Session.estimateTokens([]), 0)
      assert.strictEqual(Session.estimateTokens([m("abcd"), m("e")]), 2)
      const call = new LlmAdapter.ChatMessage({
        role: "assistant",
        content: "",
        toolCalls: [new LlmAdapter.ToolCall({ id: "1", name: "run_code", arguments: "{}" })]
      })
      assert.strictEqual(Session.estimateTokens([call]), 3)
    })
  )
})

/** A session state, as a client would send it: its JSON, parsed. */
const wire = (state: Session.SessionState): unknown =>
  JSON.parse(JSON.stringify(Schema.encodeSync(Session.SessionState)(state)))

const baseState = (patch: Record<string, unknown> = {}): unknown => ({
  version: 1,
  id: "s1",
  language: "javascript",
  protocol: "fenced",
  turns: [],
  variables: {},
  unserializable: [],
  ...patch
})

const invalidReason = (input: unknown) => Effect.map(Effect.flip(Session.decodeState(input)), (e) => e.reason)

describe("Session export and resume", () => {
  for (const language of ["javascript", "python"] as const) {
    it.live(
      `${language}: export → resume continues in a fresh interpreter (variables back, unserializable listed)`,
      () =>
        Effect.gen(function* () {
          const sessions = { open: 0, opened: 0 }
          const sandbox = counted(sessions, sandboxOf(language))
          const state = yield* Effect.gen(function* () {
            const session = yield* Rlm.session({ context: "ctx" })
            yield* session.ask("Define x.")
            return yield* session.export
          }).pipe(
            Effect.scoped,
            Effect.provide(
              Layer.merge(FakeAdapter.layer({ script: [repl(code[language].define), "FINAL(defined)"] }), sandbox)
            )
          )
          assert.strictEqual(sessions.open, 0)
          assert.strictEqual(state.language, language)
          assert.deepStrictEqual(state.variables, { x: 41, items: [1, "two", { k: null }] })
          assert.deepStrictEqual(
            state.unserializable.map((u) => u.name),
            ["square"]
          )
          assert.strictEqual(state.unserializable[0]!.type, "function")
          assert.strictEqual(state.turns.length, 1)
          assert.strictEqual(state.turns[0]!.answer, "defined")

          const resumed = yield* Session.decodeState(wire(state))
          const layer = Layer.merge(
            FakeAdapter.layerInstrumented({ script: [repl(code[language].restored), "FINAL_VAR(z)"] }),
            sandbox
          )
          yield* Effect.gen(function* () {
            const session = yield* Rlm.session({ resume: resumed, context: "ctx" })
            assert.strictEqual(session.id, state.id)
            assert.strictEqual(yield* session.turns, 1)
            // Before any turn, the state is handed back as it came.
            const again = yield* session.export
            assert.deepStrictEqual(again.variables, state.variables)
            assert.deepStrictEqual(again.unserializable, state.unserializable)
            const result = yield* session.ask("Use x and items.")
            assert.strictEqual(result.answer, "44")
            const out = result.trace.events.flatMap((e) =>
              e._tag === "StepCompleted" ? e.blocks.map((b) => b.stdout) : []
            )
            assert.include(out.join(""), "no square")
            const stats = yield* FakeAdapter.FakeInstrumentation.pipe(Effect.flatMap((i) => i.stats))
            const first = stats.requests[0]!.messages.map((m) => m.content)
            // The resumed root history: the first turn's messages, then the new question.
            assert.include(first[1]!, "Question: Define x.")
            assert.include(first.at(-1)!, "turn 2 of a session")
            const after = yield* session.export
            assert.strictEqual(after.turns.length, 2)
            assert.strictEqual(after.variables.z, 44)
            // The function lost at export stays listed.
            assert.include(
              after.unserializable.map((u) => u.name),
              "square"
            )
          }).pipe(Effect.scoped, Effect.provide(layer))
          assert.strictEqual(sessions.opened, 2)
          assert.strictEqual(sessions.open, 0)
        }),
      120_000
    )

    it.live(
      `${language}: code-looking strings in a resumed state are data; values round-trip exactly`,
      () =>
        Effect.gen(function* () {
          const hostile = [
            `"); import os; os.system("echo pwned"); ("`,
            "'''\n__import__('os').system('x')\n'''",
            "`${globalThis.process}`",
            '\\"); FINAL("pwned"); ("\\',
            "\u2028\u2029\u0000\u007f",
            "emoji 😀 and é and 中文",
            "*/ }); throw new Error('x'); ({ /*"
          ]
          const strings = [
            ...hostile,
            ...FastCheck.sample(FastCheck.fullUnicodeString({ maxLength: 40 }), { numRuns: 40, seed: 13 })
          ]
          const variables: Record<string, unknown> = {
            strings,
            nested: { "a b": [1.5, -2, true, null, { "\u0000": "x", __proto__x: "y" }] },
            big: 9007199254740991
          }
          const state = yield* Session.decodeState(baseState({ language, variables }))
          const layer = Layer.merge(
            FakeAdapter.layer({
              script: [repl(language === "python" ? "n = len(strings)" : "var n = strings.length"), "FINAL_VAR(n)"]
            }),
            sandboxOf(language)
          )
          yield* Effect.gen(function* () {
            const session = yield* Rlm.session({ resume: state })
            const result = yield* session.ask("How many strings?")
            assert.strictEqual(result.answer, String(strings.length))
            const exported = yield* session.export
            assert.deepStrictEqual(exported.variables.strings, strings)
            assert.deepStrictEqual(exported.variables.nested, variables.nested)
            assert.strictEqual(exported.variables.big, 9007199254740991)
            assert.deepStrictEqual(exported.unserializable, [])
          }).pipe(Effect.scoped, Effect.provide(layer))
        }),
      120_000
    )
  }

  for (const language of ["javascript", "python"] as const) {
    it.live(
      `${language}: a later ask with a new context gets a fresh interpreter over it; JSON variables carry over`,
      () =>
        Effect.gen(function* () {
          const sessions = { open: 0, opened: 0 }
          const programs =
            language === "python"
              ? [
                  "first = P\nfn = lambda: 1",
                  "both = first + '+' + P + ':' + ('function' if 'fn' in globals() else 'undefined')"
                ]
              : ["var first = P; var fn = () => 1", "var both = first + '+' + P + ':' + typeof fn"]
          const layer = Layer.merge(
            FakeAdapter.layer({
              script: [repl(programs[0]!), "FINAL_VAR(first)", repl(programs[1]!), "FINAL_VAR(both)"]
            }),
            counted(sessions, sandboxOf(language))
          )
          yield* Effect.gen(function* () {
            const session = yield* Rlm.session({ context: "alpha" })
            assert.strictEqual((yield* session.ask("Read P.")).answer, "alpha")
            const second = yield* session.ask("Read the new P.", { context: "beta" })
            assert.strictEqual(second.answer, "alpha+beta:undefined")
            const started = second.trace.events[0]
            assert.strictEqual(started?._tag === "RunStarted" ? started.context.preview : "", "beta")
            assert.strictEqual(sessions.opened, 2)
            assert.strictEqual(sessions.open, 1)
            const state = yield* session.export
            assert.deepStrictEqual(state.unserializable, [{ name: "fn", type: "function" }])
            assert.strictEqual(state.variables.both, "alpha+beta:undefined")
          }).pipe(Effect.scoped, Effect.provide(layer))
          assert.strictEqual(sessions.open, 0)
        }),
      60_000
    )
  }
})

describe("Session: forged states", () => {
  it.effect("a state of another language is refused, typed", () =>
    Effect.gen(function* () {
      const state = yield* Session.decodeState(baseState({ language: "python" }))
      const error = yield* Effect.flip(Rlm.session({ resume: state }))
      assert.strictEqual(error._tag, "RunFailed")
      assert.strictEqual(error._tag === "RunFailed" ? error.reason : "", "InvalidOptions")
      const cause = error._tag === "RunFailed" ? error.cause : undefined
      assert.instanceOf(cause, Session.SessionError)
      assert.strictEqual((cause as Session.SessionError).reason, "LanguageMismatch")
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(FakeAdapter.layer({}), JavascriptSandbox.layer())))
  )

  it.effect("a state of another protocol is refused, typed", () =>
    Effect.gen(function* () {
      const state = yield* Session.decodeState(baseState({ protocol: "tools" }))
      const error = yield* Effect.flip(Rlm.session({ resume: state }))
      const cause = error._tag === "RunFailed" ? error.cause : undefined
      assert.strictEqual((cause as Session.SessionError).reason, "ProtocolMismatch")
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(FakeAdapter.layer({}), JavascriptSandbox.layer())))
  )

  it.effect("bad variable names are refused", () =>
    Effect.gen(function* () {
      for (const name of [
        "__proto__",
        "_x",
        "P",
        "context",
        "llm_query",
        "budget",
        "history",
        "FINAL",
        "1abc",
        "a-b",
        "import",
        "class",
        "x; import os",
        "JSON",
        "",
        "a".repeat(65),
        "é"
      ]) {
        assert.strictEqual(yield* invalidReason(baseState({ variables: { [name]: 1 } })), "InvalidState", name)
      }
      // Builtins the session's own code uses, by language.
      for (const name of ["len", "globals"]) {
        assert.strictEqual(
          yield* invalidReason(baseState({ language: "python", variables: { [name]: 1 } })),
          "InvalidState"
        )
      }
      const js = yield* Session.decodeState(baseState({ variables: { len: 1 } }))
      assert.deepStrictEqual(js.variables, { len: 1 })
      // Ordinary identifiers pass.
      const ok = yield* Session.decodeState(baseState({ variables: { lookup: 1, x_1: 2 } }))
      assert.deepStrictEqual(ok.variables, { lookup: 1, x_1: 2 })
    })
  )

  it.prop(
    "a variable name is accepted only if it is an identifier of both languages",
    [FastCheck.string({ maxLength: 8 })],
    ([name]) => {
      const exit = Effect.runSyncExit(Session.decodeState(baseState({ variables: { [name]: 0 } })))
      const identifier = /^[A-Za-z][A-Za-z0-9_]{0,63}$/.test(name)
      if (!identifier) assert.isTrue(Exit.isFailure(exit), JSON.stringify(name))
      if (Exit.isSuccess(exit)) assert.isTrue(identifier)
    }
  )

  it.effect("huge, deep and malformed values are refused", () =>
    Effect.gen(function* () {
      const huge = "x".repeat(Session.MAX_VARIABLE_CHARS)
      assert.strictEqual(yield* invalidReason(baseState({ variables: { s: huge } })), "InvalidState")
      const many = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`v${i}`, "y".repeat(90_000)]))
      assert.strictEqual(yield* invalidReason(baseState({ variables: many })), "InvalidState")
      let deep: unknown = 1
      for (let i = 0; i < 100; i++) deep = [deep]
      assert.strictEqual(yield* invalidReason(baseState({ variables: { d: deep } })), "InvalidState")
      // Far too deep for a recursive decoder: refused without overflowing the stack.
      let deeper: unknown = 1
      for (let i = 0; i < 200_000; i++) deeper = { a: deeper }
      assert.strictEqual(yield* invalidReason(baseState({ variables: { d: deeper } })), "InvalidState")
      for (const value of [Number.NaN, Number.POSITIVE_INFINITY, undefined, () => 1, new Date(0)]) {
        assert.strictEqual(yield* invalidReason(baseState({ variables: { v: value } })), "InvalidState")
      }
      assert.strictEqual(
        yield* invalidReason(baseState({ variables: { v: JSON.parse('{"a": {"__proto__": 1}}') } })),
        "InvalidState"
      )
      assert.strictEqual(yield* invalidReason(baseState({ version: 2 })), "InvalidState")
      assert.strictEqual(yield* invalidReason(baseState({ language: "ruby" })), "InvalidState")
      assert.strictEqual(yield* invalidReason("not a state"), "InvalidState")
      assert.strictEqual(yield* invalidReason(null), "InvalidState")
    })
  )

  it.effect("the compacted turns must be the first ones, and the summary must cover exactly them", () =>
    Effect.gen(function* () {
      const msg = { role: "user", content: "q" }
      const turn = (messages: boolean) => ({
        query: "q",
        answer: "a",
        source: "FINAL",
        steps: 1,
        ...(messages ? { messages: [msg] } : {})
      })
      const good = yield* Session.decodeState(
        baseState({ turns: [turn(false), turn(true)], summary: { text: "s", turns: 1 } })
      )
      assert.strictEqual(Session.rootHistory(good).length, 3)
      assert.include(Session.rootHistory(good)[0]!.content, "Summary of turns 1-1")
      assert.strictEqual(
        yield* invalidReason(baseState({ turns: [turn(true), turn(false)], summary: { text: "s", turns: 1 } })),
        "InvalidState"
      )
      assert.strictEqual(yield* invalidReason(baseState({ turns: [turn(false), turn(true)] })), "InvalidState")
      assert.strictEqual(
        yield* invalidReason(baseState({ turns: [turn(true)], summary: { text: "s", turns: 1 } })),
        "InvalidState"
      )
    })
  )

  it.prop(
    "SessionState: decode(encode(state)) is the state",
    [
      FastCheck.record({
        id: FastCheck.string(),
        language: FastCheck.constantFrom("python" as const, "javascript" as const),
        turns: FastCheck.array(
          FastCheck.record({ query: FastCheck.string(), answer: FastCheck.string(), steps: FastCheck.nat(30) }),
          { maxLength: 4 }
        ),
        variables: FastCheck.dictionary(
          FastCheck.stringMatching(/^x_[a-z0-9_]{0,10}$/),
          // JSON values as a client sends them; a `__proto__` key anywhere is refused (tested above), so none here.
          FastCheck.jsonValue({ maxDepth: 3 })
            .map((v) => JSON.parse(JSON.stringify(v)))
            .filter((v) => !JSON.stringify(v).includes('"__proto__":'))
        )
      })
    ],
    ([r]) => {
      const variables = r.variables
      const input = baseState({
        id: r.id,
        language: r.language,
        turns: r.turns.map((t) => ({ ...t, source: "FINAL", messages: [{ role: "user", content: t.query }] })),
        variables
      })
      const state = Effect.runSync(Session.decodeState(input))
      assert.deepStrictEqual(Effect.runSync(Session.decodeState(wire(state))), state)
    }
  )
})

describe("Session lifetime", () => {
  it.live("concurrent asks are serialized: the second turn starts after the first answered", () =>
    Effect.gen(function* () {
      const session = yield* Rlm.session({ context: "c" })
      const [a, b] = yield* Effect.all([session.ask("Question A."), session.ask("Question B.")], {
        concurrency: 2
      })
      const stats = yield* FakeAdapter.FakeInstrumentation.pipe(Effect.flatMap((i) => i.stats))
      // Whichever took the session first ran both its root calls before the other's first one.
      assert.strictEqual(stats.requests.length, 4)
      assert.strictEqual(stats.maxInFlight, 1)
      const lasts = stats.requests.map((r) => r.messages.at(-1)!.content)
      const [first, second] = lasts[0]!.includes("Question A.") ? ["A", "B"] : ["B", "A"]
      assert.include(lasts[0]!, `Question ${first}.`)
      assert.notInclude(lasts[1]!, `Question ${second}.`)
      assert.include(lasts[2]!, `Question ${second}.`)
      assert.include(lasts[2]!, "turn 2 of a session")
      assert.deepStrictEqual(first === "A" ? [a.answer, b.answer] : [b.answer, a.answer], ["1", "2"])
      assert.strictEqual(b.totals.rootCalls, 2)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.merge(
          FakeAdapter.layerInstrumented({
            script: [repl("var n = 1"), "FINAL_VAR(n)", repl("n = n + 1"), "FINAL_VAR(n)"],
            latencyMs: 30
          }),
          JavascriptSandbox.layer()
        )
      )
    )
  )

  it.live("closing the scope shuts the interpreter down; an ask or export after it fails typed", () =>
    Effect.gen(function* () {
      const sessions = { open: 0, opened: 0 }
      const layer = Layer.merge(
        FakeAdapter.layer({ script: [repl("var v = 1"), "FINAL_VAR(v)"] }),
        counted(sessions, JavascriptSandbox.layer())
      )
      yield* Effect.gen(function* () {
        const scope = yield* Scope.make()
        const session = yield* Scope.extend(Rlm.session({ context: "c" }), scope)
        assert.strictEqual((yield* session.ask("Set v.")).answer, "1")
        assert.strictEqual(sessions.open, 1)
        yield* Scope.close(scope, Exit.void)
        assert.strictEqual(sessions.open, 0)
        const error = yield* Effect.flip(session.ask("Again?"))
        assert.strictEqual(error._tag, "RunFailed")
        const cause = error._tag === "RunFailed" ? error.cause : undefined
        assert.instanceOf(cause, Session.SessionError)
        assert.strictEqual((cause as Session.SessionError).reason, "Closed")
        const streamed = yield* Effect.flip(Stream.runDrain(session.askStream("Again?")))
        assert.strictEqual(streamed._tag, "RunFailed")
        const exported = yield* Effect.flip(session.export)
        assert.strictEqual(exported.reason, "Closed")
      }).pipe(Effect.provide(layer))
    })
  )

  it.live("host functions work in every turn and are refused between turns", () =>
    Effect.gen(function* () {
      const session = yield* Rlm.session({ context: "c" })
      const one = yield* session.ask("Ask the sub-model.")
      assert.strictEqual(one.answer, "sub says hi")
      const two = yield* session.ask("Again.")
      assert.strictEqual(two.answer, "sub says hi|sub says hi")
      assert.strictEqual(two.trace.events.filter((e) => e._tag === "SubCall").length, 1)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.merge(
          FakeAdapter.layer({
            script: [
              repl("var r = llm_query('hello')"),
              "FINAL_VAR(r)",
              repl("var r2 = r + '|' + llm_query('hello')"),
              "FINAL_VAR(r2)"
            ],
            rules: [{ match: "hello", reply: "sub says hi" }]
          }),
          JavascriptSandbox.layer()
        )
      )
    )
  )

  it.live("under the tools protocol, the root history keeps each tool call with its result", () =>
    Effect.gen(function* () {
      const session = yield* Rlm.session({ context: "c", protocol: "tools" })
      assert.strictEqual((yield* session.ask("Set x.")).answer, "5")
      assert.strictEqual((yield* session.ask("x + 1?")).answer, "6")
      const stats = yield* FakeAdapter.FakeInstrumentation.pipe(Effect.flatMap((i) => i.stats))
      const third = stats.requests[2]!.messages
      const calls = third.flatMap((m) => (m.role === "assistant" ? (m.toolCalls ?? []).map((c) => c.id) : []))
      const answered = third.flatMap((m) => (m.role === "tool" && m.toolCallId !== undefined ? [m.toolCallId] : []))
      assert.isAbove(calls.length, 0)
      // Every tool call of the earlier turn is answered in the history it is sent again with.
      assert.deepStrictEqual(answered, calls)
      assert.isTrue(third.some((m) => m.role === "assistant" && m.content.includes("Final answer: 5")))
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.merge(
          FakeAdapter.layerInstrumented({
            script: [
              [{ name: "run_code", arguments: { code: "var x = 5" } }],
              [{ name: "final_answer", arguments: { variable: "x" } }],
              [{ name: "run_code", arguments: { code: "var y = x + 1" } }],
              [{ name: "final_answer", arguments: { variable: "y" } }]
            ]
          }),
          JavascriptSandbox.layer()
        )
      )
    )
  )

  it.live("an interrupted ask records no turn and releases the session for the next one", () =>
    Effect.gen(function* () {
      const session = yield* Rlm.session({ context: "c" })
      const fiber = yield* Effect.fork(session.ask("Slow question."))
      yield* Effect.sleep("100 millis")
      yield* Fiber.interrupt(fiber)
      assert.strictEqual(yield* session.turns, 0)
      const state = yield* session.export
      assert.strictEqual(state.turns.length, 0)
      const result = yield* session.ask("Now answer.")
      assert.strictEqual(result.answer, "7")
      assert.strictEqual(yield* session.turns, 1)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.merge(
          // The interrupted call may or may not have taken the first entry: the same block twice either way.
          FakeAdapter.layer({ script: [repl("var v = 7"), repl("var v = 7"), "FINAL_VAR(v)"], latencyMs: 400 }),
          JavascriptSandbox.layer()
        )
      )
    )
  )

  const programs = {
    javascript: ["var k = 'kept'; var r = llm_query('slow')", "var out = typeof k + ':' + history.length"],
    python: [
      "k = 'kept'\nr = llm_query('slow')",
      "out = ('defined' if 'k' in globals() else 'undefined') + ':' + str(len(history))"
    ]
  } as const
  for (const language of ["javascript", "python"] as const) {
    it.live(
      `${language}: interrupting a turn stops its in-flight host calls before the ask returns; the next turn is told of the fresh interpreter`,
      () =>
        Effect.gen(function* () {
          const session = yield* Rlm.session({ context: "c" })
          const fiber = yield* Effect.fork(session.ask("Slow sub-call."))
          const stats = FakeAdapter.FakeInstrumentation.pipe(Effect.flatMap((i) => i.stats))
          // Wait until the block's sub-call is in flight.
          yield* Effect.repeat(stats, { until: (s) => s.calls.sub === 1, schedule: Schedule.spaced("10 millis") })
          yield* Fiber.interrupt(fiber)
          const after = yield* stats
          assert.strictEqual(after.inFlight, 0)
          assert.strictEqual(after.succeeded, 1) // the root call only: the sub-call was interrupted
          yield* Effect.sleep("1500 millis")
          assert.strictEqual((yield* stats).succeeded, 1)
          // An interrupted block replaces the interpreter (the sandbox's rule): the next turn runs in a fresh one,
          // is told so, and still has history bound.
          const result = yield* session.ask("What is kept?")
          assert.strictEqual(result.answer, "undefined:0")
          const requests = (yield* stats).requests.filter((r) => r.role === "root")
          assert.include(requests.at(-2)!.messages.at(-1)!.content, "The interpreter was replaced since the last turn")
        }).pipe(
          Effect.scoped,
          Effect.provide(
            Layer.merge(
              FakeAdapter.layerInstrumented({
                script: [repl(programs[language][0]), repl(programs[language][1]), "FINAL_VAR(out)"],
                rules: [{ match: "", reply: "late" }],
                latencyMs: 1000
              }),
              sandboxOf(language)
            )
          )
        ),
      30_000
    )
  }

  it.live("a failed turn records nothing, keeps the REPL, and the session goes on", () =>
    Effect.gen(function* () {
      const session = yield* Rlm.session({ context: "c", policy: { maxConsecutiveErrors: 1 } })
      const failed = yield* Effect.flip(session.ask("First, failing."))
      assert.strictEqual(failed._tag, "BudgetExceeded")
      assert.strictEqual(yield* session.turns, 0)
      const result = yield* session.ask("Second.")
      assert.strictEqual(result.answer, "1:0")
      const stats = yield* FakeAdapter.FakeInstrumentation.pipe(Effect.flatMap((i) => i.stats))
      const contents = stats.requests[1]!.messages.map((m) => m.content).join("\n")
      assert.notInclude(contents, "First, failing.")
      assert.notInclude(contents, "turn 2 of a session")
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.merge(
          FakeAdapter.layerInstrumented({
            script: [
              repl("var a = 1; throw new Error('boom')"),
              repl("var out = a + ':' + history.length"),
              "FINAL_VAR(out)"
            ]
          }),
          JavascriptSandbox.layer()
        )
      )
    )
  )

  it.live("a stream stopped early interrupts its turn, records nothing and frees the session", () =>
    Effect.gen(function* () {
      const session = yield* Rlm.session({ context: "c" })
      const head = yield* Stream.runCollect(Stream.take(session.askStream("Stopped."), 1))
      assert.strictEqual(Chunk.unsafeGet(head, 0)._tag, "RunStarted")
      assert.strictEqual(yield* session.turns, 0)
      const result = yield* session.ask("Answered.")
      assert.strictEqual(result.answer, "ok")
      assert.strictEqual(yield* session.turns, 1)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.merge(
          FakeAdapter.layer({ script: ["FINAL(ok)", "FINAL(ok)"], latencyMs: 200 }),
          JavascriptSandbox.layer()
        )
      )
    )
  )
})
