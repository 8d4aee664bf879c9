/**
 * Multi-turn sessions (issue 13): variables and `history` across turns in
 * Python and JavaScript, compaction over a scripted 20-turn conversation,
 * export → resume, forged states, serialized asks, and a closed session.
 */
import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox, PythonSandbox, type Sandbox } from "@rlm-runtime/sandbox"
import { Chunk, Effect, Exit, Fiber, Layer, Option, Schema, Scope, Stream } from "effect"
import { Rlm, RunEvent, Session } from "../src/index.js"

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
