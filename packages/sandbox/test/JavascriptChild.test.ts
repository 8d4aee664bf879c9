/**
 * The JavaScript interpreter in its own process: hostile programs that try to
 * block the host, forge what the child sends, exhaust the host's memory or
 * outlive their session. Each asserts the exact outcome and, through a ticker
 * on the host, that the host's event loop was never blocked for more than
 * 50 ms while the block ran.
 */
import { spawn } from "node:child_process"
import * as net from "node:net"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Either, Option } from "effect"
import * as internal from "../src/internal/javascriptSandbox.js"
import * as JavascriptSandbox from "../src/JavascriptSandbox.js"
import * as Output from "../src/Output.js"
import * as Sandbox from "../src/Sandbox.js"
import { alive, childPids, processTree } from "./javascriptTestkit.js"
import { makeFakeHost } from "./ReplContract.js"

const TEXT = "Hello needle world"
const LIMIT = 200
const MAX_GAP_MS = 50
const layer = JavascriptSandbox.layer({ memoryMb: 64 })
const forger = internal.make({
  childScript: fileURLToPath(new URL("./fixtures/forged-javascript-child.mjs", import.meta.url))
})

type Outcome = Either.Either<Sandbox.ExecResult, Sandbox.SandboxError>

/**
 * How long the host's event loop was blocked while `effect` ran: the largest
 * gap between ticks of a 5 ms interval, counting only the part of each gap
 * the host process spent on the CPU (a gap the OS scheduler caused by running
 * other processes on this shared machine is not the host being blocked).
 */
const ticked = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    let last = performance.now()
    let lastCpu = process.cpuUsage()
    let blocked = 0
    let gap = 0
    const tick = () => {
      const now = performance.now()
      const cpu = process.cpuUsage(lastCpu)
      const cpuMs = (cpu.user + cpu.system) / 1000
      gap = Math.max(gap, now - last)
      blocked = Math.max(blocked, Math.min(now - last, cpuMs))
      last = now
      lastCpu = process.cpuUsage()
    }
    const timer = setInterval(tick, 5)
    const result = yield* Effect.ensuring(
      effect,
      Effect.sync(() => clearInterval(timer))
    )
    tick()
    return { result, gap, blocked }
  })

let worstGap = 0
let worstBlocked = 0
afterAll(() => {
  console.log(
    `BENCH-NOTE js host_max_gap_ms=${worstGap.toFixed(1)} host_max_blocked_ms=${worstBlocked.toFixed(1)} (ticker over the hostile blocks)`
  )
})

const openRepl = (options: Partial<Sandbox.OpenOptions> = {}) =>
  Effect.gen(function* () {
    const sandbox = yield* Sandbox.Sandbox
    const fake = makeFakeHost()
    const repl = yield* sandbox.open({
      context: { text: TEXT },
      host: fake.host,
      outputLimit: LIMIT,
      execTimeout: "500 millis",
      ...options
    })
    return { repl, calls: fake.calls }
  })

/** Run one block under the ticker; the host must never have waited on it. */
const execTicked = (repl: Sandbox.Repl, code: string) =>
  Effect.gen(function* () {
    const { blocked, gap, result } = yield* ticked(Effect.either(repl.exec(code)))
    worstGap = Math.max(worstGap, gap)
    worstBlocked = Math.max(worstBlocked, blocked)
    assert.isAtMost(
      blocked,
      MAX_GAP_MS,
      `the host's event loop was blocked for ${blocked.toFixed(1)} ms (gap ${gap.toFixed(1)} ms)`
    )
    return result
  })

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

const timesOut = /^InternalError: interrupted[\s\S]*TimeoutError: the block ran longer than 500 ms/

const hostile = (
  name: string,
  code: string,
  check: (outcome: Outcome, calls: ReadonlyArray<unknown>) => void,
  options: Partial<Sandbox.OpenOptions> = {},
  sandbox = layer
) =>
  it.live(name, () =>
    Effect.gen(function* () {
      const { calls, repl } = yield* openRepl(options)
      check(yield* execTicked(repl, code), calls)
      yield* assertStillWorks(repl)
    }).pipe(Effect.scoped, Effect.provide(sandbox))
  )

