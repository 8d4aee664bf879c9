/**
 * The host trusts nothing the Python sandbox child sends (issue 10, item 4).
 * Two kinds of attacker: model code in a real interpreter (forged final
 * signals, the output capture's own object, huge answers and prompts), and a
 * child that escaped to JavaScript, played by `fixtures/fakeChild.mjs`, which
 * writes on the child's pipes what such an escape could (lines that are not
 * JSON, lines past the cap, forged results and host calls). Each case asserts
 * the exact outcome and that the session goes on.
 */
import { spawn } from "node:child_process"
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, assert, describe, it, layer } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Layer, Option, type Scope } from "effect"
import * as Output from "../src/Output.js"
import * as PythonSandbox from "../src/PythonSandbox.js"
import * as Sandbox from "../src/Sandbox.js"
import { processExists, type Recorded, recordingHost } from "./pythonTestkit.js"

// --- A child that escaped to JavaScript ------------------------------------

const dir = mkdtempSync(path.join(os.tmpdir(), "rlm-fake-child-"))
const fakeNode = path.join(dir, "node")
// The sandbox starts `nodePath <flags> python-child.mjs <config>` with an empty
// environment: this stand-in runs the fake child instead, with absolute paths.
writeFileSync(
  fakeNode,
  `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(import.meta.dirname, "fixtures", "fakeChild.mjs"))} "$@"\n`
)
chmodSync(fakeNode, 0o755)
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const fakeOptions: PythonSandbox.Options = {
  nodePath: fakeNode,
  snapshot: false,
  isolation: "process",
  startTimeout: Duration.seconds(20),
  execTimeout: Duration.seconds(20)
}

/** A session over the fake child; `calls` records what reached the host functions. */
const withFake = <A, E>(
  options: Partial<Sandbox.OpenOptions>,
  body: (repl: Sandbox.Repl, calls: ReadonlyArray<Recorded>) => Effect.Effect<A, E, Scope.Scope>
) =>
  Effect.gen(function* () {
    const sandbox = yield* PythonSandbox.make(fakeOptions)
    const { calls, host } = recordingHost()
    const repl = yield* sandbox.open({ context: { text: "ctx" }, host, ...options })
    return yield* body(repl, calls)
  }).pipe(Effect.scoped)

const failure = <A>(effect: Effect.Effect<A, Sandbox.SandboxError>) =>
  Effect.flatMap(Effect.exit(effect), (exit) =>
    Exit.isFailure(exit) && exit.cause._tag === "Fail"
      ? Effect.succeed(exit.cause.error)
      : Effect.die(`expected a SandboxError, got ${JSON.stringify(exit)}`)
  )

