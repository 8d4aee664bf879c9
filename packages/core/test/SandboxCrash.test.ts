import { assert, describe, it } from "@effect/vitest"
import { FakeAdapter } from "@rlm-runtime/adapters"
import { JavascriptSandbox, PythonSandbox, Sandbox } from "@rlm-runtime/sandbox"
import type { TraceEvent } from "@rlm-runtime/trace"
import { Effect, Exit, FastCheck, Layer, Option, Schema } from "effect"
import { Policy, Prompts, Rlm, type RlmError } from "../src/index.js"

const repl = (...lines: Array<string>) => ["```repl", ...lines, "```"].join("\n")

// ---------------------------------------------------------------------------
// a scripted sandbox
// ---------------------------------------------------------------------------

type LostReason = "Crashed" | "MemoryExceeded" | "Timeout" | "Protocol"

/** The texts the real sandboxes give, one per way an interpreter is lost. */
const lostMessage: Record<LostReason, string> = {
  Crashed:
    "The Python interpreter process died (fatal interpreter error: Maximum call stack size exceeded). REPL variables were lost; the next block starts a fresh interpreter with the context reloaded.",
  MemoryExceeded:
    "The Python interpreter ran out of memory and was stopped (heap limit). REPL variables were lost; the next block starts a fresh interpreter with the context reloaded.",
  Timeout:
    "The code block ran longer than 30s and did not stop when interrupted, so the interpreter was killed. All REPL variables were lost; the next block starts a fresh interpreter with P and context reloaded.",
  Protocol: "The interpreter sent a message line over maxLineBytes; it was stopped and will be replaced."
}

/** What the model is told of each, in words. */
const lostCause: Record<LostReason, string> = {
  Crashed: "overflowed its stack (recursion or nesting too deep)",
  MemoryExceeded: "ran out of memory",
  Timeout: "ran past its time limit and did not stop when interrupted, so it was killed",
  Protocol: "broke the protocol with the host (it sent a malformed or oversized message), so it was stopped"
}

interface Log {
  readonly opened: Array<Sandbox.OpenOptions>
  /** Code of every block the sandbox ran, per session. */
  readonly execs: Array<string>
}

const newLog = (): Log => ({ opened: [], execs: [] })

/**
 * A sandbox that obeys one command per block:
 * `SET name=value` (a variable), `CRASH reason` (the interpreter is lost: variables gone),
 * `FAIL reason` (the request fails, interpreter kept), `SIGNAL value` (FINAL from code),
 * `CALL prompt` / `RLM prompt` / `BATCH a|b` (host calls), `PRINT_LEN` (the context's length).
 * `getVar` of `crash_*` loses the interpreter; of `bad_*` fails it without loss.
 */
