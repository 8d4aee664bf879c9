import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Either, Fiber, Option } from "effect"
import { rewriteTopLevel } from "../src/internal/javascriptRewrite.js"
import * as JavascriptSandbox from "../src/JavascriptSandbox.js"
import * as Sandbox from "../src/Sandbox.js"
import { makeFakeHost } from "./ReplContract.js"

const layer = JavascriptSandbox.layer()

const openWith = (options: Partial<Sandbox.OpenOptions> = {}) =>
  Effect.gen(function* () {
    const sandbox = yield* Sandbox.Sandbox
    return yield* sandbox.open({ context: { text: "Hello world" }, host: makeFakeHost().host, ...options })
  })

const run = (repl: Sandbox.Repl, code: string) =>
  Effect.tap(repl.exec(code), (r) => Effect.sync(() => assert.isUndefined(r.error, `${code} -> ${r.error}`)))

describe("rewriteTopLevel", () => {
  const cases: ReadonlyArray<readonly [string, string]> = [
    ["const a = 1", "var   a = 1"],
    ["let a = 1; const b = 2", "var a = 1; var   b = 2"],
    ["const { a, b } = o\nlet [c] = d", "var   { a, b } = o\nvar [c] = d"],
    ["class K { m() { return 1 } }\nK", "var K = class K { m() { return 1 } };\nK"],
    ["{ const inner = 1 }", "{ const inner = 1 }"],
    ["for (let i = 0; i < 3; i++) {}", "for (let i = 0; i < 3; i++) {}"],
    ["function f() { const local = 1 }", "function f() { const local = 1 }"],
    // biome-ignore lint/suspicious/noTemplateCurlyInString: JavaScript source under test
    ["const s = `let ${x} const`", "var   s = `let ${x} const`"],
    // biome-ignore lint/suspicious/noTemplateCurlyInString: JavaScript source under test
    ["const t = `${`nested ${1}`}`; let u = 2", "var   t = `${`nested ${1}`}`; var u = 2"],
    ["// const c = 1\n'let x'; \"const y\"", "// const c = 1\n'let x'; \"const y\""],
    ["const r = /const [/]/g; let z = a / b / c", "var   r = /const [/]/g; var z = a / b / c"],
    ["obj.let = 1; x = K.class", "obj.let = 1; x = K.class"],
    ["const fn = class Named {}", "var   fn = class Named {}"],
    ["let", "let"]
  ]
  for (const [input, expected] of cases) {
    it(JSON.stringify(input), () => assert.strictEqual(rewriteTopLevel(input), expected))
  }
})

