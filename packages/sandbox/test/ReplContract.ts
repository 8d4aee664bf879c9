/**
 * The language-agnostic REPL contract: ONE table of cases, each with a Python
 * and a JavaScript snippet and the expected outcome. Every `Sandbox` Layer runs
 * the same table through `replContractSuite`, which picks the snippet by
 * `Sandbox.language`.
 *
 * Usage (one line per sandbox):
 *   replContractSuite("JavascriptSandbox", JavascriptSandbox.layer())
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, type Layer, Option } from "effect"
import * as Output from "../src/Output.js"
import * as Sandbox from "../src/Sandbox.js"

/** What one step must produce. Unset fields are not checked. */
export interface Expect {
  /** Exact stdout, or a pattern it must match. */
  readonly stdout?: string | RegExp
  readonly stderr?: string | RegExp
  /** `null`: the step must not raise; a RegExp: `ExecResult.error` must match. */
  readonly error?: RegExp | null
  readonly truncated?: boolean
  /** `null`: no final answer recorded. */
  readonly final?: { readonly source: "FINAL" | "FINAL_VAR"; readonly value: string; readonly name?: string } | null
  /** After the step, `getVar(name)`: a string means Some(value), `null` means None. */
  readonly vars?: Readonly<Record<string, string | null>>
  /** After the step, these names must (not) be listed by `listVars`. */
  readonly listed?: ReadonlyArray<string>
  readonly notListed?: ReadonlyArray<string>
}

/** One code block, written in both languages. */
export interface Step {
  readonly python: string
  readonly javascript: string
  readonly expect: Expect
  /** Overrides merged over `expect` for one language (e.g. UTF-16 vs code point lengths). */
  readonly only?: Partial<Record<Sandbox.Language, Expect>>
}

/** A host call seen by the fake host functions. */
export type HostCall =
  | { readonly kind: "llm" | "rlm"; readonly prompt: string }
  | { readonly kind: "llm_batched" | "rlm_batched"; readonly prompts: ReadonlyArray<string> }

export interface ContractCase {
  readonly name: string
  readonly context?: Sandbox.ReplContext
  readonly outputLimit?: number
  readonly execTimeout?: Duration.DurationInput
  readonly steps: ReadonlyArray<Step>
  /** The exact host calls the whole case must make, in order. */
  readonly hostCalls?: ReadonlyArray<HostCall>
}

export const DEFAULT_TEXT = "Hello world. The needle is here: needle. Goodbye."

/**
 * The fake host: `llm_query(p)` answers `llm:p`, `rlm_query(p)` answers
 * `rlm:p`; a prompt equal to `fail` fails with `HostCallError("quota
 * exceeded")`; a prompt starting with `sleep:N` waits N ms first.
 */
export const makeFakeHost = (): { readonly host: Sandbox.HostFunctions; readonly calls: Array<HostCall> } => {
  const calls: Array<HostCall> = []
  const answer = (prefix: string) => (prompt: string) =>
    Effect.gen(function* () {
      if (prompt === "fail") {
        return yield* Effect.fail(new Sandbox.HostCallError({ message: "quota exceeded" }))
      }
      const sleep = /^sleep:(\d+)/.exec(prompt)
      if (sleep) yield* Effect.sleep(Duration.millis(Number(sleep[1])))
      return `${prefix}:${prompt}`
    })
  const llm = answer("llm")
  const rlm = answer("rlm")
  const record = (call: HostCall) => Effect.sync(() => calls.push(call))
  return {
    calls,
    host: {
      llmQuery: (prompt) => Effect.zipRight(record({ kind: "llm", prompt }), llm(prompt)),
      llmQueryBatched: (prompts) =>
        Effect.zipRight(
          record({ kind: "llm_batched", prompts: [...prompts] }),
          Effect.forEach(prompts, llm, { concurrency: "unbounded" })
        ),
      rlmQuery: (prompt) => Effect.zipRight(record({ kind: "rlm", prompt }), rlm(prompt)),
      rlmQueryBatched: (prompts) =>
        Effect.zipRight(
          record({ kind: "rlm_batched", prompts: [...prompts] }),
          Effect.forEach(prompts, rlm, { concurrency: "unbounded" })
        )
    }
  }
}