const scripted = (log: Log, isolation: Sandbox.Isolation = "process") =>
  Layer.succeed(Sandbox.Sandbox, {
    language: "python",
    isolation,
    open: <E>(options: Sandbox.OpenOptions<E>) =>
      Effect.sync((): Sandbox.Repl<E> => {
        log.opened.push(options as unknown as Sandbox.OpenOptions)
        // A host call's HostCallError is shown to the code; any other failure aborts the block (exec fails with it).
        const call = Sandbox.resolveHost(options).call
        const shown = <A>(self: Effect.Effect<A, Sandbox.HostCallError | E>, show: (a: A) => Sandbox.ExecResult) =>
          self.pipe(
            Effect.map(show),
            Effect.catchIf(
              (e): e is Sandbox.HostCallError => e instanceof Sandbox.HostCallError,
              (e) => Effect.succeed(ok("", { error: `HostError: ${e.message}` }))
            )
          )
        const vars = new Map<string, string>()
        const ok = (stdout: string, extra: Partial<ConstructorParameters<typeof Sandbox.ExecResult>[0]> = {}) =>
          new Sandbox.ExecResult({ stdout, stderr: "", truncated: false, durationMs: 1, ...extra })
        const lose = (reason: LostReason) =>
          Effect.suspend(() => {
            vars.clear()
            return Effect.fail(new Sandbox.SandboxError({ reason, message: lostMessage[reason], stateLost: true }))
          })
        const exec = (code: string): Effect.Effect<Sandbox.ExecResult, Sandbox.SandboxError | E> =>
          Effect.suspend((): Effect.Effect<Sandbox.ExecResult, Sandbox.SandboxError | E> => {
            log.execs.push(code)
            const [command = "", ...rest] = code.split(" ")
            const arg = rest.join(" ")
            switch (command) {
              case "SET": {
                const [name = "", value = ""] = arg.split("=")
                vars.set(name, value)
                return Effect.succeed(ok(""))
              }
              case "CRASH":
                return lose(arg as LostReason)
              case "FAIL":
                return Effect.fail(
                  new Sandbox.SandboxError({ reason: arg as Sandbox.SandboxError["reason"], message: `${arg}!` })
                )
              case "SIGNAL":
                return Effect.succeed(ok("", { final: new Sandbox.FinalSignal({ source: "FINAL", value: arg }) }))
              case "CALL":
                return shown(call("llm_query", { prompt: arg }), (reply) => ok(`${String(reply)}\n`))
              case "RLM":
                return shown(call("rlm_query", { prompt: arg }), (reply) => ok(`${String(reply)}\n`))
              case "BATCH":
                return shown(call("llm_query_batched", { prompts: arg.split("|") }), (replies) =>
                  ok(`${(replies as ReadonlyArray<string>).join("|")}\n`)
                )
              case "PRINT_LEN":
                return Effect.succeed(ok(`${options.context.text.length} ${vars.size}\n`))
              default:
                return Effect.succeed(ok(`ran ${code}\n`))
            }
          })
        return {
          language: "python",
          exec,
          getVar: (name) =>
            name.startsWith("crash_")
              ? lose("Crashed")
              : name.startsWith("bad_")
                ? Effect.fail(
                    new Sandbox.SandboxError({ reason: "Protocol", message: "the variable's __str__ raised" })
                  )
                : Effect.succeed(Option.fromNullable(vars.get(name))),
          listVars: Effect.sync(() => [...vars.keys()].map((name) => ({ name, type: "str" })))
        }
      })
  })

const setup = (script: ReadonlyArray<string>, log: Log = newLog(), rules: FakeAdapter.Options["rules"] = []) =>
  Layer.merge(FakeAdapter.layerInstrumented({ script, rules }), scripted(log))

const steps = (trace: { readonly events: ReadonlyArray<TraceEvent.TraceEvent> }, runId = "run") =>
  trace.events.filter((e): e is TraceEvent.StepCompleted => e._tag === "StepCompleted" && e.runId === runId)

/** The last user message of each root request: what the model was told before its next reply. */
const toldBefore = (stats: FakeAdapter.Stats) =>
  stats.requests.filter((r) => r.role === "root").map((r) => r.messages[r.messages.length - 1]?.content ?? "")

/** Run and return the result with the adapter's stats. */
const runWith = (
  script: ReadonlyArray<string>,
  options: Rlm.RunOptions & { readonly log?: Log; readonly rules?: FakeAdapter.Options["rules"] } = {}
) =>
  Effect.gen(function* () {
    const exit = yield* Effect.exit(Rlm.run("q", "the context", options))
    const stats = yield* (yield* FakeAdapter.FakeInstrumentation).stats
    return { exit, stats }
  }).pipe(Effect.provide(setup(script, options.log ?? newLog(), options.rules)))

const answered = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (Exit.isFailure(exit)) assert.fail(`the run failed: ${String(exit.cause)}`)
  return (exit as Exit.Success<A, E>).value
}

const failedWith = <A>(exit: Exit.Exit<A, RlmError.RlmError>): RlmError.RlmError => {
  if (Exit.isSuccess(exit) || exit.cause._tag !== "Fail") assert.fail(`expected a typed failure, got ${String(exit)}`)
  return (exit.cause as { readonly error: RlmError.RlmError }).error
}

// ---------------------------------------------------------------------------
// a lost interpreter
// ---------------------------------------------------------------------------