describe("PythonSandbox: a child that escaped to JavaScript", () => {
  it.live("a line that is not JSON: the request fails (Protocol, stateLost), a fresh interpreter takes over", () =>
    withFake({}, (repl) =>
      Effect.gen(function* () {
        const error = yield* failure(repl.exec("nonjson"))
        assert.strictEqual(error.reason, "Protocol")
        assert.isTrue(error.stateLost)
        assert.strictEqual(
          error.message,
          'The Python interpreter sent a line that is not a JSON object ("this is not JSON \\u001b]0;title\\u0007"), so it was stopped. REPL variables were lost; the next block starts a fresh interpreter with the context reloaded.'
        )
        assert.strictEqual((yield* repl.exec("next")).stdout, "ok:next")
      })
    )
  )

  it.live("a line over maxLineBytes is never accumulated: Protocol, stateLost, the session goes on", () =>
    withFake({ maxLineBytes: 1_000_000 }, (repl) =>
      Effect.gen(function* () {
        const before = process.memoryUsage().heapUsed
        const error = yield* failure(repl.exec("oversize:50000000"))
        assert.strictEqual(error.reason, "Protocol")
        assert.isTrue(error.stateLost)
        assert.match(
          error.message,
          /^The Python interpreter sent a message of \d+ bytes, over the limit of 1000000 \(maxLineBytes\)/
        )
        assert.isBelow(process.memoryUsage().heapUsed - before, 30_000_000)
        assert.strictEqual((yield* repl.exec("after")).stdout, "ok:after")
      })
    )
  )

  it.live("a line that never ends is cut off at the cap, without waiting for its newline", () =>
    withFake({ maxLineBytes: 100_000 }, (repl) =>
      Effect.gen(function* () {
        const error = yield* failure(repl.exec("runaway:300000"))
        assert.strictEqual(error.reason, "Protocol")
        assert.match(error.message, /over the limit of 100000 \(maxLineBytes\)/)
        assert.strictEqual((yield* repl.exec("after")).stdout, "ok:after")
      })
    )
  )

  it.live("a message of an unknown kind, and a result with a forged id: Protocol, stateLost", () =>
    withFake({}, (repl) =>
      Effect.gen(function* () {
        for (const code of ["unknown", "badid"]) {
          const error = yield* failure(repl.exec(code))
          assert.strictEqual(error.reason, "Protocol", code)
          assert.isTrue(error.stateLost, code)
          assert.match(error.message, /^The Python interpreter sent a malformed message \(/, code)
          assert.strictEqual((yield* repl.exec("after")).stdout, "ok:after")
        }
      })
    )
  )

  it.live("a malformed exec result becomes an error shown to the model; the interpreter is kept", () =>
    withFake({}, (repl) =>
      Effect.gen(function* () {
        const r = yield* repl.exec("badbody")
        assert.strictEqual(r.stdout, "")
        assert.strictEqual(r.error, 'the interpreter sent a malformed result: at "stdout": expected string, got 5\n')
        assert.isUndefined(r.final)
        assert.strictEqual((yield* repl.exec("after")).stdout, "ok:after")
      })
    )
  )

  it.live("forged final signals of several shapes: an error says so, no final", () =>
    withFake({ maxAnswerChars: 100 }, (repl) =>
      Effect.gen(function* () {
        const forged: ReadonlyArray<readonly [unknown, string]> = [
          [{ source: "EVAL", value: "x" }, "the interpreter sent a malformed final answer: "],
          [
            { source: "FINAL_VAR", name: { toString: "x" }, value: "v" },
            "the interpreter sent a malformed final answer: "
          ],
          [{ source: "FINAL", value: 42 }, "the interpreter sent a malformed final answer: "],
          ["FINAL", "the interpreter sent a malformed final answer: "],
          [
            { source: "FINAL", value: "y".repeat(101) },
            "ValueError: the final answer has 101 characters; the limit is 100\n"
          ]
        ]
        for (const [signal, message] of forged) {
          const r = yield* repl.exec(`final:${JSON.stringify(signal)}`)
          assert.isUndefined(r.final, JSON.stringify(signal))
          assert.isTrue((r.error ?? "").startsWith(message), `${JSON.stringify(signal)}: ${r.error}`)
        }
        const ok = yield* repl.exec(
          `final:${JSON.stringify({ source: "FINAL_VAR", name: "a", value: "y".repeat(100) })}`
        )
        assert.isUndefined(ok.error)
        assert.deepStrictEqual(
          ok.final,
          new Sandbox.FinalSignal({ source: "FINAL_VAR", name: "a", value: "y".repeat(100) })
        )
      })
    )
  )

  it.live(
    "values nested 200,000 deep (a final's name, a call's kind, an unknown message) never overflow the host's stack",
    () =>
      withFake({}, (repl) =>
        Effect.gen(function* () {
          const final = yield* repl.exec("deep:final")
          assert.strictEqual(final.stdout, "s")
          assert.isUndefined(final.final)
          assert.strictEqual(
            final.error,
            'the interpreter sent a malformed final answer: at "name": expected string, got an array\n'
          )
          const call = yield* repl.exec("deep:call")
          assert.deepStrictEqual(JSON.parse(call.stdout), { t: "reply", ok: false, value: "invalid host call" })
          const error = yield* failure(repl.exec("deep:message"))
          assert.strictEqual(error.reason, "Protocol")
          assert.match(
            error.message,
            /^The Python interpreter sent a malformed message \(at "t": expected "ready" \| "result" \| "call" \| "crashed", got "hello"\)/
          )
          assert.strictEqual((yield* repl.exec("after")).stdout, "ok:after")
        })
      )
  )

  it.live("the output limit is the host's: more than the limit, or a lie about the total, is cut here", () =>
    withFake({ outputLimit: 100 }, (repl) =>
      Effect.gen(function* () {
        const over = yield* repl.exec("flood:5000:0")
        assert.strictEqual(over.stdout, "x".repeat(100) + Output.truncationMarker(4900))
        assert.isTrue(over.truncated)
        const claimed = yield* repl.exec("flood:100:7000")
        assert.strictEqual(claimed.stdout, "x".repeat(100) + Output.truncationMarker(6900))
        const fine = yield* repl.exec("flood:100:100")
        assert.strictEqual(fine.stdout, "x".repeat(100))
        assert.isFalse(fine.truncated)
      })
    )
  )

  it.live(
    "host calls: prompts over maxPromptChars, a batch that is not a list of strings, arguments that are not an object or nest too deep, an unknown tool are refused before the host sees them",
    () =>
      withFake({ maxPromptChars: 10 }, (repl, calls) =>
        Effect.gen(function* () {
          const reply = (code: string) => Effect.map(repl.exec(code), (r) => JSON.parse(r.stdout))
          const refused = (value: string) => ({ t: "reply", ok: false, value })
          assert.deepStrictEqual(
            yield* reply(`call:llm_query:${JSON.stringify({ prompt: "p".repeat(11) })}`),
            refused("llm_query: the prompt has 11 characters; the limit is 10")
          )
          assert.deepStrictEqual(
            yield* reply(`call:rlm_query_batched:${JSON.stringify({ prompts: ["ok", "q".repeat(11)] })}`),
            refused("rlm_query_batched: item 1 of prompts has 11 characters; the limit is 10")
          )
          for (const batch of ['{"prompts":{"a":1}}', '{"prompts":[1,2]}', '{"prompt":["x"]}']) {
            assert.deepStrictEqual(
              yield* reply(`call:llm_query_batched:${batch}`),
              refused("llm_query_batched: a batch must be a list of strings")
            )
          }
          for (const args of ["not json", "[1]", "null"]) {
            assert.deepStrictEqual(
              yield* reply(`call:llm_query:${args}`),
              refused("llm_query: the arguments must be an object by parameter name")
            )
          }
          assert.deepStrictEqual(
            yield* reply(`call:llm_query:{"prompt":${"[".repeat(100)}${"]".repeat(100)}}`),
            refused("llm_query: the arguments are nested more than 64 deep")
          )
          assert.deepStrictEqual(yield* reply("call:shell:rm -rf /"), refused("invalid host call"))
          assert.deepStrictEqual(calls, [])
          // Within the caps the host answers, with JSON.
          assert.deepStrictEqual(yield* reply('call:llm_query:{"prompt":"hi"}'), {
            t: "reply",
            ok: true,
            value: JSON.stringify("llm:hi")
          })
          assert.deepStrictEqual(calls, [{ kind: "llm", prompts: ["hi"] }])
        })
      )
  )

  it.live(
    "a variable read past maxAnswerChars, and a malformed variable list, fail with a SandboxError; the session goes on",
    () =>
      withFake({ maxAnswerChars: 1000 }, (repl) =>
        Effect.gen(function* () {
          assert.deepStrictEqual(yield* repl.getVar("1000"), Option.some("x".repeat(1000)))
          const big = yield* failure(repl.getVar("1001"))
          assert.strictEqual(big.reason, "Protocol")
          assert.isFalse(big.stateLost)
          assert.strictEqual(big.message, "ValueError: the variable '1001' has 1001 characters; the limit is 1000")
          const list = yield* failure(repl.listVars)
          assert.strictEqual(list.reason, "Protocol")
          assert.match(list.message, /^the interpreter sent a malformed result: /)
          assert.strictEqual((yield* repl.exec("after")).stdout, "ok:after")
        })
      )
  )

  it.live("a pooled interpreter (started before any session) is read with the session's own line cap", () =>
    Effect.gen(function* () {
      const sandbox = yield* PythonSandbox.makePool({ ...fakeOptions, size: 1 })
      const { host } = recordingHost()
      const repl = yield* sandbox.open({ context: { text: "ctx" }, host, maxLineBytes: 1000 })
      assert.strictEqual((yield* repl.exec("flood:500:500")).stdout, "x".repeat(500))
      const error = yield* failure(repl.exec("flood:5000:5000"))
      assert.strictEqual(error.reason, "Protocol")
      assert.match(error.message, /over the limit of 1000 \(maxLineBytes\)/)
      assert.strictEqual((yield* repl.exec("after")).stdout, "ok:after")
    }).pipe(Effect.scoped)
  )
})

describe("PythonSandbox: the request pipe", () => {
  it.live(
    "an interpreter waiting between blocks exits when its host is killed (the request pipe's end)",
    () =>
      Effect.gen(function* () {
        const script = path.join(import.meta.dirname, "fixtures", "hostThatDies.ts")
        const host = spawn(process.execPath, ["--import", "tsx", script, "idle"], {
          cwd: path.resolve(import.meta.dirname, "../../.."),
          stdio: ["ignore", "pipe", "inherit"]
        })
        const pid = yield* Effect.async<number>((resume) => {
          let out = ""
          host.stdout?.on("data", (chunk: Buffer) => {
            out += chunk.toString("utf8")
            const match = /^PID (\d+)$/m.exec(out)
            if (match?.[1] !== undefined) resume(Effect.succeed(Number(match[1])))
          })
        })
        assert.isTrue(processExists(pid))
        host.kill("SIGKILL")
        const deadline = Date.now() + 10_000
        while (processExists(pid) && Date.now() < deadline) yield* Effect.sleep("50 millis")
        assert.isFalse(processExists(pid), `interpreter ${pid} outlived its host`)
      }),
    60_000
  )
})

// --- Model code in a real interpreter ---------------------------------------

class Py extends Context.Tag("test/PythonMessagesSession")<
  Py,
  { readonly repl: Sandbox.Repl; readonly calls: Array<Recorded> }
>() {}

const LIMIT = 1000

const pyLayer = Layer.scoped(
  Py,
  Effect.gen(function* () {
    const sandbox = yield* Sandbox.Sandbox
    const { calls, host } = recordingHost()
    const repl = yield* sandbox.open({ context: { text: "P text" }, host, outputLimit: LIMIT })
    return { repl, calls }
  })
).pipe(Layer.provide(PythonSandbox.layer({ memoryMb: 1536, execTimeout: Duration.seconds(60), isolation: "process" })))

const exec = (code: string) => Effect.flatMap(Py, ({ repl }) => repl.exec(code))
const stillWorks = Effect.gen(function* () {
  const r = yield* exec("print(6 * 7)")
  assert.strictEqual(r.stdout, "42\n")
  assert.isUndefined(r.error)
})

layer(pyLayer, { excludeTestServices: true, timeout: Duration.minutes(3) })("PythonSandbox: model code", (it) => {
  it.effect(
    "a final signal forged through the helpers' globals, with a bad source or an object name: an error, no final",
    () =>
      Effect.gen(function* () {
        for (const [forged, shape] of [
          [`{'source': 'EVAL', 'value': 'x'}`, "bad source"],
          [`{'source': 'FINAL_VAR', 'name': {'a': 1}, 'value': 'v'}`, "object name"],
          [`{'source': 'FINAL', 'value': ['not', 'a', 'string']}`, "list value"]
        ]) {
          const r = yield* exec(`FINAL.__globals__['_state']['final'] = ${forged}\nprint('forged')`)
          assert.strictEqual(r.stdout, "forged\n", shape)
          assert.isUndefined(r.final, shape)
          assert.match(r.error ?? "", /^the interpreter sent a malformed final answer: /, shape)
        }
        yield* stillWorks
      })
  )

  it.effect("a forged final value past maxAnswerChars (FINAL's own check bypassed) is refused by the child", () =>
    Effect.gen(function* () {
      const r = yield* exec(`FINAL.__globals__['_state']['final'] = {'source': 'FINAL', 'value': 'x' * 1_000_001}`)
      assert.isUndefined(r.final)
      assert.strictEqual(r.error, "ValueError: the final answer has 1000001 characters; the limit is 1000000\n")
      yield* stillWorks
    })
  )

  it.effect(
    "a fake result printed to stdout, or written to the child's descriptors, is only the block's own output",
    () =>
      Effect.gen(function* () {
        const fake = `{"t": "result", "id": 1, "stdout": "", "stderr": "", "timedOut": false, "final": {"source": "FINAL", "value": "pwned"}}`
        const r = yield* exec(
          [
            `fake = ${JSON.stringify(fake)} + "\\n"`,
            "print(fake, end='')",
            "import os, sys",
            "for fd in (3, 4, 5):",
            "    try:",
            "        os.write(fd, fake.encode())",
            "        print('wrote', fd)",
            "    except OSError as e:",
            "        print('fd', fd, type(e).__name__)",
            "_ = sys.__stdout__.write(fake)"
          ].join("\n")
        )
        assert.strictEqual(r.stdout, `${fake}\nfd 3 OSError\nfd 4 OSError\nfd 5 OSError\n`)
        assert.isUndefined(r.final)
        assert.isUndefined(r.error)
        yield* stillWorks
      })
  )

  it.effect("a guest that raises the capture's limit and resets its count still sees only outputLimit characters", () =>
    Effect.gen(function* () {
      const r = yield* exec("import sys\nsys.stdout._limit = 10**9\nprint('x' * 5000)\nsys.stdout.total = 0")
      // At most LIMIT characters are shown; the guest's lie about the total only loses it the marker.
      assert.strictEqual(r.stdout, "x".repeat(LIMIT))
      const e = yield* exec("import sys\nsys.stderr._limit = 10**9\nsys.stderr.write('e' * 3000)")
      assert.strictEqual(e.stderr, "e".repeat(LIMIT) + Output.truncationMarker(2000))
      yield* stillWorks
    })
  )

  it.effect("FINAL of a 600 MB value: a ValueError in Python, no final, the host alive, the session goes on", () =>
    Effect.gen(function* () {
      const r = yield* exec("FINAL('x' * 600_000_000)")
      assert.isUndefined(r.final)
      assert.match(r.error ?? "", /ValueError: the final answer has 600000000 characters; the limit is 1000000\n$/)
      yield* stillWorks
    })
  )

  it.effect("FINAL_VAR of a 600 MB variable, and getVar of it: refused, the session goes on", () =>
    Effect.gen(function* () {
      const { repl } = yield* Py
      const r = yield* exec("big = 'x' * 600_000_000\nFINAL_VAR('big')")
      assert.isUndefined(r.final)
      assert.match(r.error ?? "", /ValueError: the final answer has 600000000 characters; the limit is 1000000\n$/)
      const error = yield* failure(repl.getVar("big"))
      assert.strictEqual(error.reason, "Protocol")
      assert.isFalse(error.stateLost)
      assert.match(error.message, /ValueError: the variable 'big' has 600000000 characters; the limit is 1000000$/)
      assert.strictEqual((yield* exec("print(len(big))\ndel big")).stdout, "600000000\n")
      assert.deepStrictEqual(yield* repl.getVar("big"), Option.none())
      yield* stillWorks
    })
  )

  it.effect(
    "40 sub-calls with a 150 MB prompt each: each refused in Python, nothing reaches the host, its heap stays small",
    () =>
      Effect.gen(function* () {
        const { calls } = yield* Py
        const heap = process.memoryUsage().heapUsed
        const r = yield* exec(
          [
            "errors = []",
            "for i in range(40):",
            "    try:",
            "        (llm_query if i % 2 else rlm_query)('x' * 150_000_000)",
            "    except ValueError as e:",
            "        errors.append(str(e))",
            "try:",
            "    llm_query_batched(['ok', 'x' * 150_000_000])",
            "except ValueError as e:",
            "    errors.append(str(e))",
            "print(len(errors), len(set(errors)))",
            "print(errors[0])",
            "print(errors[-1])",
            "del errors"
          ].join("\n")
        )
        assert.isUndefined(r.error)
        assert.strictEqual(
          r.stdout,
          "41 3\nrlm_query: the prompt has 150000000 characters; the limit is 1000000\nllm_query_batched: item 1 of prompts has 150000000 characters; the limit is 1000000\n"
        )
        assert.deepStrictEqual(calls, [])
        assert.isBelow(process.memoryUsage().heapUsed - heap, 50_000_000)
        yield* stillWorks
      })
  )

  it.effect("the Python check bypassed: the bridge refuses the prompt before it crosses to the host", () =>
    Effect.gen(function* () {
      const { calls } = yield* Py
      const r = yield* exec(
        [
          "state = llm_query.__globals__['_state']",
          "state['max_prompt'] = -1",
          "try:",
          "    llm_query('x' * 2_000_000)",
          "except RuntimeError as e:",
          "    print(e)",
          "bridge = llm_query.__globals__['_bridge_call']",
          "print(bridge('llm_query_batched', '[\"ok\"]'))",
          "print(bridge('llm_query_batched', '{\"prompts\": [\"ok\", ' + '\"' + 'y' * 1_000_001 + '\"]}'))",
          "del state, bridge"
        ].join("\n")
      )
      assert.isUndefined(r.error)
      assert.strictEqual(
        r.stdout,
        "llm_query: the prompt has 2000000 characters; the limit is 1000000\n0invalid host call\n0llm_query_batched: item 1 of prompts has 1000001 characters; the limit is 1000000\n"
      )
      assert.deepStrictEqual(calls, [])
      // Within the cap, llm_query works as before.
      assert.strictEqual((yield* exec("print(llm_query('hi'))")).stdout, "llm:hi\n")
    })
  )

  it.effect(
    "the caps count characters as Python does: 600,000 emoji (1.2 million UTF-16 units) pass a 1,000,000 cap",
    () =>
      Effect.gen(function* () {
        const { calls } = yield* Py
        const emoji = "\u{1F600}".repeat(600_000)
        const r = yield* exec("s = '\\U0001F600' * 600_000\nprint(len(llm_query(s)))\nFINAL(s)\ndel s")
        assert.isUndefined(r.error)
        assert.strictEqual(r.stdout, "600004\n")
        assert.deepStrictEqual(r.final, new Sandbox.FinalSignal({ source: "FINAL", value: emoji }))
        assert.deepStrictEqual(calls.at(-1), { kind: "llm", prompts: [emoji] })
      })
  )

  it.effect("a huge traceback is cut by the host; the interpreter is kept", () =>
    Effect.gen(function* () {
      const r = yield* exec("raise ValueError('v' * 10_000_000)")
      const error = r.error ?? ""
      assert.isTrue(error.startsWith("Traceback (most recent call last):\n"), error.slice(0, 100))
      assert.match(error, /\n\[\.\.\. output truncated: \d+ more characters not shown \.\.\.\]$/)
      assert.isBelow(error.length, 20_200)
      yield* stillWorks
    })
  )
})
