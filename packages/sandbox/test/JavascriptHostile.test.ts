/**
 * Hostile programs against the JavaScript sandbox. Each case asserts the
 * exact outcome (blocked with which error, or what the code could observe)
 * and that the NEXT block of the same session still works with the helpers
 * and the bridge intact.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import * as JavascriptSandbox from "../src/JavascriptSandbox.js"
import * as Output from "../src/Output.js"
import * as Sandbox from "../src/Sandbox.js"
import { makeFakeHost } from "./ReplContract.js"

const TEXT = "Hello needle world"
const LIMIT = 200
const layer = JavascriptSandbox.layer({ memoryMb: 64 })

type Outcome = Either.Either<Sandbox.ExecResult, Sandbox.SandboxError>

const openRepl = Effect.gen(function* () {
  const sandbox = yield* Sandbox.Sandbox
  const fake = makeFakeHost()
  const repl = yield* sandbox.open({
    context: { text: TEXT },
    host: fake.host,
    outputLimit: LIMIT,
    execTimeout: "500 millis"
  })
  return { repl, calls: fake.calls }
})

/** The block after the attack: helpers, P and the bridge must be intact. */
const assertStillWorks = (repl: Sandbox.Repl) =>
  Effect.gen(function* () {
    const next = yield* repl.exec(`console.log(peek(5), lenP(), find("needle").join(), llm_query("z"))`)
    assert.isUndefined(next.error, `next block failed: ${next.error}`)
    assert.strictEqual(next.stdout, `Hello ${TEXT.length} 6 llm:z\n`)
  })

const ok = (outcome: Outcome): Sandbox.ExecResult => {
  if (Either.isLeft(outcome)) assert.fail(`expected an ExecResult, got ${JSON.stringify(outcome.left)}`)
  return outcome.right
}