describe("JavascriptSandbox child process: guest values the host never reads", () => {
  hostile(
    "a looping getter on Object.prototype for every field of the result is never read by the host",
    `for (const k of ["t", "id", "stdout", "stderr", "final", "source", "name", "value", "error", "stdoutOmitted", "found", "toJSON"]) {
       Object.defineProperty(Object.prototype, k, { __proto__: null, get() { while (true) {} }, configurable: true })
     }
     console.log("out"); FINAL("answer")`,
    (outcome) => {
      const r = ok(outcome)
      assert.isUndefined(r.error)
      assert.strictEqual(r.stdout, "out\n")
      assert.deepStrictEqual(r.final, new Sandbox.FinalSignal({ source: "FINAL", value: "answer" }))
    }
  )
  hostile(
    "looping getters on Object.prototype's descriptor fields (get, set, value, writable) do not break the REPL",
    `for (const k of ["get", "set", "value", "writable", "enumerable", "configurable", "parts", "used", "omitted"]) {
       Object.defineProperty(Object.prototype, k, { __proto__: null, get() { while (true) {} }, configurable: true })
     }
     var ans = "kept"; console.log("still printing"); FINAL_VAR("ans")`,
    (outcome) => {
      const r = ok(outcome)
      assert.isUndefined(r.error)
      assert.strictEqual(r.stdout, "still printing\n")
      assert.deepStrictEqual(r.final, new Sandbox.FinalSignal({ source: "FINAL_VAR", name: "ans", value: "kept" }))
    }
  )
  hostile(
    "a looping getter on Array.prototype indices and length does not hang the output collection",
    `Object.defineProperty(Array.prototype, "0", { get() { while (true) {} }, configurable: true });
     Object.defineProperty(Array.prototype, "1", { get() { while (true) {} }, configurable: true });
     console.log("a"); console.error("b"); "done"`,
    (outcome) => {
      const r = ok(outcome)
      assert.isUndefined(r.error)
      assert.strictEqual(r.stdout, `a\n"done"\n`)
      assert.strictEqual(r.stderr, "b\n")
    }
  )
  hostile(
    "a Proxy with looping traps as the FINAL value is interrupted, no answer is set",
    `FINAL(new Proxy({}, { get() { while (true) {} }, ownKeys() { while (true) {} }, getPrototypeOf() { while (true) {} }, getOwnPropertyDescriptor() { while (true) {} } }))`,
    (outcome) => {
      const r = ok(outcome)
      assert.match(r.error ?? "", timesOut)
      assert.isUndefined(r.final)
    }
  )
  hostile(
    "a Proxy with looping traps as an llm_query prompt is interrupted before any host call",
    `llm_query(new Proxy({}, { get() { while (true) {} } }))`,
    (outcome, calls) => {
      assert.match(ok(outcome).error ?? "", timesOut)
      assert.deepStrictEqual(calls, [])
    }
  )
  hostile(
    "a valueOf that loops, coerced by the block, is interrupted",
    `"" + { valueOf() { while (true) {} } }`,
    (outcome) => assert.match(ok(outcome).error ?? "", timesOut)
  )
  hostile(
    "FINAL_VAR of a global getter that loops is interrupted, no answer is set",
    `Object.defineProperty(globalThis, "ans", { get() { while (true) {} } }); FINAL_VAR("ans")`,
    (outcome) => {
      const r = ok(outcome)
      assert.match(r.error ?? "", timesOut)
      assert.isUndefined(r.final)
    }
  )
  hostile(
    "a promise job that loops forever is interrupted",
    `Promise.resolve().then(() => { while (true) {} }); "queued"`,
    (outcome) => assert.match(ok(outcome).error ?? "", /^Unhandled error in a promise job: InternalError: interrupted/)
  )
  hostile(
    "an error whose name and message getters loop is described without hanging",
    `throw Object.create(Error.prototype, { name: { get() { while (true) {} } }, message: { get() { while (true) {} } } })`,
    (outcome) => assert.strictEqual(ok(outcome).error, "Uncaught exception (its description could not be computed)")
  )
  it.live("a hostile job error, an endless job chain and a hostile thrown error: one answer in time, state kept", () =>
    Effect.gen(function* () {
      const { repl } = yield* openRepl()
      yield* repl.exec(`var kept = "yes"`)
      const hostileError = `Object.create(Error.prototype, { name: { get() { while (true) {} } }, message: { get() { while (true) {} } }, stack: { get() { while (true) {} } } })`
      const r = ok(
        yield* execTicked(
          repl,
          `Promise.resolve().then(() => { throw ${hostileError} });
           function again() { Promise.resolve().then(again) }; again();
           throw ${hostileError}`
        )
      )
      assert.strictEqual(r.error, "Uncaught exception (its description could not be computed)")
      assert.strictEqual((yield* repl.exec(`kept`)).stdout, `"yes"\n`)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )
  hostile(
    "FINAL_VAR with an object as the name is refused in the guest",
    `FINAL_VAR({ toString() { return "P" } })`,
    (outcome) => {
      const r = ok(outcome)
      assert.match(r.error ?? "", /^TypeError: FINAL_VAR\(name\): name must be a string/)
      assert.isUndefined(r.final)
    }
  )
  hostile(
    "a final answer over maxAnswerChars is refused with a clear error",
    `FINAL("x".repeat(1001))`,
    (outcome) => {
      const r = ok(outcome)
      assert.match(r.error ?? "", /^RangeError: FINAL: the answer has 1001 characters, more than the limit of 1000/)
      assert.isUndefined(r.final)
    },
    { maxAnswerChars: 1000 }
  )
  hostile(
    "an llm_query prompt over maxPromptChars fails the call before the host sees it",
    `try { llm_query("12345678901") } catch (e) { e.message }`,
    (outcome, calls) => {
      assert.strictEqual(ok(outcome).stdout, `"llm_query: the prompt has 11 characters, more than the limit of 10"\n`)
      assert.deepStrictEqual(calls, [])
    },
    { maxPromptChars: 10 }
  )
  hostile(
    "a batched prompt over maxPromptChars fails the whole batch before the host sees it",
    `try { llm_query_batched(["short", "x".repeat(11)]) } catch (e) { e.message }`,
    (outcome, calls) => {
      assert.strictEqual(
        ok(outcome).stdout,
        `"llm_query_batched: item 1 of prompts has 11 characters, more than the limit of 10"\n`
      )
      assert.deepStrictEqual(calls, [])
    },
    { maxPromptChars: 10 }
  )
  hostile(
    "non-string batch prompts are converted to strings in the guest, not trusted on the host",
    `llm_query_batched([1, null, { toString() { return "obj" } }])`,
    (outcome) => assert.strictEqual(ok(outcome).stdout, `["llm:1", "llm:null", "llm:obj"]\n`)
  )
  hostile(
    "a stdout flood is cut to the output limit and interrupted",
    `while (true) console.log("flood".repeat(100))`,
    (outcome) => {
      const r = ok(outcome)
      assert.isTrue(r.truncated)
      assert.strictEqual(r.stdout.slice(0, LIMIT), "flood".repeat(40))
      assert.match(r.stdout.slice(LIMIT), /^\n\[\.\.\. output truncated: \d+ more characters not shown \.\.\.\]$/)
      assert.match(r.error ?? "", timesOut)
    }
  )
  hostile(
    "no socket or module API: require, process, fetch, import() are absent",
    `[typeof require, typeof process, typeof fetch, typeof WebSocket, typeof XMLHttpRequest, typeof Deno, typeof Bun].join()`,
    (outcome) => assert.strictEqual(ok(outcome).stdout, `"${Array(7).fill("undefined").join()}"\n`)
  )

  it.live(
    "a 600 MB final answer is refused with a clear error and the host stays alive",
    () =>
      Effect.gen(function* () {
        const { repl } = yield* openRepl({ execTimeout: "60 seconds" })
        const r = ok(yield* execTicked(repl, `var big = "x".repeat(6e8); FINAL(big)`))
        assert.match(
          r.error ?? "",
          /^RangeError: FINAL: the answer has 600000000 characters, more than the limit of 1000000/
        )
        assert.isUndefined(r.final)
        const v = ok(yield* execTicked(repl, `FINAL_VAR("big")`))
        assert.match(v.error ?? "", /^RangeError: FINAL_VAR: the answer has 600000000 characters/)
        yield* assertStillWorks(repl)
      }).pipe(Effect.scoped, Effect.provide(JavascriptSandbox.layer())),
    120_000
  )

  // (Encoding and writing a 20 MB reply is the host's own work, ~200 ms here: not timed by the ticker.)
  it.live("a 20 MB host reply containing NUL crosses the pipe whole", () =>
    Effect.gen(function* () {
      const reply = `${"r".repeat(20e6)}\u0000end`
      const { repl } = yield* openRepl({
        host: { ...makeFakeHost().host, llmQuery: () => Effect.succeed(reply) },
        execTimeout: "30 seconds"
      })
      const r = ok(
        yield* Effect.either(repl.exec(`const a = llm_query("big"); [a.length, a.slice(-4) === "\\u0000end"]`))
      )
      assert.strictEqual(r.stdout, `[${reply.length}, true]\n`)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("find with more hits than the interpreter process's heap can hold is refused, not a crash", () =>
    Effect.gen(function* () {
      // 12 MiB context: the child's heap is 256 + 3 * 12 MiB, so at most 292 MiB / 48 = 6,378,837 hits.
      const { repl } = yield* openRepl({ context: { text: "a".repeat(12 * 1024 * 1024) }, execTimeout: "30 seconds" })
      const r = ok(yield* Effect.either(repl.exec(`var kept = 1; find("a")`)))
      assert.match(
        r.error ?? "",
        /^RangeError: find: more than 6378837 matches would not fit in the sandbox memory limit/
      )
      assert.strictEqual((yield* repl.exec(`[kept, find("a", 12 * 1024 * 1024 - 3).length]`)).stdout, "[1, 3]\n")
    }).pipe(Effect.scoped, Effect.provide(JavascriptSandbox.layer()))
  )

  it.live("an infinite execTimeout means no limit, not an instant one", () =>
    Effect.gen(function* () {
      const { repl } = yield* openRepl({ execTimeout: Duration.infinity })
      const r = yield* repl.exec(`let n = 0; for (let i = 0; i < 1e6; i++) n += i; n`)
      assert.strictEqual(r.stdout, "499999500000\n")
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("no socket API reaches a loopback listener on the host", () =>
    Effect.gen(function* () {
      let connections = 0
      const server = net.createServer((socket) => {
        connections++
        socket.destroy()
      })
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => {
          server.listen(0, "127.0.0.1", () => resume(Effect.void))
        }),
        () => Effect.sync(() => server.close())
      )
      const port = (server.address() as net.AddressInfo).port
      const { repl } = yield* openRepl()
      const r = ok(
        yield* execTicked(
          repl,
          `const tries = [];
           for (const f of [() => fetch("http://127.0.0.1:${port}"), () => require("net").connect(${port}), () => new WebSocket("ws://127.0.0.1:${port}"), () => std.urlGet("http://127.0.0.1:${port}")]) {
             try { f(); tries.push("ran") } catch (e) { tries.push(e.name) }
           }
           import("net").catch((e) => { tries.push("import:" + e.name) });
           [typeof require, typeof process, typeof fetch].join()`
        )
      )
      assert.strictEqual(r.stdout, `"undefined,undefined,undefined"\n`)
      const tries = yield* repl.getVar("tries")
      assert.deepStrictEqual(
        tries,
        Option.some(`["ReferenceError", "ReferenceError", "ReferenceError", "ReferenceError", "import:ReferenceError"]`)
      )
      yield* Effect.sleep("100 millis")
      assert.strictEqual(connections, 0)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )
})

describe("JavascriptSandbox child process: crashes, kills and the session's end", () => {
  it.live("deep nesting that crashes the interpreter: the next block runs in a fresh one with P back", () =>
    Effect.gen(function* () {
      const { repl } = yield* openRepl()
      yield* repl.exec(`var before = 1`)
      const crash = yield* execTicked(repl, `eval("[".repeat(100000))`)
      assert.isTrue(Either.isLeft(crash))
      if (Either.isLeft(crash)) {
        assert.strictEqual(crash.left.reason, "Crashed")
        assert.isTrue(crash.left.stateLost)
        assert.match(
          crash.left.message,
          /^The JavaScript interpreter crashed \(RangeError: Maximum call stack size exceeded\)/
        )
      }
      assert.deepStrictEqual(yield* repl.getVar("before"), Option.none())
      yield* assertStillWorks(repl)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("the child killed from outside: reported once (state lost), then a fresh interpreter with P", () =>
    Effect.gen(function* () {
      const before = new Set(childPids())
      const { repl } = yield* openRepl()
      yield* repl.exec(`var kept = 1`)
      const mine = childPids().filter((pid) => !before.has(pid))
      assert.lengthOf(mine, 1)
      // The interpreter itself (under the OS wall, the innermost process of the tree).
      process.kill(processTree(mine[0] as number).at(-1) as number, "SIGKILL")
      yield* Effect.sleep("300 millis")
      const r = yield* Effect.either(repl.exec(`kept`))
      assert.isTrue(Either.isLeft(r))
      if (Either.isLeft(r)) {
        assert.strictEqual(r.left.reason, "Crashed")
        assert.isTrue(r.left.stateLost)
        assert.match(
          r.left.message,
          // (Under unshare the wall's launcher reports its child's death its own way: any exit status.)
          /^The JavaScript interpreter crashed \(the process exited: code (null|\d+), signal (SIGKILL|null)/
        )
      }
      const again = yield* repl.exec(`typeof kept`)
      assert.strictEqual(again.stdout, `"undefined"\n`)
      yield* assertStillWorks(repl)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )

  it.live("a child that never answers is killed at limit + grace: Timeout, state lost, then a fresh one", () =>
    Effect.gen(function* () {
      const sandbox = yield* internal.make({
        childScript: fileURLToPath(new URL("./fixtures/forged-javascript-child.mjs", import.meta.url)),
        gracePeriod: "300 millis"
      })
      const repl = yield* sandbox.open({
        context: { text: TEXT },
        host: makeFakeHost().host,
        execTimeout: "300 millis"
      })
      const started = performance.now()
      const r = yield* Effect.either(repl.exec(JSON.stringify([])))
      const elapsed = performance.now() - started
      assert.isTrue(Either.isLeft(r))
      if (Either.isLeft(r)) {
        assert.strictEqual(r.left.reason, "Timeout")
        assert.isTrue(r.left.stateLost)
        assert.match(r.left.message, /^The code block ran longer than 300ms and did not stop when interrupted/)
      }
      assert.isAtLeast(elapsed, 550)
      const next = yield* repl.exec(
        JSON.stringify([
          { line: '{"t":"result","id":$ID,"stdout":"fresh","stdoutOmitted":0,"stderr":"","stderrOmitted":0}' }
        ])
      )
      assert.strictEqual(next.stdout, "fresh")
    }).pipe(Effect.scoped)
  )

  it.live("the child's process is gone once the session's scope closes", () =>
    Effect.gen(function* () {
      const before = new Set(childPids())
      const tree = yield* Effect.scoped(
        Effect.gen(function* () {
          const { repl } = yield* openRepl()
          yield* repl.exec(`1`)
          const mine = childPids().filter((pid) => !before.has(pid))
          assert.lengthOf(mine, 1)
          return processTree(mine[0] as number)
        })
      )
      assert.deepStrictEqual(tree.filter(alive), [])
    }).pipe(Effect.provide(layer))
  )

  it.live("interrupting the caller mid-block kills the child and the next block runs in a fresh one", () =>
    Effect.gen(function* () {
      const before = new Set(childPids())
      const { repl } = yield* openRepl({ execTimeout: "60 seconds" })
      yield* repl.exec(`var kept = 1`)
      const first = childPids().filter((pid) => !before.has(pid))
      assert.lengthOf(first, 1)
      const tree = processTree(first[0] as number)
      const r = yield* Effect.either(Effect.timeout(repl.exec(`while (true) {}`), "200 millis"))
      assert.isTrue(Either.isLeft(r))
      // The spawned process has been reaped; what ran under it follows within moments.
      for (let i = 0; i < 100 && tree.some(alive); i++) yield* Effect.sleep("20 millis")
      assert.deepStrictEqual(tree.filter(alive), [])
      const next = yield* repl.exec(`typeof kept`)
      assert.strictEqual(next.stdout, `"undefined"\n`)
    }).pipe(Effect.scoped, Effect.provide(layer))
  )
})

describe("JavascriptSandbox child process: it does not outlive its host", () => {
  for (const [block, what] of [
    ["loop", "an endless loop"],
    ["wait", "a host call never answered"]
  ] as const) {
    it.live(
      `the interpreter process is gone soon after its host is SIGKILLed in the middle of ${what}`,
      () =>
        Effect.gen(function* () {
          const script = path.join(import.meta.dirname, "fixtures", "jsHostThatDies.ts")
          const root = path.resolve(import.meta.dirname, "../../..")
          const host = spawn(process.execPath, ["--import", "tsx", script, block], {
            cwd: root,
            stdio: ["ignore", "pipe", "inherit"]
          })
          const pids = yield* Effect.async<Array<number>>((resume) => {
            let out = ""
            host.stdout?.on("data", (chunk: Buffer) => {
              out += chunk.toString("utf8")
              const match = /^PIDS ([\d,]+)$/m.exec(out)
              if (match?.[1] !== undefined) resume(Effect.succeed(match[1].split(",").map(Number)))
            })
          })
          yield* Effect.sleep("500 millis")
          assert.isTrue(pids.every(alive), "the interpreter runs the block")
          host.kill("SIGKILL")
          const killedAt = performance.now()
          while (pids.some(alive) && performance.now() - killedAt < 3_000) yield* Effect.sleep("20 millis")
          const goneMs = performance.now() - killedAt
          console.log(`BENCH-NOTE js child_gone_after_host_kill_ms=${goneMs.toFixed(0)} (${block})`)
          assert.deepStrictEqual(pids.filter(alive), [], "the interpreter outlived its host")
        }),
      60_000
    )
  }
})

describe("JavascriptSandbox child process: start-up", () => {
  it.live("a child that never says it is ready fails the open with StartFailed and is killed at once", () =>
    Effect.gen(function* () {
      const before = new Set(childPids())
      const sandbox = yield* internal.make({
        childScript: fileURLToPath(new URL("./fixtures/forged-javascript-child.mjs", import.meta.url)),
        startTimeout: "300 millis"
      })
      // maxAnswerChars 7 tells the forger to stay silent.
      const r = yield* Effect.either(
        sandbox.open({ context: { text: TEXT }, host: makeFakeHost().host, maxAnswerChars: 7 })
      )
      assert.isTrue(Either.isLeft(r))
      if (Either.isLeft(r)) {
        assert.strictEqual(r.left.reason, "StartFailed")
        assert.strictEqual(r.left.message, "The JavaScript sandbox did not start within 300ms.")
      }
      // Still inside the scope that opened it: the child is already gone.
      for (let i = 0; i < 50 && childPids().some((pid) => !before.has(pid)); i++) yield* Effect.sleep("20 millis")
      assert.deepStrictEqual(
        childPids().filter((pid) => !before.has(pid)),
        []
      )
    }).pipe(Effect.scoped)
  )
})

describe("JavascriptSandbox child process: a forged child's messages are refused", () => {
  const forged = (
    name: string,
    steps: ReadonlyArray<unknown>,
    check: (r: Sandbox.ExecResult) => void,
    options: Partial<Sandbox.OpenOptions> = {}
  ) =>
    it.live(name, () =>
      Effect.gen(function* () {
        const sandbox = yield* forger
        const fake = makeFakeHost()
        const repl = yield* sandbox.open({ context: { text: TEXT }, host: fake.host, outputLimit: LIMIT, ...options })
        check(ok(yield* Effect.either(repl.exec(JSON.stringify(steps)))))
      }).pipe(Effect.scoped)
    )
  const result = (fields: Record<string, unknown>) => ({
    line: JSON.stringify({
      t: "result",
      id: 0,
      stdout: "",
      stdoutOmitted: 0,
      stderr: "",
      stderrOmitted: 0,
      ...fields
    }).replace('"id":0', '"id":$ID')
  })

  forged(
    "a final signal with an unknown source is refused",
    [result({ final: { source: "EVAL", value: "x" } })],
    (r) => {
      assert.match(r.error ?? "", /^SandboxError: the interpreter's result was refused \(/)
      assert.isUndefined(r.final)
    }
  )
  forged(
    "a final signal whose name is an object is refused",
    [result({ final: { source: "FINAL_VAR", name: { a: 1 }, value: "x" } })],
    (r) => {
      assert.match(
        r.error ?? "",
        /^SandboxError: the interpreter's result was refused \(Expected string, actual \{"a":1\} at final\.name\)\.$/
      )
      assert.isUndefined(r.final)
    }
  )
  forged(
    "a final value over maxAnswerChars is refused",
    [result({ final: { source: "FINAL", value: "y".repeat(101) } })],
    (r) => {
      assert.match(
        r.error ?? "",
        /^SandboxError: the interpreter's result was refused \(Expected a string at most 100 character\(s\) long/
      )
      assert.isBelow((r.error ?? "").length, 400)
      assert.isUndefined(r.final)
    },
    { maxAnswerChars: 100 }
  )
  forged(
    "stdout past the output limit is cut by the host",
    [result({ stdout: "z".repeat(5000), stdoutOmitted: 0 })],
    (r) => {
      assert.strictEqual(r.stdout, "z".repeat(LIMIT) + Output.truncationMarker(5000 - LIMIT))
      assert.isTrue(r.truncated)
    }
  )
  forged(
    "a line over maxLineBytes is dropped unread; the interpreter is replaced",
    [{ huge: 2 * 1024 * 1024 }],
    (r) => {
      assert.match(
        r.error ?? "",
        /^SandboxError: the interpreter sent a message of \d+ bytes, over the limit of 1048576; the interpreter was stopped and replaced/
      )
    },
    { maxLineBytes: 1024 * 1024 }
  )
  forged("a line that is not JSON is a protocol fault shown to the model", [{ line: "not json" }], (r) =>
    assert.match(
      r.error ?? "",
      /^SandboxError: the interpreter sent a line that is not a JSON object; the interpreter was stopped/
    )
  )
  forged(
    "host calls with a number as the prompt, an unknown tool, an oversized prompt or arguments nested too deep are refused without calling the host",
    [
      { call: { name: "llm_query", args: { prompt: 42 } } },
      { call: { name: "shell", args: { prompt: "rm -rf" } } },
      { call: { name: "llm_query_batched", args: { prompts: ["ok", "x".repeat(11)] } } },
      { call: { name: "llm_query", args: { prompt: JSON.parse(`${"[".repeat(100)}${"]".repeat(100)}`) } } },
      { call: { name: "llm_query", args: "fine" } },
      { call: { name: "rlm_query", args: { prompt: "fine" } } },
      { reply: true }
    ],
    (r) => {
      const replies = JSON.parse(r.stdout) as Array<{ ok: boolean; value: string }>
      assert.deepStrictEqual(replies, [
        { ok: false, value: "llm_query: the prompt must be a string" },
        { ok: false, value: "invalid host call" },
        { ok: false, value: "llm_query_batched: item 1 of prompts has 11 characters; the limit is 10" },
        { ok: false, value: "llm_query: the arguments are nested more than 64 deep" },
        { ok: false, value: "llm_query: the arguments must be an object by parameter name" },
        { ok: true, value: JSON.stringify("rlm:fine") }
      ])
    },
    { maxPromptChars: 10, outputLimit: 10_000 }
  )

  forged(
    "a burst of host calls at once: only one runs, the others are refused",
    [
      {
        burst: [
          { name: "llm_query", args: { prompt: "sleep:200 first" } },
          { name: "llm_query", args: { prompt: "second" } },
          { name: "rlm_query", args: { prompt: "third" } }
        ]
      },
      { reply: true }
    ],
    (r) => {
      const replies = JSON.parse(r.stdout) as Array<{ ok: boolean; value: string }>
      assert.deepStrictEqual(replies, [
        { ok: false, value: "host call refused: another host call is still running" },
        { ok: false, value: "host call refused: another host call is still running" },
        { ok: true, value: JSON.stringify("llm:sleep:200 first") }
      ])
    },
    { outputLimit: 10_000 }
  )

  it.live("a forged getVar answer over the caps fails with a typed error, not a defect", () =>
    Effect.gen(function* () {
      const sandbox = yield* forger
      const repl = yield* sandbox.open({ context: { text: TEXT }, host: makeFakeHost().host })
      yield* repl.exec(
        JSON.stringify([{ answer: { t: "result", id: "$ID", vars: [{ name: { evil: 1 }, type: "x" }] } }, result({})])
      )
      const r = yield* Effect.either(repl.listVars)
      assert.isTrue(Either.isLeft(r))
      if (Either.isLeft(r)) {
        assert.strictEqual(r.left.reason, "Protocol")
        assert.match(r.left.message, /^the interpreter's answer was refused/)
      }
    }).pipe(Effect.scoped)
  )
})