const none: Expect = { error: null }

/** The table. Keep snippets minimal and outputs identical across languages where possible. */
export const contractCases: ReadonlyArray<ContractCase> = [
  {
    name: "P and context hold the prompt text",
    steps: [
      {
        python: `print(str(len(P)) + ":" + ("same" if P == context else "differs"))`,
        javascript: `console.log(P.length + ":" + (P === context ? "same" : "differs"))`,
        expect: { ...none, stdout: `${DEFAULT_TEXT.length}:same\n` }
      }
    ]
  },
  {
    name: "context is the document list when documents are given",
    context: { text: "alpha\nbeta", documents: ["alpha", "beta"] },
    steps: [
      {
        python: `print(len(context), context[1], P)`,
        javascript: `console.log(context.length, context[1], P)`,
        expect: { ...none, stdout: "2 beta alpha\nbeta\n" }
      }
    ]
  },
  {
    name: "peek, tail, lenP and slice",
    steps: [
      {
        python: `print(peek(5)); print(tail(8)); print(lenP()); print(slice(6, 11)); print(len(peek()) == len(P))`,
        javascript: `console.log(peek(5)); console.log(tail(8)); console.log(lenP()); console.log(slice(6, 11)); console.log(String(peek().length === P.length).replace("true", "True"))`,
        expect: { ...none, stdout: `Hello\nGoodbye.\n${DEFAULT_TEXT.length}\nworld\nTrue\n` }
      }
    ]
  },
  {
    name: "peek and tail default to 2000 characters",
    context: { text: "a".repeat(1500) + "b".repeat(1500) },
    steps: [
      {
        python: `print(len(peek()), len(tail()), peek()[-1], tail()[0])`,
        javascript: `console.log(peek().length, tail().length, peek().slice(-1), tail()[0])`,
        expect: { ...none, stdout: "2000 2000 b a\n" }
      }
    ]
  },
  {
    name: "find returns every offset, overlapping hits included",
    context: { text: "abababa needle" },
    steps: [
      {
        python: `print(",".join(str(i) for i in find("aba"))); print(",".join(str(i) for i in find("aba", 1)))`,
        javascript: `console.log(find("aba").join(",")); console.log(find("aba", 1).join(","))`,
        expect: { ...none, stdout: "0,2,4\n2,4\n" }
      }
    ]
  },
  {
    name: "find with no hit or an empty needle returns an empty list",
    steps: [
      {
        python: `print(len(find("zzz")), len(find("")))`,
        javascript: `console.log(find("zzz").length, find("").length)`,
        expect: { ...none, stdout: "0 0\n" }
      }
    ]
  },
  {
    name: "chunk covers P in order, with overlap",
    context: { text: "abcdefghij" },
    steps: [
      {
        python: `print("|".join(chunk(4))); print("|".join(chunk(4, 1)))`,
        javascript: `console.log(chunk(4).join("|")); console.log(chunk(4, 1).join("|"))`,
        expect: { ...none, stdout: "abcd|efgh|ij\nabcd|defg|ghij|j\n" }
      }
    ]
  },
  {
    name: "chunk rejects a bad size or overlap",
    steps: [
      { python: `chunk(0)`, javascript: `chunk(0)`, expect: { error: /ValueError|RangeError/ } },
      { python: `chunk(4, 4)`, javascript: `chunk(4, 4)`, expect: { error: /ValueError|RangeError/ } }
    ]
  },
  {
    name: "the value of a last expression is echoed",
    steps: [
      { python: `1 + 2`, javascript: `1 + 2`, expect: { ...none, stdout: "3\n" } },
      { python: `x = 5`, javascript: `var x = 5`, expect: { ...none, stdout: "" } },
      { python: `None`, javascript: `undefined`, expect: { ...none, stdout: "" } }
    ]
  },
  {
    name: "variables and functions persist between blocks",
    steps: [
      {
        python: `x = 41\ndef inc(n):\n    return n + 1`,
        javascript: `const x = 41\nfunction inc(n) { return n + 1 }`,
        expect: { ...none, stdout: "", vars: { x: "41" } }
      },
      { python: `print(inc(x))`, javascript: `console.log(inc(x))`, expect: { ...none, stdout: "42\n" } },
      {
        python: `x = 1\nx = 2\nprint(x)`,
        javascript: `const x = 1\nlet y = x + 1\nconsole.log(y)`,
        expect: { ...none, stdout: "2\n" }
      },
      { python: `print(x)`, javascript: `console.log(y)`, expect: { ...none, stdout: "2\n" } }
    ]
  },
  {
    name: "an exception becomes ExecResult.error and the REPL survives",
    steps: [
      {
        python: `print("before")\nraise ValueError("boom")`,
        javascript: `console.log("before")\nthrow new RangeError("boom")`,
        expect: { stdout: "before\n", error: /(ValueError|RangeError): boom/ }
      },
      { python: `print("after")`, javascript: `console.log("after")`, expect: { ...none, stdout: "after\n" } }
    ]
  },
  {
    name: "a syntax error is reported, not thrown",
    steps: [
      { python: `def (:`, javascript: `function (`, expect: { error: /SyntaxError/ } },
      { python: `print(1)`, javascript: `console.log(1)`, expect: { ...none, stdout: "1\n" } }
    ]
  },
  {
    name: "stderr is captured separately",
    steps: [
      {
        python: `import sys\nprint("out")\nprint("oops", file=sys.stderr)`,
        javascript: `console.log("out")\nconsole.error("oops")`,
        expect: { ...none, stdout: "out\n", stderr: "oops\n" }
      }
    ]
  },
  {
    name: "llm_query and rlm_query call the host",
    steps: [
      {
        python: `print(llm_query("hi")); print(rlm_query("deep"))`,
        javascript: `console.log(llm_query("hi")); console.log(rlm_query("deep"))`,
        expect: { ...none, stdout: "llm:hi\nrlm:deep\n" }
      }
    ],
    hostCalls: [
      { kind: "llm", prompt: "hi" },
      { kind: "rlm", prompt: "deep" }
    ]
  },
  {
    name: "batched queries are one host call, replies in prompt order",
    steps: [
      {
        python: `print("|".join(llm_query_batched(["sleep:30 a", "b", "c"]))); print("|".join(rlm_query_batched(["x", "y"])))`,
        javascript: `console.log(llm_query_batched(["sleep:30 a", "b", "c"]).join("|")); console.log(rlm_query_batched(["x", "y"]).join("|"))`,
        expect: { ...none, stdout: "llm:sleep:30 a|llm:b|llm:c\nrlm:x|rlm:y\n" }
      }
    ],
    hostCalls: [
      { kind: "llm_batched", prompts: ["sleep:30 a", "b", "c"] },
      {
        kind: "rlm_batched",
        prompts: ["x", "y"]
      }
    ]
  },
  {
    name: "a failed host call raises an ordinary exception the code can catch",
    steps: [
      {
        python: `try:\n    llm_query("fail")\nexcept RuntimeError as e:\n    print("caught", e)`,
        javascript: `try { llm_query("fail") } catch (e) { console.log("caught", e.message) }`,
        expect: { ...none, stdout: /^caught .*quota exceeded/ }
      },
      { python: `llm_query("fail")`, javascript: `llm_query("fail")`, expect: { error: /quota exceeded/ } },
      {
        python: `print(llm_query("ok"))`,
        javascript: `console.log(llm_query("ok"))`,
        expect: { ...none, stdout: "llm:ok\n" }
      }
    ]
  },
  {
    name: "FINAL records the string form of its value; the block runs to its end",
    steps: [
      {
        python: `FINAL("the answer")\nprint("after")`,
        javascript: `FINAL("the answer")\nconsole.log("after")`,
        expect: { ...none, stdout: "after\n", final: { source: "FINAL", value: "the answer" } }
      },
      { python: `FINAL(42)`, javascript: `FINAL(42)`, expect: { ...none, final: { source: "FINAL", value: "42" } } },
      { python: `print(1)`, javascript: `console.log(1)`, expect: { ...none, final: null } }
    ]
  },
  {
    name: "FINAL_VAR records a variable by name",
    steps: [
      {
        python: `answer = "from a variable"\nFINAL_VAR("answer")`,
        javascript: `const answer = "from a variable"\nFINAL_VAR("answer")`,
        expect: { ...none, final: { source: "FINAL_VAR", name: "answer", value: "from a variable" } }
      }
    ]
  },
  {
    name: "FINAL_VAR of a missing variable raises and records nothing",
    steps: [
      {
        python: `FINAL_VAR("missing_var")`,
        javascript: `FINAL_VAR("missing_var")`,
        expect: { error: /missing_var.*(does not exist|not defined)/, final: null }
      }
    ]
  },
  {
    name: "SHOW_VARS lists user variables, not the helpers",
    steps: [
      {
        python: `my_var = [1, 2]\nSHOW_VARS()`,
        javascript: `const my_var = [1, 2]\nSHOW_VARS()`,
        expect: { error: null, stdout: /my_var/, listed: ["my_var"], notListed: ["llm_query", "P", "peek"] }
      },
      {
        python: `print("llm_query" in str(SHOW_VARS()))`,
        javascript: `console.log(String(JSON.stringify(SHOW_VARS()).includes("llm_query")).replace("false", "False"))`,
        expect: { error: null, stdout: /False\n$/ }
      }
    ]
  },
  {
    name: "reserved names are restored after a block rebinds or deletes them",
    steps: [
      {
        python: `P = "tampered"\ndel peek\nllm_query = lambda p: "forged"`,
        javascript: `try { P = "tampered" } catch (e) {}\ntry { delete globalThis.peek } catch (e) {}\ntry { llm_query = (p) => "forged" } catch (e) {}`,
        expect: {}
      },
      {
        python: `print(len(P), peek(5), llm_query("q"))`,
        javascript: `console.log(P.length, peek(5), llm_query("q"))`,
        expect: { ...none, stdout: `${DEFAULT_TEXT.length} Hello llm:q\n` }
      }
    ]
  },
  {
    name: "getVar returns the string form; listVars lists user variables",
    steps: [
      {
        python: `msg = "hi there"\nn = 42`,
        javascript: `var msg = "hi there"\nlet n = 42`,
        expect: {
          ...none,
          vars: { msg: "hi there", n: "42", nope: null },
          listed: ["msg", "n"],
          notListed: ["P", "context", "llm_query", "FINAL"]
        }
      }
    ]
  },
  {
    name: "output is cut at outputLimit with the truncation marker",
    outputLimit: 100,
    steps: [
      {
        python: `print("x" * 500)`,
        javascript: `console.log("x".repeat(500))`,
        expect: { ...none, truncated: true, stdout: "x".repeat(100) + Output.truncationMarker(401) }
      },
      {
        python: `print("short")`,
        javascript: `console.log("short")`,
        expect: { ...none, truncated: false, stdout: "short\n" }
      }
    ]
  },
  {
    name: "an output flood costs bounded memory and counts what was cut",
    outputLimit: 1000,
    steps: [
      {
        python: `for i in range(200000):\n    print("line")`,
        javascript: `for (let i = 0; i < 200000; i++) console.log("line")`,
        expect: { ...none, truncated: true, stdout: "line\n".repeat(200) + Output.truncationMarker(999_000) }
      }
    ]
  },
  {
    name: "offsets are native string indices (code points in Python, UTF-16 in JS)",
    context: { text: "é😀x" },
    steps: [
      {
        python: `print(lenP(), find("x"))`,
        javascript: `console.log(lenP(), JSON.stringify(find("x")))`,
        expect: { error: null },
        only: { python: { stdout: "3 [2]\n" }, javascript: { stdout: "4 [3]\n" } }
      }
    ]
  },
  {
    name: "a block past the time limit is interrupted and the REPL keeps its state",
    execTimeout: "400 millis",
    steps: [
      { python: `kept = 7`, javascript: `var kept = 7`, expect: none },
      { python: `while True:\n    pass`, javascript: `while (true) {}`, expect: { error: /interrupt/i } },
      { python: `print(kept)`, javascript: `console.log(kept)`, expect: { ...none, stdout: "7\n" } }
    ]
  },
  {
    name: "time waiting on host calls does not count against the limit",
    execTimeout: "400 millis",
    steps: [
      {
        python: `print(llm_query("sleep:700 slow"))`,
        javascript: `console.log(llm_query("sleep:700 slow"))`,
        expect: { ...none, stdout: "llm:sleep:700 slow\n" }
      }
    ]
  }
]

