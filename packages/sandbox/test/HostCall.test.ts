/**
 * The one host-call entry, for both sandboxes: tools stubbed from their
 * specs, the arguments as JSON by parameter name, a JSON value back, a
 * `HostCallError` as an exception in model code, any other failure aborting
 * the block (`Repl.exec` fails with it, the session goes on), and specs that
 * cannot be installed refused at `open`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Data, Effect, Exit } from "effect"
import { JavascriptSandbox, PythonSandbox, Sandbox } from "../src/index.js"

class Stop extends Data.TaggedError("Stop")<{ readonly message: string }> {}

const tools: ReadonlyArray<Sandbox.ToolSpec> = [
  {
    name: "echo",
    description: "Echo the arguments back.",
    parameters: [
      { name: "value", optional: false, kind: "json" },
      { name: "times", optional: true, kind: "json" }
    ]
  },
  { name: "refuse", description: "Always refuses.", parameters: [] },
  { name: "stop", description: "Aborts the block.", parameters: [] }
]

const calls: Array<{ readonly name: string; readonly args: unknown }> = []

const host: Sandbox.HostCall<Stop> = (name, args) =>
  Effect.suspend((): Effect.Effect<unknown, Sandbox.HostCallError | Stop> => {
    calls.push({ name, args })
    switch (name) {
      case "echo":
        return Effect.succeed({ got: args })
      case "refuse":
        return Effect.fail(new Sandbox.HostCallError({ message: "not today" }))
      default:
        return Effect.fail(new Stop({ message: "stopped" }))
    }
  })

const sandboxes = {
  python: PythonSandbox.make({ isolation: "process" }),
  javascript: JavascriptSandbox.make()
}

const code = {
  python: {
    echo: "print(echo({'a': [1, 2.5, None, True]}, times=2)['got'], echo('x')['got'], echo.__doc__)",
    refuse: "try:\n    refuse()\nexcept RuntimeError as e:\n    print('caught', e)",
    stop: "kept = 1\ntry:\n    stop()\nexcept BaseException:\n    pass\nwhile True:\n    pass",
    after: "print(kept, echo(3)['got'])"
  },
  javascript: {
    echo: "console.log(JSON.stringify(echo({ a: [1, 2.5, null, true] }, 2).got), JSON.stringify(echo('x').got), echo.description)",
    refuse: "try { refuse() } catch (e) { console.log('caught', e.message) }",
    stop: "var kept = 1\ntry { stop() } catch (e) {}\nwhile (true) {}",
    after: "console.log(kept, JSON.stringify(echo(3).got))"
  }
}

for (const language of ["python", "javascript"] as const) {
  describe(`${language}: the host-call entry`, () => {
    it.live(
      "tools from specs: JSON arguments by parameter name, a JSON value back; HostCallError is an exception; another failure aborts the block",
      () =>
        Effect.gen(function* () {
          calls.length = 0
          const sandbox = yield* sandboxes[language]
          const repl = yield* sandbox.open({ context: { text: "ctx" }, host, tools })
          const c = code[language]
          const echoed = yield* repl.exec(c.echo)
          assert.isUndefined(echoed.error)
          assert.strictEqual(
            echoed.stdout,
            language === "python"
              ? "{'value': {'a': [1, 2.5, None, True]}, 'times': 2} {'value': 'x'} Echo the arguments back.\n"
              : '{"value":{"a":[1,2.5,null,true]},"times":2} {"value":"x"} Echo the arguments back.\n'
          )
          assert.deepStrictEqual(calls.slice(0, 2), [
            { name: "echo", args: { value: { a: [1, 2.5, null, true] }, times: 2 } },
            { name: "echo", args: { value: "x" } }
          ])
          assert.strictEqual((yield* repl.exec(c.refuse)).stdout, "caught not today\n")
          // The abort: exec fails with the host's own error, though model code caught everything and then looped.
          const started = Date.now()
          const aborted = yield* Effect.exit(repl.exec(c.stop))
          assert.isBelow(Date.now() - started, 10_000)
          assert.deepStrictEqual(aborted, Exit.fail(new Stop({ message: "stopped" })))
          // The session goes on, its variables kept.
          const after = yield* repl.exec(c.after)
          assert.isUndefined(after.error)
          assert.strictEqual(after.stdout, language === "python" ? "1 {'value': 3}\n" : '1 {"value":3}\n')
          // Tool names are reserved: restored after a block that rebinds one.
          yield* repl.exec(language === "python" ? "echo = 5" : "try { echo = 5 } catch (e) {}")
          const rebound = yield* repl.exec(
            language === "python" ? "print(echo(1)['got'])" : "console.log(JSON.stringify(echo(1).got))"
          )
          assert.strictEqual(rebound.stdout, language === "python" ? "{'value': 1}\n" : '{"value":1}\n')
          // Not user variables either.
          assert.deepStrictEqual(
            (yield* repl.listVars).map((v) => v.name),
            ["kept"]
          )
        }).pipe(Effect.scoped),
      120_000
    )

    it.live("tool specs that cannot be installed fail open with StartFailed", () =>
      Effect.gen(function* () {
        const sandbox = yield* sandboxes[language]
        for (const bad of [
          [{ name: "peek", description: "", parameters: [] }],
          [{ name: "class", description: "", parameters: [] }],
          [{ name: "ok", description: "", parameters: [{ name: "x-y", optional: false, kind: "json" as const }] }]
        ]) {
          const exit = yield* Effect.exit(Effect.scoped(sandbox.open({ context: { text: "ctx" }, host, tools: bad })))
          assert.isTrue(Exit.isFailure(exit))
          if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
            assert.strictEqual(exit.cause.error.reason, "StartFailed")
            assert.include(exit.cause.error.message, "The host tools cannot be installed")
          } else assert.fail("expected StartFailed")
        }
      })
    )
  })
}