describe("a lost interpreter does not end the run", () => {
  for (const reason of ["Crashed", "MemoryExceeded", "Timeout", "Protocol"] as const) {
    it.effect(`${reason}: the model is told, and the run answers from the next step`, () =>
      Effect.gen(function* () {
        const log = newLog()
        const { exit, stats } = yield* runWith(
          [repl("SET a=1"), repl(`CRASH ${reason}`), repl("PRINT_LEN"), "FINAL(done)"],
          {
            log
          }
        )
        const result = answered(exit)
        assert.strictEqual(result.answer, "done")
        assert.strictEqual(result.steps, 4)
        const [, lostStep, after] = steps(result.trace)
        assert.deepStrictEqual(lostStep?.interpreterLost, { reason, message: lostMessage[reason], restarts: 1 })
        assert.deepStrictEqual(
          lostStep?.blocks.map((b) => b.error),
          [lostMessage[reason]]
        )
        const note = Prompts.interpreterLost({
          language: "python",
          reason,
          message: lostMessage[reason],
          restarts: 1,
          maxRestarts: 3,
          skipped: 0
        })
        assert.strictEqual(lostStep?.feedback, note)
        assert.include(
          note,
          `[interpreter lost] The Python interpreter ${lostCause[reason]}, and was replaced by a fresh one.`
        )
        assert.include(note, "All your REPL variables are gone")
        assert.include(note, "`P`, `context` and the helper functions are loaded again")
        assert.include(note, "Restarts left in this run: 2.")
        assert.strictEqual(toldBefore(stats)[2], `REPL output:\n[error]\n${lostMessage[reason]}\n\n${note}`)
        // The next block ran in the fresh interpreter: the context is there, the variable is not.
        assert.strictEqual(after?.blocks[0]?.stdout, "11 0\n")
        assert.isUndefined(after?.interpreterLost)
        assert.strictEqual(log.opened.length, 1)
      })
    )
  }

  it.effect("the blocks after the lost one are not run, and the model is told", () =>
    Effect.gen(function* () {
      const log = newLog()
      const reply = [repl("SET a=1"), repl("CRASH Crashed"), repl("SET b=2"), repl("SET c=3")].join("\n")
      const { exit } = yield* runWith([reply, "FINAL(done)"], { log })
      const result = answered(exit)
      assert.deepStrictEqual(log.execs, ["SET a=1", "CRASH Crashed"])
      const [lostStep] = steps(result.trace)
      assert.strictEqual(lostStep?.blocks.length, 2)
      assert.include(lostStep?.feedback ?? "", "The 2 blocks after the lost one did not run.")
    })
  )

  it.effect("FINAL_VAR in the step that lost the interpreter is rejected without asking the REPL", () =>
    Effect.gen(function* () {
      const { exit, stats } = yield* runWith([
        `${repl("SET a=1")}\n${repl("CRASH Crashed")}\nFINAL_VAR(a)`,
        "FINAL(done)"
      ])
      const result = answered(exit)
      assert.strictEqual(result.answer, "done")
      assert.include(
        toldBefore(stats)[1] ?? "",
        "FINAL_VAR(a) was not accepted: the interpreter was lost during this step, and its variables with it."
      )
    })
  )

  it.effect("a FINAL_VAR read that loses the interpreter is counted, told, and the run goes on", () =>
    Effect.gen(function* () {
      const { exit, stats } = yield* runWith(["FINAL_VAR(crash_me)", "FINAL(done)"])
      const result = answered(exit)
      assert.strictEqual(result.answer, "done")
      const [lostStep] = steps(result.trace)
      assert.deepStrictEqual(lostStep?.interpreterLost, {
        reason: "Crashed",
        message: lostMessage.Crashed,
        restarts: 1
      })
      const told = toldBefore(stats)[1] ?? ""
      assert.include(told, `FINAL_VAR(crash_me) could not be read: ${lostMessage.Crashed}`)
      assert.include(told, "[interpreter lost] The Python interpreter overflowed its stack")
    })
  )

  it.effect("a FINAL_VAR read that fails without losing the interpreter is rejected, not counted", () =>
    Effect.gen(function* () {
      const { exit, stats } = yield* runWith(["FINAL_VAR(bad_x)", "FINAL(done)"], { policy: { maxSandboxRestarts: 0 } })
      const result = answered(exit)
      assert.strictEqual(result.answer, "done")
      assert.isUndefined(steps(result.trace)[0]?.interpreterLost)
      assert.include(
        toldBefore(stats)[1] ?? "",
        "FINAL_VAR(bad_x) could not be read: the variable's __str__ raised\nAnswer with FINAL(text), or put a plain string in the variable."
      )
    })
  )

  it.effect("a request the sandbox refuses without losing the interpreter is that block's error", () =>
    Effect.gen(function* () {
      const { exit } = yield* runWith([repl("FAIL Protocol"), "FINAL(done)"], { policy: { maxSandboxRestarts: 0 } })
      const result = answered(exit)
      const [step] = steps(result.trace)
      assert.strictEqual(step?.blocks[0]?.error, "Protocol!")
      assert.isUndefined(step?.interpreterLost)
    })
  )

  it.effect("a closed sandbox still ends the run (RunFailed 'Sandbox')", () =>
    Effect.gen(function* () {
      const { exit } = yield* runWith([repl("FAIL Closed"), "FINAL(done)"])
      const error = failedWith(exit)
      assert.strictEqual(error._tag, "RunFailed")
      assert.strictEqual(error._tag === "RunFailed" && error.reason, "Sandbox")
    })
  )

  it.effect("past maxSandboxRestarts the run fails with RunFailed 'SandboxRestarts' and the partial trace", () =>
    Effect.gen(function* () {
      const { exit } = yield* runWith([repl("CRASH Crashed"), repl("CRASH MemoryExceeded"), "FINAL(done)"], {
        policy: { maxSandboxRestarts: 1 }
      })
      const error = failedWith(exit)
      if (error._tag !== "RunFailed") return assert.fail(`expected RunFailed, got ${error._tag}`)
      assert.strictEqual(error.reason, "SandboxRestarts")
      assert.strictEqual(
        error.message,
        `The python interpreter was lost 2 times in run run, more than maxSandboxRestarts=1 allows. The last time: ${lostMessage.MemoryExceeded}`
      )
      assert.instanceOf(error.cause, Sandbox.SandboxError)
      const trace = error.trace
      if (trace === undefined) return assert.fail("no trace")
      assert.deepStrictEqual(
        steps(trace).map((s) => s.interpreterLost?.restarts),
        [1, 2]
      )
      assert.deepStrictEqual(
        steps(trace)[1]?.blocks.map((b) => b.error),
        [lostMessage.MemoryExceeded]
      )
      const finished = trace.events.find((e) => e._tag === "RunFinished")
      assert.strictEqual(finished?._tag === "RunFinished" && finished.status, "failed")
    })
  )

  it.effect("the last restart left is said so", () =>
    Effect.gen(function* () {
      const { stats } = yield* runWith([repl("CRASH Crashed"), "FINAL(done)"], { policy: { maxSandboxRestarts: 1 } })
      assert.include(
        toldBefore(stats)[1] ?? "",
        "No restarts are left: if the interpreter is lost again, the run fails."
      )
    })
  )

  it.effect("each run of the tree has its own count", () =>
    Effect.gen(function* () {
      // root: crash, then rlm_query (child: crash, answer), then answer. Two losses, one per run.
      const { exit } = yield* runWith(
        [repl("CRASH Crashed"), repl("RLM sub task"), repl("CRASH Crashed"), "FINAL(child done)", "FINAL(done)"],
        { policy: { maxSandboxRestarts: 1 } }
      )
      const result = answered(exit)
      assert.strictEqual(result.answer, "done")
      const child = result.trace.events.find((e) => e._tag === "RunStarted" && e.parentRunId === "run")
      assert.isDefined(child)
      assert.deepStrictEqual(
        steps(result.trace, child?.runId).map((s) => s.interpreterLost?.restarts),
        [1, undefined]
      )
      assert.strictEqual(steps(result.trace)[1]?.blocks[0]?.stdout, "child done\n")
    })
  )

  it.effect.prop(
    "for any sequence of crashing and working steps, the run fails iff the crashes exceed maxSandboxRestarts",
    [FastCheck.array(FastCheck.boolean(), { maxLength: 8 }), FastCheck.integer({ min: 0, max: 4 })],
    ([crashes, max]) =>
      Effect.gen(function* () {
        const script = [...crashes.map((crash) => repl(crash ? "CRASH Crashed" : "SET v=1")), "FINAL(done)"]
        const { exit } = yield* runWith(script, {
          policy: { maxSandboxRestarts: max, maxSteps: script.length, maxConsecutiveErrors: 100 }
        })
        const total = crashes.filter(Boolean).length
        if (total > max) {
          const error = failedWith(exit)
          assert.strictEqual(error._tag === "RunFailed" && error.reason, "SandboxRestarts")
          // It fails at the step of the crash one past the limit.
          const fatalStep = crashes.findIndex((_, i) => crashes.slice(0, i + 1).filter(Boolean).length === max + 1) + 1
          assert.strictEqual(steps(error.trace ?? { events: [] }).length, fatalStep)
        } else {
          const result = answered(exit)
          assert.strictEqual(result.answer, "done")
          assert.strictEqual(result.steps, crashes.length + 1)
          assert.strictEqual(steps(result.trace).filter((s) => s.interpreterLost !== undefined).length, total)
        }
      })
  )
})