describe("JavascriptSandbox", () => {
  it.live("reports its language", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      assert.strictEqual(sandbox.language, "javascript")
      const repl = yield* openWith()
      assert.strictEqual(repl.language, "javascript")
      const r = yield* repl.exec("1")
      assert.isAbove(r.durationMs, 0)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("two sessions can be suspended in llm_query at the same time", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const gates = { a: yield* Deferred.make<string>(), b: yield* Deferred.make<string>() }
      const started = { a: yield* Deferred.make<void>(), b: yield* Deferred.make<void>() }
      const hostFor = (name: "a" | "b"): Sandbox.HostFunctions => ({
        ...makeFakeHost().host,
        llmQuery: (prompt) =>
          Deferred.succeed(started[name], undefined).pipe(
            Effect.zipRight(Deferred.await(gates[name])),
            Effect.map((reply) => `${reply}<-${prompt}`)
          )
      })
      const a = yield* sandbox.open({ context: { text: "A" }, host: hostFor("a") })
      const b = yield* sandbox.open({ context: { text: "B" }, host: hostFor("b") })
      const fa = yield* Effect.fork(a.exec(`var ra = llm_query("from " + P); console.log(ra)`))
      const fb = yield* Effect.fork(b.exec(`var rb = llm_query("from " + P); console.log(rb)`))
      // Both interpreters are now suspended inside llm_query.
      yield* Deferred.await(started.a)
      yield* Deferred.await(started.b)
      yield* Deferred.succeed(gates.b, "reply-b")
      const rb = yield* Fiber.join(fb)
      yield* Deferred.succeed(gates.a, "reply-a")
      const ra = yield* Fiber.join(fa)
      assert.strictEqual(ra.stdout, "reply-a<-from A\n")
      assert.strictEqual(rb.stdout, "reply-b<-from B\n")
      assert.deepStrictEqual(yield* a.getVar("ra"), Option.some("reply-a<-from A"))
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("the batch is one host call and its prompts run concurrently on the host", () =>
    Effect.gen(function* () {
      const fake = makeFakeHost()
      const repl = yield* openWith({ host: fake.host })
      const started = performance.now()
      const r = yield* run(
        repl,
        `llm_query_batched(["sleep:300 a", "sleep:300 b", "sleep:300 c", "sleep:300 d"]).length`
      )
      assert.strictEqual(r.stdout, "4\n")
      assert.isBelow(performance.now() - started, 1100)
      assert.deepStrictEqual(
        fake.calls.map((c) => c.kind),
        ["llm_batched"]
      )
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("async functions and promises settle within the block; the echo shows the settled value", () =>
    Effect.gen(function* () {
      const repl = yield* openWith()
      const r = yield* run(repl, `(async () => { const x = await Promise.resolve(2); return x * 21 })()`)
      assert.strictEqual(r.stdout, "42\n")
      const s = yield* run(repl, `var later; Promise.resolve(5).then((v) => { later = v * 2 }); "sync"`)
      assert.strictEqual(s.stdout, `"sync"\n`)
      assert.deepStrictEqual(yield* repl.getVar("later"), Option.some("10"))
      const rejected = yield* repl.exec(`Promise.reject(new TypeError("nope"))`)
      assert.match(rejected.error ?? "", /^Uncaught \(in promise\) TypeError: nope/)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("a host call that dies raises an ordinary error in model code", () =>
    Effect.gen(function* () {
      const repl = yield* openWith({
        host: { ...makeFakeHost().host, llmQuery: () => Effect.die(new Error("adapter bug")) }
      })
      const r = yield* run(repl, `try { llm_query("x") } catch (e) { e.message }`)
      assert.strictEqual(r.stdout, `"host call failed: Error: adapter bug"\n`)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("top-level await is explained", () =>
    Effect.gen(function* () {
      const repl = yield* openWith()
      const r = yield* repl.exec(`const a = await llm_query("x")`)
      assert.match(r.error ?? "", /^SyntaxError[\s\S]*Hint: llm_query\/rlm_query are synchronous here/)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("values are echoed in a readable form", () =>
    Effect.gen(function* () {
      const repl = yield* openWith()
      const cases: ReadonlyArray<readonly [string, string]> = [
        [`[1, "a", { b: 2, "c d": [true, null] }]`, `[1, "a", { b: 2, "c d": [true, null] }]`],
        [`new Map([["k", 1]])`, `Map(1) {"k" => 1}`],
        [`new Set([1, 2])`, `Set(2) {1, 2}`],
        [`10n`, `10n`],
        [`(function named() {})`, `[Function: named]`],
        [`new RangeError("r")`, `RangeError: r`],
        [`const cyc = { name: "c" }; cyc.self = cyc; cyc`, `{ name: "c", self: [Circular] }`],
        [`Array.from({ length: 1002 }, (_, i) => i).slice(999)`, `[999, 1000, 1001]`],
        [`"quoted\\nstring"`, `"quoted\\nstring"`]
      ]
      for (const [code, expected] of cases) {
        const r = yield* run(repl, code)
        assert.strictEqual(r.stdout, `${expected}\n`, code)
      }
      const big = yield* run(repl, `Array.from({ length: 1500 }, (_, i) => i)`)
      assert.match(big.stdout, /998, 999, \.\.\. 500 more items\]\n$/)
      const printed = yield* run(repl, `console.log("a", 1, { x: [1] }); print("via print")`)
      assert.strictEqual(printed.stdout, "a 1 { x: [1] }\nvia print\n")
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("top-level declarations of every kind persist and can be re-run", () =>
    Effect.gen(function* () {
      const repl = yield* openWith()
      const cell = `const xs = [1, 2, 3]\nlet total = 0\nclass Acc { add(v) { total += v; return this } }\nfunction sum(a) { return a.reduce((s, v) => s + v, 0) }\nconst tpl = \`const in a template \${xs.length}\``
      yield* run(repl, cell)
      yield* run(repl, cell) // re-running the same cell must not fail with "redeclaration"
      const r = yield* run(repl, `new Acc().add(sum(xs)); [total, tpl]`)
      assert.strictEqual(r.stdout, `[6, "const in a template 3"]\n`)
      const names = (yield* repl.listVars).map((v) => `${v.name}:${v.type}`)
      for (const expected of ["xs:array", "total:number", "Acc:function", "sum:function", "tpl:string"]) {
        assert.include(names, expected)
      }
      // Block-scoped declarations stay block-scoped.
      yield* run(repl, `{ const inner = 1 }\nfor (let i = 0; i < 2; i++) {}`)
      assert.deepStrictEqual(yield* repl.getVar("inner"), Option.none())
      assert.deepStrictEqual(yield* repl.getVar("i"), Option.none())
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("getVar gives the string form of objects", () =>
    Effect.gen(function* () {
      const repl = yield* openWith()
      yield* run(repl, `var obj = { a: [1, 2] }; var s = "plain"`)
      assert.deepStrictEqual(yield* repl.getVar("obj"), Option.some("{ a: [1, 2] }"))
      assert.deepStrictEqual(yield* repl.getVar("s"), Option.some("plain"))
      assert.deepStrictEqual(yield* repl.getVar("__proto__"), Option.none())
      assert.deepStrictEqual(yield* repl.getVar("Object"), Option.none())
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("documents are exposed as a frozen context list", () =>
    Effect.gen(function* () {
      const repl = yield* openWith({ context: { text: "d1\nd2", documents: ["d1", "d2"] } })
      const r = yield* repl.exec(`"use strict"; context.push("x")`)
      assert.match(r.error ?? "", /^TypeError/)
      const s = yield* run(repl, `[context.length, context[0], P]`)
      assert.strictEqual(s.stdout, `[2, "d1", "d1\\nd2"]\n`)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("a context containing NUL characters is loaded intact", () =>
    Effect.gen(function* () {
      const repl = yield* openWith({ context: { text: "a\u0000b\u0000\u0000c" } })
      const r = yield* run(repl, `[lenP(), find("\\u0000").join(), llm_query("q\\u0000r").length]`)
      assert.strictEqual(r.stdout, `[6, "1,3,4", 7]\n`)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("the memory limit stops a block with a clear error and the session survives", () =>
    Effect.gen(function* () {
      const repl = yield* openWith()
      yield* run(repl, `var kept = "still here"`)
      const r = yield* repl.exec(`const hoard = []; for (;;) hoard.push(new Float64Array(1e6))`)
      assert.match(r.error ?? "", /^InternalError: out of memory[\s\S]*MemoryError: .*limit of 64 MB/)
      const after = yield* run(repl, `hoard.length = 0; [kept, new Float64Array(1e6).length]`)
      assert.strictEqual(after.stdout, `["still here", 1000000]\n`)
    }).pipe(Effect.scoped, Effect.provide(JavascriptSandbox.layer({ memoryMb: 64 })))
  )

  it.live("find refuses a result that cannot fit under the memory limit", () =>
    Effect.gen(function* () {
      const repl = yield* openWith({ context: { text: "a".repeat(3_000_000) } })
      const r = yield* repl.exec(`find("a")`)
      assert.match(r.error ?? "", /^RangeError: find: more than 2796202 matches/)
      const ok = yield* run(repl, `find("aaaa", 2999990).length`)
      assert.strictEqual(ok.stdout, "7\n")
    }).pipe(Effect.scoped, Effect.provide(JavascriptSandbox.layer({ memoryMb: 64 })))
  )

  it.live("a context larger than the memory limit fails to open with a typed error", () =>
    Effect.gen(function* () {
      const result = yield* Effect.either(openWith({ context: { text: "x".repeat(40 * 1024 * 1024) } }))
      assert.isTrue(Either.isLeft(result))
      if (Either.isLeft(result)) assert.oneOf(result.left.reason, ["MemoryExceeded", "StartFailed"])
    }).pipe(Effect.scoped, Effect.provide(JavascriptSandbox.layer({ memoryMb: 32 })))
  )

  it.live("the per-block timeout comes from the layer options unless the session sets one", () =>
    Effect.gen(function* () {
      const repl = yield* openWith()
      const started = performance.now()
      const r = yield* repl.exec(`while (true) {}`)
      assert.match(r.error ?? "", /longer than 300 ms/)
      assert.isBelow(performance.now() - started, 2_000)
    }).pipe(Effect.scoped, Effect.provide(JavascriptSandbox.layer({ execTimeout: "300 millis" })))
  )

  it.live("interrupting the caller while the block waits on the host stops the block; the session survives", () =>
    Effect.gen(function* () {
      const repl = yield* openWith({ host: { ...makeFakeHost().host, llmQuery: () => Effect.never } })
      const timedOut = yield* Effect.either(Effect.timeout(repl.exec(`llm_query("hang")`), Duration.millis(200)))
      assert.isTrue(Either.isLeft(timedOut))
      const r = yield* run(repl, `1 + 1`)
      assert.strictEqual(r.stdout, "2\n")
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("a closed session fails with Closed", () =>
    Effect.gen(function* () {
      const repl = yield* Effect.scoped(openWith())
      const r = yield* Effect.either(repl.exec("1"))
      assert.isTrue(Either.isLeft(r))
      if (Either.isLeft(r)) assert.strictEqual(r.left.reason, "Closed")
    }).pipe(Effect.provide(layer))
  )

  it.live(
    "a 100 MB context loads, and peek/find/slice work on it",
    () =>
      Effect.gen(function* () {
        const unit = "The quick brown fox jumps over the lazy dog. "
        const text = `${unit.repeat(Math.ceil(100e6 / unit.length)).slice(0, 100e6)}NEEDLE`
        const flat = Buffer.from(text, "latin1").toString("latin1") // a flat string, as read from a file
        const t0 = performance.now()
        const repl = yield* openWith({ context: { text: flat } })
        const loadMs = performance.now() - t0
        const t1 = performance.now()
        const r = yield* run(
          repl,
          `[lenP(), find("NEEDLE").join(), find("fox").length, peek(9), slice(100e6, 100e6 + 6)]`
        )
        const findMs = performance.now() - t1
        let foxes = 0
        for (let i = flat.indexOf("fox"); i !== -1; i = flat.indexOf("fox", i + 1)) foxes++
        assert.strictEqual(r.stdout, `[100000006, "100000000", ${foxes}, "The quick", "NEEDLE"]\n`)
        console.log(`BENCH-NOTE js 100MB load_ms=${loadMs.toFixed(0)} block_with_finds_ms=${findMs.toFixed(0)}`)
      }).pipe(Effect.scoped, Effect.provide(layer)),
    120_000
  )
})