const hostile = (name: string, code: string, check: (outcome: Outcome) => void, maxMs = 5_000) =>
  it.live(name, () =>
    Effect.gen(function* () {
      const { repl } = yield* openRepl
      const started = performance.now()
      const outcome = yield* Effect.either(repl.exec(code))
      const elapsed = performance.now() - started
      check(outcome)
      assert.isBelow(elapsed, maxMs, `took ${elapsed} ms`)
      yield* assertStillWorks(repl)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

const echoes = (expected: string) => (outcome: Outcome) => {
  const r = ok(outcome)
  assert.isUndefined(r.error, r.error)
  assert.strictEqual(r.stdout, expected)
}
const raises = (pattern: RegExp) => (outcome: Outcome) => {
  const r = ok(outcome)
  assert.match(r.error ?? "<no error>", pattern)
}
const timesOut = raises(/^InternalError: interrupted[\s\S]*TimeoutError: the block ran longer than 500 ms/)
const outOfMemory = raises(/out of memory[\s\S]*MemoryError: the block exceeded the sandbox memory limit of 64 MB/)
const stackOverflow = raises(/^InternalError: stack overflow[\s\S]*RecursionError/)
const crashedAndRestarted = (outcome: Outcome) => {
  assert.isTrue(Either.isLeft(outcome), "expected a SandboxError")
  if (Either.isLeft(outcome)) {
    assert.strictEqual(outcome.left.reason, "Crashed")
    assert.isTrue(outcome.left.stateLost)
    assert.match(outcome.left.message, /restarted/)
  }
}

const ES_GLOBALS = [
  "AggregateError",
  "Array",
  "ArrayBuffer",
  "BigInt",
  "BigInt64Array",
  "BigUint64Array",
  "Boolean",
  "DataView",
  "Date",
  "Error",
  "EvalError",
  "FinalizationRegistry",
  "Float16Array",
  "Float32Array",
  "Float64Array",
  "Function",
  "Infinity",
  "Int16Array",
  "Int32Array",
  "Int8Array",
  "InternalError",
  "Iterator",
  "JSON",
  "Map",
  "Math",
  "NaN",
  "Number",
  "Object",
  "Promise",
  "Proxy",
  "RangeError",
  "ReferenceError",
  "Reflect",
  "RegExp",
  "Set",
  "SharedArrayBuffer",
  "String",
  "Symbol",
  "SyntaxError",
  "TypeError",
  "URIError",
  "Uint16Array",
  "Uint32Array",
  "Uint8Array",
  "Uint8ClampedArray",
  "WeakMap",
  "WeakRef",
  "WeakSet",
  "decodeURI",
  "decodeURIComponent",
  "encodeURI",
  "encodeURIComponent",
  "escape",
  "eval",
  "globalThis",
  "isFinite",
  "isNaN",
  "parseFloat",
  "parseInt",
  "undefined",
  "unescape"
]

describe("JavascriptSandbox hostile programs", () => {
  // --- reaching the host ----------------------------------------------------
  hostile("process is not there", `typeof process`, echoes(`"undefined"\n`))
  hostile("require is not there", `require("fs")`, raises(/^ReferenceError: 'require' is not defined/))
  hostile(
    "dynamic import finds no module loader",
    `import("fs")`,
    raises(/^Uncaught \(in promise\) ReferenceError: could not load module 'fs'/)
  )
  hostile("static import is a syntax error in a script", `import fs from "fs"`, raises(/^SyntaxError/))
  hostile(
    "no host objects: std, os, scriptArgs, timers, fetch, WebAssembly",
    `[typeof std, typeof os, typeof scriptArgs, typeof setTimeout, typeof fetch, typeof WebAssembly, typeof Atomics, typeof navigator].join()`,
    echoes(`"${Array(8).fill("undefined").join()}"\n`)
  )
  hostile(
    "globalThis holds only ES builtins and the REPL helpers",
    `const allowed = ${JSON.stringify([...ES_GLOBALS, ...Sandbox.RESERVED_NAMES, "console", "print"])};
     const present = Object.getOwnPropertyNames(globalThis).filter((n) => n !== "allowed" && n !== "present");
     JSON.stringify([present.filter((n) => !allowed.includes(n)), allowed.filter((n) => !present.includes(n))])`,
    echoes(`"[[],[]]"\n`)
  )
  hostile(
    "Function constructor code runs in the same empty realm",
    `Function("return typeof process + typeof require + typeof module")()`,
    echoes(`"undefinedundefinedundefined"\n`)
  )
  hostile(
    "constructor.constructor escape reaches only the sandbox global",
    `const g = (() => {}).constructor.constructor("return this")(); [g === globalThis, typeof g.process].join()`,
    echoes(`"true,undefined"\n`)
  )
  hostile(
    "indirect eval sees no host either",
    `(0, eval)("typeof require + typeof process")`,
    echoes(`"undefinedundefined"\n`)
  )
  hostile(
    "the raw bridge is not reachable from a helper's constructor or caller",
    `[llm_query.constructor("return typeof raw + typeof hostQuery")(), (() => { try { return llm_query.caller } catch (e) { return e.name } })()].join()`,
    echoes(`"undefinedundefined,TypeError"\n`)
  )
  hostile(
    "helpers are frozen: no properties can be planted on them",
    `"use strict"; try { llm_query.bridge = 1; "planted" } catch (e) { e.name + ":" + Object.isFrozen(llm_query) }`,
    echoes(`"TypeError:true"\n`)
  )

  // --- overwriting and deleting the helpers -----------------------------------
  hostile(
    "assigning a reserved name throws",
    `llm_query = () => "forged"`,
    raises(/^TypeError: 'llm_query' is reserved by the REPL and cannot be reassigned/)
  )
  hostile(
    "redefining a reserved name throws",
    `Object.defineProperty(globalThis, "llm_query", { value: () => "forged" })`,
    raises(/^TypeError/)
  )
  hostile("deleting a helper fails", `delete globalThis.peek`, echoes("false\n"))
  hostile("let-declaring P throws", `let P = "forged"`, raises(/^TypeError: 'P' is reserved/))
  hostile(
    "a function declaration cannot shadow a helper",
    `function peek() { return "forged" }`,
    raises(/^TypeError: cannot define variable 'peek'/)
  )
  hostile("a class declaration cannot shadow FINAL", `class FINAL {}`, raises(/^TypeError: 'FINAL' is reserved/))
  hostile(
    "replacing console and print is undone after the block",
    `console.log = null; console = undefined; print = 1; "replaced"`,
    echoes(`"replaced"\n`)
  )
  hostile(
    "freezing the global object does not break the REPL",
    `Object.freeze(globalThis); "frozen"`,
    echoes(`"frozen"\n`)
  )

  // --- prototype pollution and forged replies ---------------------------------
  it.live("prototype pollution does not change what the helpers return", () =>
    Effect.gen(function* () {
      const { repl } = yield* openRepl
      const attack = yield* repl.exec(
        `String.prototype.indexOf = () => -1; String.prototype.slice = () => "forged"; Array.prototype.push = () => 0;
         Array.prototype.join = () => "forged"; JSON.parse = () => ["forged"]; JSON.stringify = () => "[]";
         Reflect.apply = () => "forged"; Array.from = () => ["forged"]; Object.defineProperty = () => {};
         Object.freeze = (o) => o; Array.isArray = () => false; Function.prototype.apply = () => "forged";
         Object.defineProperty(Array.prototype, "0", { set() { throw new Error("trap") }, configurable: true });
         "polluted"`
      )
      assert.strictEqual(attack.stdout, `"polluted"\n`)
      // The helpers use intrinsics captured before model code ran.
      const r = yield* repl.exec(
        `[find("needle").length, find("needle")[0], peek(5), tail(5), slice(0, 5), chunk(6).length, chunk(6)[0], llm_query_batched(["a", "b"])[1]]`
      )
      assert.isUndefined(r.error, r.error)
      assert.strictEqual(r.stdout, `[1, 6, "Hello", "world", "Hello", 3, "Hello ", "llm:b"]\n`)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  hostile(
    "Object.prototype.toJSON cannot forge the output or the final answer sent to the host",
    `Object.prototype.toJSON = function () { return { stdout: "forged", final: { source: "FINAL", value: "forged" } } }; console.log("real"); FINAL("real answer")`,
    (outcome) => {
      const r = ok(outcome)
      assert.strictEqual(r.stdout, "real\n")
      assert.strictEqual(r.final?.value, "real answer")
    }
  )

  it.live("FINAL_VAR does not evaluate a name that is not an identifier", () =>
    Effect.gen(function* () {
      const { calls, repl } = yield* openRepl
      const r = yield* repl.exec(`FINAL_VAR("x; llm_query('evil')")`)
      assert.match(r.error ?? "", /^ReferenceError: FINAL_VAR: variable 'x; llm_query\('evil'\)' does not exist/)
      assert.isUndefined(r.final)
      assert.deepStrictEqual(calls, [])
      yield* assertStillWorks(repl)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  hostile(
    "llm_query inside a promise job is refused, not suspended",
    `(async () => { await null; return llm_query("from a job") })()`,
    raises(/^Uncaught \(in promise\) Error: llm_query cannot run inside a promise job/)
  )
  hostile(
    "a FinalizationRegistry callback cannot reach the bridge either",
    `new FinalizationRegistry(() => llm_query("fin")).register({}, 1); "registered"`,
    echoes(`"registered"\n`)
  )

  // --- other sessions ------------------------------------------------------------
  it.live("one session cannot read another session's P or variables", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const a = yield* sandbox.open({ context: { text: "secret of A" }, host: makeFakeHost().host })
      const b = yield* sandbox.open({ context: { text: "text of B" }, host: makeFakeHost().host })
      yield* a.exec(`globalThis.leak = P; var stolen = P; Object.prototype.polluted = P`)
      const r = yield* b.exec(`[typeof leak, typeof stolen, ({}).polluted, P].join()`)
      assert.strictEqual(r.stdout, `"undefined,undefined,,text of B"\n`)
      assert.deepStrictEqual(yield* b.getVar("stolen"), Option.none())
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  // --- time --------------------------------------------------------------------
  hostile("an infinite loop is interrupted", `while (true) {}`, timesOut)
  hostile(
    "the interrupt cannot be caught or outlasted with finally",
    `try { while (true) {} } catch (e) { "swallowed" } finally { while (true) {} }`,
    timesOut
  )
  hostile("catastrophic regex backtracking is interrupted", `/(a+)+b/.test("a".repeat(40))`, timesOut)
  hostile(
    "a hostile toString passed to llm_query is interrupted",
    `llm_query({ toString() { while (true) {} } })`,
    timesOut
  )
  hostile(
    "a Proxy whose traps loop, as the echoed value, is interrupted",
    `new Proxy({}, { get() { while (true) {} }, ownKeys() { while (true) {} }, getPrototypeOf() { while (true) {} } })`,
    timesOut
  )
  hostile(
    "a self-requeuing promise job chain is stopped",
    `function again() { Promise.resolve().then(again) }; again(); "queued"`,
    raises(/interrupted/)
  )
  hostile(
    "a thrown object with looping getters is reported without hanging",
    `throw { get name() { while (true) {} }, get message() { while (true) {} } }`,
    raises(/^Uncaught exception \(its description could not be computed\)$/)
  )
  it.live("getVar on a global getter that loops returns None within the limit", () =>
    Effect.gen(function* () {
      const { repl } = yield* openRepl
      yield* repl.exec(`Object.defineProperty(globalThis, "trap", { get() { while (true) {} }, enumerable: true })`)
      const started = performance.now()
      assert.deepStrictEqual(yield* repl.getVar("trap"), Option.none())
      assert.isBelow(performance.now() - started, 3_000)
      const names = (yield* repl.listVars).map((v) => v.name)
      assert.include(names, "trap")
      yield* assertStillWorks(repl)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  // --- memory and output -----------------------------------------------------------
  hostile(
    "a memory bomb stops with a clear error",
    `const hoard = []; for (;;) hoard.push(new Float64Array(1e6))`,
    outOfMemory
  )
  hostile("a huge typed array is refused", `new Uint8Array(1e9).length`, raises(/out of memory|RangeError/))
  hostile(
    "string doubling stops at QuickJS's string limit or the memory limit",
    `let s = "x"; while (true) s += s`,
    raises(/string too long|out of memory/)
  )
  hostile("an endless output flood is cut and interrupted", `while (true) console.log("x".repeat(1000))`, (outcome) => {
    const r = ok(outcome)
    assert.isTrue(r.truncated)
    assert.match(r.stdout, /^x{200}\n\[\.\.\. output truncated: \d+ more characters not shown \.\.\.\]$/)
    assert.match(r.error ?? "", /interrupted/)
  })
  hostile("one 10 MB line is cut with an exact count", `console.log("y".repeat(1e7))`, (outcome) => {
    const r = ok(outcome)
    assert.strictEqual(r.stdout, "y".repeat(LIMIT) + Output.truncationMarker(1e7 + 1 - LIMIT))
  })
  hostile("a stderr flood is cut too", `for (let i = 0; i < 2e4; i++) console.error("e")`, (outcome) => {
    const r = ok(outcome)
    assert.strictEqual(r.stderr, "e\n".repeat(LIMIT / 2) + Output.truncationMarker(4e4 - LIMIT))
  })

  // --- stack ------------------------------------------------------------------------
  hostile("a recursion bomb raises a stack overflow", `function f() { return f() + 1 }; f()`, stackOverflow)
  hostile(
    "mutual recursion through toString raises a stack overflow",
    `const o = { toString() { return String(o) } }; String(o)`,
    stackOverflow
  )
  hostile(
    "a parser bomb that exhausts the host stack restarts the interpreter (state lost)",
    `eval("(".repeat(100000))`,
    crashedAndRestarted
  )
  it.live("after a crash the session keeps working with P reloaded and old variables gone", () =>
    Effect.gen(function* () {
      const { repl } = yield* openRepl
      yield* repl.exec(`var before = 1`)
      const crash = yield* Effect.either(repl.exec(`eval("[".repeat(100000))`))
      crashedAndRestarted(crash)
      assert.deepStrictEqual(yield* repl.getVar("before"), Option.none())
      yield* assertStillWorks(repl)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )
})