// ---------------------------------------------------------------------------
// caps
// ---------------------------------------------------------------------------

describe("Policy caps", () => {
  it("defaults: the sandbox's own", () => {
    assert.strictEqual(Policy.defaults.maxPromptChars, Sandbox.DEFAULT_MAX_PROMPT_CHARS)
    assert.strictEqual(Policy.defaults.maxAnswerChars, Sandbox.DEFAULT_MAX_ANSWER_CHARS)
    assert.strictEqual(Policy.defaults.maxLineBytes, Sandbox.DEFAULT_MAX_LINE_BYTES)
    assert.strictEqual(Policy.defaults.maxSandboxRestarts, 3)
    assert.throws(() => Policy.make({ maxPromptChars: 0 }))
    assert.throws(() => Policy.make({ maxSandboxRestarts: -1 }))
    assert.strictEqual(Policy.make({ maxSandboxRestarts: 0 }).maxSandboxRestarts, 0)
  })

  it.prop(
    "a Policy with its caps survives JSON (up to absent versus undefined fields)",
    [Policy.Policy],
    ([policy]) => {
      const json = JSON.stringify(Schema.encodeSync(Policy.Policy)(policy))
      const back = Schema.decodeUnknownSync(Policy.Policy)(JSON.parse(json))
      assert.instanceOf(back, Policy.Policy)
      assert.strictEqual(JSON.stringify(Schema.encodeSync(Policy.Policy)(back)), json)
      assert.deepStrictEqual(
        [back.maxPromptChars, back.maxAnswerChars, back.maxLineBytes, back.maxSandboxRestarts],
        [policy.maxPromptChars, policy.maxAnswerChars, policy.maxLineBytes, policy.maxSandboxRestarts]
      )
    }
  )

  it.effect("RunStarted records the sandbox's isolation", () =>
    Effect.gen(function* () {
      for (const isolation of ["namespace", "process"] as const) {
        const result = yield* Rlm.run("q", "ctx").pipe(
          Effect.provide(Layer.merge(FakeAdapter.layer({ script: ["FINAL(x)"] }), scripted(newLog(), isolation)))
        )
        const started = result.trace.events[0]
        assert.strictEqual(started?._tag === "RunStarted" && started.isolation, isolation)
      }
    })
  )

  it.effect("are given to sandbox.open", () =>
    Effect.gen(function* () {
      const defaults = newLog()
      answered((yield* runWith(["FINAL(x)"], { log: defaults })).exit)
      const custom = newLog()
      answered(
        (yield* runWith(["FINAL(x)"], {
          log: custom,
          policy: { maxPromptChars: 7, maxAnswerChars: 8, maxLineBytes: 9 }
        })).exit
      )
      const caps = (o?: Sandbox.OpenOptions) => [o?.maxPromptChars, o?.maxAnswerChars, o?.maxLineBytes]
      assert.deepStrictEqual(caps(defaults.opened[0]), [
        Sandbox.DEFAULT_MAX_PROMPT_CHARS,
        Sandbox.DEFAULT_MAX_ANSWER_CHARS,
        Sandbox.DEFAULT_MAX_LINE_BYTES
      ])
      assert.deepStrictEqual(caps(custom.opened[0]), [7, 8, 9])
    })
  )

  it.effect("a sub-call prompt over maxPromptChars fails that call without calling the model", () =>
    Effect.gen(function* () {
      const { exit, stats } = yield* runWith(
        [repl("CALL 12345678901"), repl("RLM 12345678901"), repl("BATCH 1234567890|12345678901"), "FINAL(done)"],
        { policy: { maxPromptChars: 10 }, rules: [{ match: "", reply: "sub reply" }] }
      )
      const result = answered(exit)
      const refused = (kind: string) =>
        `${kind} refused: the prompt has 11 characters, over maxPromptChars=10. Pass a part of P (a chunk or a slice), not all of it.`
      const blocks = steps(result.trace).map((s) => s.blocks[0])
      assert.strictEqual(blocks[0]?.error, `HostError: ${refused("llm_query")}`)
      assert.strictEqual(blocks[1]?.error, `HostError: ${refused("rlm_query")}`)
      // A batch under "error-string": the prompt at the limit is sent, the one over it gets the error in its slot.
      assert.strictEqual(blocks[2]?.stdout, `sub reply|Error: ${refused("llm_query")}\n`)
      assert.strictEqual(stats.calls.sub, 1)
      assert.deepStrictEqual(
        result.trace.events.filter((e) => e._tag === "SubCall").map((e) => e._tag === "SubCall" && e.promptChars),
        [10]
      )
      assert.strictEqual(result.trace.events.filter((e) => e._tag === "RunStarted").length, 1, "no child run")
    })
  )

  for (const [name, reply] of [
    ["FINAL in the reply", "FINAL(123456)"],
    ["FINAL_VAR", `${repl("SET a=123456")}\nFINAL_VAR(a)`],
    ["FINAL from model code", repl("SIGNAL 123456")]
  ] as const) {
    it.effect(`an answer over maxAnswerChars (${name}) is rejected with feedback, and the run goes on`, () =>
      Effect.gen(function* () {
        const { exit, stats } = yield* runWith([reply, "FINAL(12345)"], { policy: { maxAnswerChars: 5 } })
        const result = answered(exit)
        assert.strictEqual(result.answer, "12345")
        assert.strictEqual(result.steps, 2)
        const rejection =
          "Your final answer was not accepted: it has 6 characters, over maxAnswerChars=5. Answer with a shorter text (what the question asks for, not all the data)."
        assert.strictEqual(steps(result.trace)[0]?.feedback, rejection)
        assert.include(toldBefore(stats)[1] ?? "", rejection)
      })
    )
  }

  it.effect("a forced last answer over maxAnswerChars fails the budget with no partial answer", () =>
    Effect.gen(function* () {
      const { exit } = yield* runWith([repl("SET a=1"), "FINAL(123456)"], {
        policy: { maxSteps: 1, maxAnswerChars: 5 }
      })
      const error = failedWith(exit)
      assert.strictEqual(error._tag, "BudgetExceeded")
      assert.isTrue(Option.isNone(error.partialAnswer))
      assert.include(error.message, "over maxAnswerChars=5")
    })
  )
})