const check = (label: string, actual: string | undefined, expected: string | RegExp | undefined) => {
  if (expected === undefined) return
  if (typeof expected === "string") assert.strictEqual(actual, expected, label)
  else assert.match(actual ?? "", expected, label)
}

const runCase = (testCase: ContractCase) =>
  Effect.gen(function* () {
    const sandbox = yield* Sandbox.Sandbox
    const { calls, host } = makeFakeHost()
    const repl = yield* sandbox.open({
      context: testCase.context ?? { text: DEFAULT_TEXT },
      host,
      outputLimit: testCase.outputLimit,
      execTimeout: testCase.execTimeout
    })
    assert.strictEqual(repl.language, sandbox.language)
    for (const [i, step] of testCase.steps.entries()) {
      const code = step[sandbox.language]
      const expect: Expect = { ...step.expect, ...step.only?.[sandbox.language] }
      const result = yield* repl.exec(code)
      const at = `step ${i} (${JSON.stringify(code)}) -> ${JSON.stringify(result)}`
      check(`stdout of ${at}`, result.stdout, expect.stdout)
      check(`stderr of ${at}`, result.stderr, expect.stderr)
      if (expect.error === null) assert.isUndefined(result.error, `error of ${at}`)
      else if (expect.error !== undefined) assert.match(result.error ?? "", expect.error, `error of ${at}`)
      if (expect.truncated !== undefined) assert.strictEqual(result.truncated, expect.truncated, `truncated of ${at}`)
      if (expect.final === null) assert.isUndefined(result.final, `final of ${at}`)
      else if (expect.final !== undefined) {
        assert.isDefined(result.final, `final of ${at}`)
        assert.strictEqual(result.final?.source, expect.final.source, `final.source of ${at}`)
        assert.strictEqual(result.final?.value, expect.final.value, `final.value of ${at}`)
        if (expect.final.name !== undefined) assert.strictEqual(result.final?.name, expect.final.name)
      }
      for (const [name, value] of Object.entries(expect.vars ?? {})) {
        const got = yield* repl.getVar(name)
        assert.deepStrictEqual(got, value === null ? Option.none() : Option.some(value), `getVar(${name}) after ${at}`)
      }
      if (expect.listed !== undefined || expect.notListed !== undefined) {
        const names = (yield* repl.listVars).map((v) => v.name)
        for (const name of expect.listed ?? []) assert.include(names, name, `listVars after ${at}`)
        for (const name of expect.notListed ?? []) assert.notInclude(names, name, `listVars after ${at}`)
      }
    }
    if (testCase.hostCalls !== undefined) assert.deepStrictEqual(calls, [...testCase.hostCalls])
  })

/**
 * Define the contract tests for one sandbox Layer. Each case opens a fresh
 * session (the Layer is built once per case).
 */
export const replContractSuite = (label: string, layer: Layer.Layer<Sandbox.Sandbox, unknown>) =>
  describe(`REPL contract: ${label}`, () => {
    for (const testCase of contractCases) {
      it.live(testCase.name, () => runCase(testCase).pipe(Effect.scoped, Effect.provide(layer)))
    }

    it.live("sessions are isolated from each other", () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const a = yield* sandbox.open({ context: { text: "session A" }, host: makeFakeHost().host })
        const b = yield* sandbox.open({ context: { text: "session B" }, host: makeFakeHost().host })
        const setCode = sandbox.language === "python" ? `secret = "a-only"` : `var secret = "a-only"`
        assert.isUndefined((yield* a.exec(setCode)).error)
        const readP = sandbox.language === "python" ? `print(P)` : `console.log(P)`
        assert.strictEqual((yield* b.exec(readP)).stdout, "session B\n")
        assert.deepStrictEqual(yield* b.getVar("secret"), Option.none())
        assert.deepStrictEqual(yield* a.getVar("secret"), Option.some("a-only"))
      }).pipe(Effect.scoped, Effect.provide(layer))
    )
  })