// ---------------------------------------------------------------------------
// real interpreters
// ---------------------------------------------------------------------------

/** A run over the real sandbox: set a variable, run `hostile`, then look at what is left, then answer. */
const hostileRun = (
  layer: Layer.Layer<Sandbox.Sandbox, Sandbox.SandboxError>,
  set: string,
  hostile: string,
  look: string
) =>
  Effect.gen(function* () {
    const result = yield* Rlm.run("q", "the context")
    const stats = yield* (yield* FakeAdapter.FakeInstrumentation).stats
    return { result, stats }
  }).pipe(
    Effect.provide(
      Layer.merge(
        FakeAdapter.layerInstrumented({ script: [repl(set), repl(hostile), repl(look), "FINAL(done)"] }),
        layer
      )
    )
  )

const deepList = "x = []\nfor _ in range(200000): x = [x]"

describe("hostile Python blocks (real sandbox)", () => {
  const crashes = [
    ["repr() of a 200,000-deep list", `${deepList}\nrepr(x)`],
    ["json.dumps of deep nesting", `import json\n${deepList}\njson.dumps(x)`],
    [
      "a raised recursion limit and recursion through __repr__",
      "import sys\nsys.setrecursionlimit(10**6)\nclass A:\n    def __init__(self, n): self.n = n\n    def __repr__(self): return repr(self.n)\nx = 0\nfor _ in range(100000): x = A(x)\nrepr(x)"
    ]
  ] as const
  for (const [name, hostile] of crashes) {
    it.live(
      `${name} kills the interpreter; the run goes on in a fresh one, the model told its variables are gone`,
      () =>
        Effect.gen(function* () {
          const { result, stats } = yield* hostileRun(
            PythonSandbox.layer(),
            "keep = 42",
            hostile,
            "print(lenP(), 'keep' in globals())"
          )
          assert.strictEqual(result.answer, "done")
          assert.strictEqual(result.steps, 4)
          const [, lost, after] = steps(result.trace)
          assert.strictEqual(lost?.interpreterLost?.reason, "Crashed")
          assert.strictEqual(lost?.interpreterLost?.restarts, 1)
          assert.include(lost?.blocks[0]?.error ?? "", "Maximum call stack size exceeded")
          const told = toldBefore(stats)[2] ?? ""
          assert.include(
            told,
            "[interpreter lost] The Python interpreter overflowed its stack (recursion or nesting too deep)"
          )
          assert.include(told, "All your REPL variables are gone")
          assert.strictEqual(after?.blocks[0]?.stdout, "11 False\n")
          assert.isUndefined(after?.blocks[0]?.error)
        }),
      120_000
    )
  }

  it.live(
    "FINAL_VAR of a 200,000-deep list kills the interpreter reading it; the answer is rejected and the run goes on",
    () =>
      Effect.gen(function* () {
        const result = yield* Rlm.run("q", "the context").pipe(
          Effect.provide(
            Layer.merge(
              FakeAdapter.layer({ script: [repl(deepList), "FINAL_VAR(x)", repl("print(lenP())"), "FINAL(done)"] }),
              PythonSandbox.layer()
            )
          )
        )
        assert.strictEqual(result.answer, "done")
        const [, lost, after] = steps(result.trace)
        assert.strictEqual(lost?.interpreterLost?.reason, "Crashed")
        assert.include(lost?.feedback ?? "", "FINAL_VAR(x) could not be read: ")
        assert.include(lost?.feedback ?? "", "[interpreter lost] The Python interpreter overflowed its stack")
        assert.strictEqual(after?.blocks[0]?.stdout, "11\n")
      }),
    120_000
  )

  it.live(
    "sys.setrecursionlimit(10**6) then deep recursion is stopped by the interpreter: a RecursionError, variables kept",
    () =>
      Effect.gen(function* () {
        const { result } = yield* hostileRun(
          PythonSandbox.layer(),
          "keep = 42",
          "import sys\nsys.setrecursionlimit(10**6)\ndef f(n): return f(n + 1)\nf(0)",
          "print(lenP(), keep)"
        )
        assert.strictEqual(result.answer, "done")
        const [, stopped, after] = steps(result.trace)
        assert.isUndefined(stopped?.interpreterLost)
        assert.include(stopped?.blocks[0]?.error ?? "", "RecursionError: maximum recursion depth exceeded")
        assert.strictEqual(after?.blocks[0]?.stdout, "11 42\n")
      }),
    120_000
  )
})

describe("hostile JavaScript blocks (real sandbox)", () => {
  it.live(
    "JSON.parse of 100,000-deep nesting is stopped by the interpreter: an error, variables kept",
    () =>
      Effect.gen(function* () {
        const { result } = yield* hostileRun(
          JavascriptSandbox.layer(),
          "var keep = 42",
          "JSON.parse('['.repeat(100000) + ']'.repeat(100000))",
          "console.log(lenP(), keep)"
        )
        assert.strictEqual(result.answer, "done")
        const [, stopped, after] = steps(result.trace)
        assert.isUndefined(stopped?.interpreterLost)
        assert.include(stopped?.blocks[0]?.error ?? "", "stack overflow")
        assert.strictEqual(after?.blocks[0]?.stdout, "11 42\n")
      }),
    120_000
  )
})
