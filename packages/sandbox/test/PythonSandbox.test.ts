import { spawn } from "node:child_process"
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync
} from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it, layer } from "@effect/vitest"
import { Cause, Context, Duration, Effect, Exit, Fiber, Layer, Logger, Option, Scope } from "effect"
import { treePids } from "../src/internal/isolation.js"
import * as Output from "../src/Output.js"
import * as PythonSandbox from "../src/PythonSandbox.js"
import * as Sandbox from "../src/Sandbox.js"
import {
  exited,
  processExists,
  recordingHost,
  SECRET,
  Session,
  sandboxChildren,
  sessionLayer
} from "./pythonTestkit.js"

const TEXT = `${"The quick brown fox. A needle here, another needle there. ".repeat(4)}THE END`

const exec = (code: string) => Effect.flatMap(Session, ({ repl }) => repl.exec(code))

// One interpreter shared by the tests below (a cold start costs several
// seconds); they run in order and some build on each other's state.
/** CPU ticks (user + system) used so far by `pids` together. */
const cpuTicks = (pids: ReadonlyArray<number>): number =>
  pids.reduce((sum, pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      return sum + Number(fields[11]) + Number(fields[12])
    } catch {
      return sum
    }
  }, 0)

layer(
  sessionLayer(
    { text: TEXT },
    { memoryMb: 512, execTimeout: Duration.seconds(3), gracePeriod: Duration.seconds(1), outputLimit: 300 }
  ),
  { excludeTestServices: true, timeout: Duration.minutes(2) }
)("PythonSandbox session", (it) => {
  it.effect("no network, no host environment, no host files (smoke test)", () =>
    Effect.gen(function* () {
      const env = yield* exec(
        `import os\nprint(sorted(os.environ))\nprint(${JSON.stringify(SECRET)} in repr(os.environ))`
      )
      assert.isUndefined(env.error)
      assert.notInclude(env.stdout, "SECRET_TEST_TOKEN")
      assert.match(env.stdout, /False\n$/)
      const passwd = yield* exec(`open('/etc/passwd').read()`)
      assert.match(passwd.error ?? "", /FileNotFoundError/)
      const net = yield* exec(`import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/')`)
      assert.match(net.error ?? "", /URLError|OSError|ConnectionRefused|Errno/)
      const js = yield* exec(`import js`)
      assert.match(js.error ?? "", /ModuleNotFoundError: No module named 'js'/)
      // The interpreter process's own environment: one setting of ours, nothing of the host (and no IPC channel).
      const children = sandboxChildren()
      assert.isAbove(children.length, 0)
      for (const pid of children) {
        assert.deepStrictEqual(readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter(Boolean), [
          "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
        ])
      }
    })
  )

  it.effect("reading a variable whose own __str__ never returns is interrupted like a block; the REPL goes on", () =>
    Effect.gen(function* () {
      const { repl } = yield* Session
      yield* exec(`class Slow:\n    def __str__(self):\n        while True:\n            pass\nslow = Slow()`)
      const started = Date.now()
      const value = yield* repl.getVar("slow")
      assert.match(
        Option.getOrElse(value, () => ""),
        /^<unprintable Slow: /
      )
      assert.isBelow(Date.now() - started, 3000 + 1000)
      assert.strictEqual((yield* exec(`print("still here")`)).stdout, "still here\n")
    })
  )

  it.effect("state persists between blocks; the last expression is echoed", () =>
    Effect.gen(function* () {
      assert.strictEqual((yield* exec(`counter = 1\ndef bump():\n    global counter\n    counter += 1`)).stdout, "")
      yield* exec(`bump()`)
      const r = yield* exec(`bump()\ncounter`)
      assert.strictEqual(r.stdout, "3\n")
      assert.isUndefined(r.error)
      assert.isAtLeast(r.durationMs, 0)
    })
  )

  it.effect("an exception becomes a trimmed traceback and the next block works", () =>
    Effect.gen(function* () {
      const r = yield* exec(`print("partial")\ndef inner():\n    raise KeyError("nope")\ninner()`)
      assert.strictEqual(r.stdout, "partial\n")
      assert.match(r.error ?? "", /^Traceback \(most recent call last\):\n {2}File "<repl>", line 4, in <module>/)
      assert.match(r.error ?? "", /KeyError: 'nope'\n$/)
      assert.notInclude(r.error ?? "", "<sandbox>")
      assert.notInclude(r.error ?? "", "exec_block")
      assert.strictEqual((yield* exec(`counter`)).stdout, "3\n")
    })
  )

  it.effect("output past the limit is cut with the marker", () =>
    Effect.gen(function* () {
      const r = yield* exec(`print("y" * 1000)`)
      assert.isTrue(r.truncated)
      assert.strictEqual(r.stdout, "y".repeat(300) + Output.truncationMarker(701))
      const e = yield* exec(`import sys\nsys.stderr.write("e" * 400)`)
      assert.isTrue(e.truncated)
      assert.strictEqual(e.stderr, "e".repeat(300) + Output.truncationMarker(100))
      // The echoed value of the last expression (400) is on stdout.
      assert.strictEqual(e.stdout, "400\n")
    })
  )

  it.effect("reserved names and builtins are restored after a block", () =>
    Effect.gen(function* () {
      yield* exec(
        `P = "x"\ncontext = None\ndel find\nFINAL = print\nimport builtins\nbuiltins.len = None\nbuiltins.evil = 1\nimport sys\nsys.stdout = None`
      )
      const r = yield* exec(`print(len(P), context == P, find("needle")[:2], hasattr(__builtins__, "evil"))`)
      assert.isUndefined(r.error)
      const first = TEXT.indexOf("needle")
      assert.strictEqual(r.stdout, `${TEXT.length} True [${first}, ${TEXT.indexOf("needle", first + 1)}] False\n`)
    })
  )

  it.effect(
    "a name added where another was deleted (the same count) is restored too: builtins and the helpers' globals",
    () =>
      Effect.gen(function* () {
        yield* exec(
          `import builtins\ndel builtins.abs\nbuiltins.planted = 1\ng = peek.__globals__\ng["planted_global"] = 1\ndel g["_len"]\npeek.__defaults__ = (3,)`
        )
        const r = yield* exec(
          `import builtins\nprint(hasattr(builtins, "planted"), abs(-2), "planted_global" in peek.__globals__, "_len" in peek.__globals__, peek.__defaults__ == (3,), lenP() > 0)`
        )
        assert.isUndefined(r.error)
        assert.strictEqual(r.stdout, "False 2 False True False True\n")
      })
  )

  it.effect("llm_query round-trips through the host Effect", () =>
    Effect.gen(function* () {
      const { calls } = yield* Session
      calls.length = 0
      const r = yield* exec(`a = llm_query("summarize " + peek(9))\nb = rlm_query(42)\nprint(a)\nprint(b)`)
      assert.isUndefined(r.error)
      assert.strictEqual(r.stdout, "llm:summarize The quick\nrlm:42\n")
      assert.deepStrictEqual(calls, [
        { kind: "llm", prompts: ["summarize The quick"] },
        { kind: "rlm", prompts: ["42"] }
      ])
    })
  )

  it.effect("llm_query_batched is one host call; replies keep prompt order whatever the latencies", () =>
    Effect.gen(function* () {
      const { calls } = yield* Session
      calls.length = 0
      const prompts = ["sleep:600 first", "sleep:10 second", "sleep:450 third", "fourth", "sleep:300 fifth"]
      const started = Date.now()
      const r = yield* exec(`replies = llm_query_batched(${JSON.stringify(prompts)})\nprint(replies)`)
      const elapsed = Date.now() - started
      assert.isUndefined(r.error)
      assert.deepStrictEqual(calls, [{ kind: "llm_batched", prompts }])
      assert.strictEqual(
        r.stdout,
        `${JSON.stringify(prompts.map((p) => `llm:${p}`))
          .replaceAll('"', "'")
          .replaceAll(",", ", ")}\n`
      )
      // Concurrent on the host: the slowest prompt, not the 1,360 ms the latencies add up to.
      assert.isAtLeast(elapsed, 600)
      assert.isBelow(elapsed, 1250)
      const empty = yield* exec(`llm_query_batched([])`)
      assert.strictEqual(empty.stdout, "[]\n")
      const single = yield* exec(`llm_query_batched("not a list")`)
      assert.match(single.error ?? "", /TypeError: llm_query_batched: expected a list of prompts, got a single string/)
    })
  )

  it.effect("a failed host call raises RuntimeError with the HostCallError message", () =>
    Effect.gen(function* () {
      const r = yield* exec(`llm_query("fail")`)
      assert.match(r.error ?? "", /RuntimeError: quota exceeded\n$/)
      const caught = yield* exec(
        `try:\n    llm_query_batched(["ok", "fail"])\nexcept RuntimeError as e:\n    print("caught:", e)`
      )
      assert.strictEqual(caught.stdout, "caught: quota exceeded\n")
    })
  )

  it.effect("FINAL and FINAL_VAR signal a final answer", () =>
    Effect.gen(function* () {
      const f = yield* exec(`FINAL(["a", 1])\nprint("still runs")`)
      assert.strictEqual(f.stdout, "still runs\n")
      assert.deepStrictEqual(f.final, new Sandbox.FinalSignal({ source: "FINAL", value: "['a', 1]" }))
      const v = yield* exec(`result = {"k": 2}\nFINAL_VAR("result")`)
      assert.deepStrictEqual(
        v.final,
        new Sandbox.FinalSignal({ source: "FINAL_VAR", name: "result", value: "{'k': 2}" })
      )
      const missing = yield* exec(`FINAL_VAR("nope")`)
      assert.isUndefined(missing.final)
      assert.match(missing.error ?? "", /NameError: FINAL_VAR: variable 'nope' does not exist/)
      assert.isUndefined((yield* exec(`1`)).final)
    })
  )

  it.effect("SHOW_VARS, getVar and listVars see user variables only", () =>
    Effect.gen(function* () {
      const r = yield* exec(`SHOW_VARS()`)
      assert.include(r.stdout, "counter: int\n")
      assert.include(r.stdout, "result: dict\n")
      assert.notInclude(r.stdout, "llm_query")
      assert.notInclude(r.stdout, "os:")
      const { repl } = yield* Session
      assert.deepStrictEqual(yield* repl.getVar("counter"), Option.some("3"))
      assert.deepStrictEqual(yield* repl.getVar("missing"), Option.none())
      assert.deepStrictEqual(yield* repl.getVar("llm_query"), Option.none())
      const vars = yield* repl.listVars
      assert.deepInclude(vars, { name: "counter", type: "int" })
      assert.deepInclude(vars, { name: "bump", type: "function" })
      assert.notInclude(
        vars.map((v) => v.name),
        "P"
      )
    })
  )

  it.effect("a block past the time limit gets KeyboardInterrupt and keeps the REPL state", () =>
    Effect.gen(function* () {
      const started = Date.now()
      const r = yield* exec(`keep_me = "yes"\nwhile True:\n    pass`)
      const elapsed = Date.now() - started
      assert.match(r.error ?? "", /KeyboardInterrupt/)
      assert.match(r.error ?? "", /TimeoutError: the block ran longer than 3s/)
      assert.isAtLeast(elapsed, 2900)
      assert.isBelow(elapsed, 4500)
      assert.strictEqual((yield* exec(`keep_me`)).stdout, "'yes'\n")
    })
  )

  it.effect("time spent waiting on llm_query does not count against the limit", () =>
    Effect.gen(function* () {
      const r = yield* exec(
        `x = [llm_query("sleep:1100 a"), llm_query("sleep:1100 b"), llm_query("sleep:1100 c")]\nlen(x)`
      )
      assert.isUndefined(r.error)
      assert.strictEqual(r.stdout, "3\n")
      assert.isAtLeast(r.durationMs, 3300)
    })
  )

  it.effect("an interrupted block that answers while the host is not running is not killed", () =>
    Effect.gen(function* () {
      // The block stops looping at the interrupt (its limit: 3 s), ignores the
      // interrupts sent again, and answers a moment later, while this process
      // is busy in a callback run after I/O (as a loaded or stalled host would
      // be): the stall lasts until the grace timer (due 1 s after the limit)
      // has come due AND the interpreter has gone idle having written its
      // answer, so the timer fires before the waiting answer is read, however
      // slow the machine is. No wall-clock margin decides the outcome.
      const interpreter = sandboxChildren().flatMap((pid) => treePids(pid))
      const stall = yield* Effect.fork(
        Effect.sleep("3200 millis").pipe(
          Effect.zipRight(
            Effect.async<void>((resume) => {
              setImmediate(() => {
                const nap = new Int32Array(new SharedArrayBuffer(4))
                const started = Date.now()
                let quietSince = 0
                let lastTicks = -1
                while (Date.now() - started < 60_000) {
                  Atomics.wait(nap, 0, 0, 50)
                  const ticks = cpuTicks(interpreter)
                  quietSince = ticks === lastTicks ? quietSince + 1 : 0
                  lastTicks = ticks
                  // Past the grace deadline, and no CPU used for 300 ms: the block has answered.
                  if (Date.now() - started > 1_500 && quietSince >= 6) break
                }
                resume(Effect.void)
              })
            })
          )
        )
      )
      const r = yield* exec(
        [
          "import signal, time",
          "survivor = 42",
          "try:",
          "    while True:",
          "        pass",
          "except KeyboardInterrupt:",
          "    signal.signal(signal.SIGINT, signal.SIG_IGN)",
          "t = time.time()",
          "while time.time() - t < 0.5:",
          "    pass",
          "signal.signal(signal.SIGINT, signal.default_int_handler)",
          "print('answered')"
        ].join("\n")
      )
      yield* Fiber.join(stall)
      assert.isUndefined(r.error)
      assert.strictEqual(r.stdout, "answered\n")
      assert.strictEqual((yield* exec(`survivor`)).stdout, "42\n")
    })
  )

  it.effect("a memory bomb raises MemoryError inside Python; the host and the REPL survive", () =>
    Effect.gen(function* () {
      const r = yield* exec(`big = bytearray(700 * 2**20)`)
      assert.match(r.error ?? "", /MemoryError/)
      const list = yield* exec(`cells = [0] * (2**29)`)
      assert.match(list.error ?? "", /MemoryError/)
      const text = yield* exec(`s = "x" * (2**31)`)
      assert.match(text.error ?? "", /MemoryError|OverflowError/)
      const after = yield* exec(`ok = bytearray(10 * 2**20)\nlen(ok)`)
      assert.isUndefined(after.error)
      assert.strictEqual(after.stdout, `${10 * 2 ** 20}\n`)
      assert.strictEqual((yield* exec(`counter`)).stdout, "3\n")
    })
  )

  it.effect("a block ignoring the interrupt is killed: SandboxError Timeout, then a fresh interpreter", () =>
    Effect.gen(function* () {
      const { repl } = yield* Session
      const before = sandboxChildren()
      const exit = yield* Effect.exit(
        repl.exec(
          `while True:\n    try:\n        while True:\n            pass\n    except KeyboardInterrupt:\n        pass`
        )
      )
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
        assert.instanceOf(error, Sandbox.SandboxError)
        assert.strictEqual(error?.reason, "Timeout")
        assert.isTrue(error?.stateLost)
        assert.match(error?.message ?? "", /variables were lost/)
      }
      for (const pid of before) assert.isTrue(yield* exited(pid))
      // The next block runs in a fresh interpreter with the context reloaded.
      const r = yield* exec(`print(lenP(), "counter" in globals())`)
      assert.isUndefined(r.error)
      assert.strictEqual(r.stdout, `${TEXT.length} False\n`)
    })
  )

  it.effect("an interpreter killed between blocks is reported once as Crashed, then replaced", () =>
    Effect.gen(function* () {
      yield* exec(`lost = 1`)
      const pids = sandboxChildren()
      assert.isAtLeast(pids.length, 1)
      for (const pid of pids) process.kill(pid, "SIGKILL")
      for (const pid of pids) assert.isTrue(yield* exited(pid))
      // Long enough for the host to have seen the death before the next block.
      yield* Effect.sleep("500 millis")
      const { repl } = yield* Session
      const exit = yield* Effect.exit(repl.exec(`lost`))
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
        assert.strictEqual(exit.cause.error.reason, "Crashed")
        assert.isTrue(exit.cause.error.stateLost)
      }
      const r = yield* exec(`print("lost" in globals(), peek(9))`)
      assert.strictEqual(r.stdout, "False The quick\n")
    })
  )
})

describe("PythonSandbox lifecycle", () => {
  it.live(
    "the child process dies when the session scope closes (success, failure, interruption)",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* PythonSandbox.make()
        const { host } = recordingHost()
        const openAndSee = Effect.gen(function* () {
          const before = new Set(sandboxChildren())
          const repl = yield* sandbox.open({ context: { text: "x" }, host })
          const mine = sandboxChildren().filter((pid) => !before.has(pid))
          assert.strictEqual(mine.length, 1)
          return { repl, pid: mine[0] ?? -1 }
        })
        // success
        const scope1 = yield* Scope.make()
        const a = yield* openAndSee.pipe(Scope.extend(scope1))
        assert.strictEqual((yield* a.repl.exec(`1 + 1`)).stdout, "2\n")
        yield* Scope.close(scope1, Exit.void)
        // Closing the scope returns only once the process has exited and been reaped: no waiting here.
        assert.isFalse(processExists(a.pid), `interpreter ${a.pid} still exists after its scope closed`)
        const closed = yield* Effect.exit(a.repl.exec(`1`))
        assert.isTrue(Exit.isFailure(closed))
        if (Exit.isFailure(closed) && closed.cause._tag === "Fail")
          assert.strictEqual(closed.cause.error.reason, "Closed")
        // failure and interruption while a block runs
        const scope2 = yield* Scope.make()
        const b = yield* openAndSee.pipe(Scope.extend(scope2))
        const fiber = yield* Effect.fork(b.repl.exec(`while True: pass`))
        yield* Effect.sleep(Duration.millis(200))
        yield* Scope.close(scope2, Exit.fail("boom"))
        assert.isFalse(processExists(b.pid), `interpreter ${b.pid} still exists after its scope closed`)
        yield* fiber.await
        // interruption of the fiber running a block: the exec's own cleanup kills and waits too
        const scope3 = yield* Scope.make()
        const c = yield* openAndSee.pipe(Scope.extend(scope3))
        const running = yield* Effect.fork(c.repl.exec(`while True: pass`))
        yield* Effect.sleep(Duration.millis(200))
        yield* Fiber.interrupt(running)
        assert.isFalse(processExists(c.pid), `interpreter ${c.pid} still exists after its block was interrupted`)
        yield* Scope.close(scope3, Exit.void)
        for (const pid of [a.pid, b.pid, c.pid]) assert.isFalse(processExists(pid))
      }),
    120_000
  )

  it.live(
    "the context goes in once; documents mode; a 1 MB unicode context round-trips",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* PythonSandbox.make()
        const docs = ["première ligne 😀", "second doc", "x".repeat(1_000_000)]
        const text = docs.join("\n")
        const repl = yield* sandbox.open({ context: { text, documents: docs }, host: recordingHost().host })
        const r = yield* repl.exec(`print(type(context).__name__, len(context), len(P), context[0], P[:8])`)
        assert.strictEqual(r.stdout, `list 3 ${[...text].length} première ligne 😀 première\n`)
        const hits = yield* repl.exec(`find("😀"), chunk(4)[:2]`)
        assert.strictEqual(hits.stdout, "([15], ['prem', 'ière'])\n")
      }).pipe(Effect.scoped),
    120_000
  )
})

describe("PythonSandbox failures around a session", () => {
  it.live(
    "a context past the memory limit fails the open with the interpreter's reason (it does not hang)",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* PythonSandbox.make({ memoryMb: 64 })
        const exit = yield* Effect.exit(
          Effect.scoped(sandbox.open({ context: { text: "x".repeat(80 * 1024 * 1024) }, host: recordingHost().host }))
        )
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
        assert.isTrue(Option.isSome(error))
        const failure = Option.getOrThrow(error)
        assert.strictEqual(failure.reason, "Protocol")
        assert.match(failure.message, /Loading the context failed: [\s\S]*MemoryError/)
      }).pipe(Effect.timeout("60 seconds")),
    90_000
  )

  for (const [block, what] of [
    ["loop", "an endless loop"],
    ["wait", "a host call never answered"]
  ] as const) {
    it.live(
      `the interpreter process does not outlive its host, even in the middle of ${what}`,
      () =>
        Effect.gen(function* () {
          // A host in its own process: it opens a session, prints the interpreter's pid and runs the block.
          const script = path.join(import.meta.dirname, "fixtures", "hostThatDies.ts")
          const root = path.resolve(import.meta.dirname, "../../..")
          const host = spawn(process.execPath, ["--import", "tsx", script, block], {
            cwd: root,
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
          yield* Effect.sleep("500 millis")
          assert.isTrue(processExists(pid), "the interpreter runs the block")
          host.kill("SIGKILL")
          const deadline = Date.now() + 10_000
          while (processExists(pid) && Date.now() < deadline) yield* Effect.sleep("100 millis")
          assert.isFalse(processExists(pid), `interpreter ${pid} outlived its host`)
        }),
      90_000
    )
  }
})

describe("PythonSandbox memory snapshot", () => {
  /** Open a session, run one block, and collect what was logged meanwhile. */
  const runLogged = (sandbox: Sandbox.Sandbox.Service) =>
    Effect.gen(function* () {
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => {
        logs.push(String(Array.isArray(message) ? message.join(" ") : message))
      })
      const { host } = recordingHost()
      const result = yield* Effect.scoped(
        Effect.flatMap(sandbox.open({ context: { text: "snap" }, host }), (repl) =>
          repl.exec(
            `import sys\nprint(P, "js" in sys.modules, "pyodide_js" in sys.modules, "_rlm_repl" in sys.modules)`
          )
        )
      ).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      return { stdout: result.stdout, logs }
    })

  it.live(
    "the snapshot is cached in the given folder (0600), beside the 3 most recently used of other versions; a corrupt one falls back to a plain load, is deleted and said so",
    () =>
      Effect.gen(function* () {
        const dir = mkdtempSync(path.join(os.tmpdir(), "rlm-snapshot-test-"))
        try {
          // Snapshots of other versions, used 1-5 hours ago: the 3 most recent are kept.
          const others = [1, 2, 3, 4, 5].map((hours) => {
            const name = `pyodide-snapshot-${String(hours).repeat(32)}.bin`
            writeFileSync(path.join(dir, name), "other version")
            const then = new Date(Date.now() - hours * 3_600_000)
            utimesSync(path.join(dir, name), then, then)
            return name
          })
          // Built in a child, written to the folder, then restored.
          const first = yield* runLogged(yield* PythonSandbox.make({ snapshotDir: dir }))
          assert.deepStrictEqual(first, { stdout: "snap False False False\n", logs: [] })
          const files = readdirSync(dir).filter((f) => f.endsWith(".bin") && !others.includes(f))
          assert.strictEqual(files.length, 1)
          assert.deepStrictEqual(
            readdirSync(dir)
              .filter((f) => others.includes(f))
              .sort(),
            others.slice(0, 3).sort()
          )
          const file = path.join(dir, files[0] ?? "")
          assert.strictEqual(statSync(file).mode & 0o777, 0o600)
          // Sparse: the zero pages of the interpreter's memory are not stored.
          const bytes = readFileSync(file)
          assert.strictEqual(bytes.subarray(0, 8).toString("latin1"), "RLMSNAP1")
          assert.isBelow(bytes.length, 24 + bytes.readUInt32LE(8) + bytes.readUInt32LE(12))
          // Corrupt it past its header and tables: the host's cheap check and
          // the child's table check pass, Pyodide's own check of the prefix fails.
          const tables = (bytes.readUInt32LE(16) + bytes.readUInt32LE(20)) * 8
          bytes.fill(0, 24 + tables)
          writeFileSync(file, bytes)
          const second = yield* runLogged(yield* PythonSandbox.make({ snapshotDir: dir }))
          assert.strictEqual(second.stdout, "snap False False False\n")
          assert.isFalse(existsSync(file), "a snapshot that failed to restore is deleted")
          assert.strictEqual(second.logs.length, 1)
          assert.match(second.logs[0] ?? "", /start-up snapshot did not restore \(failed: Snapshot has invalid magic/)
        } finally {
          rmSync(dir, { recursive: true, force: true })
        }
      }),
    180_000
  )

  it.live(
    "without a cache folder the snapshot is kept in memory and sent to each child on its stdin",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* PythonSandbox.make({ snapshotDir: false })
        const first = yield* runLogged(sandbox)
        const second = yield* runLogged(sandbox)
        assert.deepStrictEqual(
          [first, second],
          [
            { stdout: "snap False False False\n", logs: [] },
            { stdout: "snap False False False\n", logs: [] }
          ]
        )
      }),
    180_000
  )
})

describe("PythonSandbox.layerPool", () => {
  /** A session's first look at a pooled interpreter: nothing of its warm-up. */
  const seesNothingOfTheWarmUp = (text: string) =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const { host } = recordingHost()
      const repl = yield* sandbox.open({ context: { text }, host })
      // The first block: no output of the warm-up's blocks, no variable of theirs.
      const first = yield* repl.exec(`SHOW_VARS()`)
      assert.strictEqual(first.stdout, "No user variables.\n")
      assert.strictEqual(first.stderr, "")
      assert.isUndefined(first.error)
      assert.isUndefined(first.final)
      assert.deepStrictEqual(yield* repl.listVars, [])
      for (const name of ["x", "s", "i", "y", "d"]) {
        assert.deepStrictEqual(yield* repl.getVar(name), Option.none())
      }
      const names = yield* repl.exec(
        `g = dict(globals())\nprint([n for n in ("x", "s", "i", "y", "d") if n in g], sorted(n for n in g if not n.startswith("__") and not callable(g[n])), P == context, P)\ndel g`
      )
      assert.strictEqual(names.stdout, `[] ['P', 'context'] True ${text}\n`)
      assert.isUndefined(names.error)
      // And the REPL works as usual from there.
      const r = yield* repl.exec(`x = 41\nx + 1`)
      assert.strictEqual(r.stdout, "42\n")
      assert.deepStrictEqual(yield* repl.listVars, [{ name: "x", type: "int" }])
    }).pipe(Effect.scoped)

  it.live(
    "a pooled interpreter runs a warm-up while it waits; a session sees nothing of it, taken during or after it",
    () =>
      Effect.gen(function* () {
        // The pool's interpreters are started with the warm-up (and V8's default tier-up budget).
        const cmdlines = () => sandboxChildren().map((pid) => readFileSync(`/proc/${pid}/cmdline`, "utf8"))
        // Taken as soon as the pool has it: its warm-up has just begun, the session's first request stops it.
        yield* seesNothingOfTheWarmUp("first session")
        // Its replacement has had the time to finish the warm-up (or most of it) before it is taken.
        yield* Effect.sleep(Duration.seconds(6))
        const lines = cmdlines()
        assert.isTrue(
          lines.some((line) => line.includes('"warmUp":true') && !line.includes("--wasm-tiering-budget")),
          lines.join("\n")
        )
        yield* seesNothingOfTheWarmUp("second session")
      }).pipe(Effect.provide(PythonSandbox.layerPool({ size: 1 }))),
    180_000
  )

  it.live(
    "a taken interpreter is replaced once its session ends, another session opens, or `replaceAfter` passes",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const { host } = recordingHost()
        const count = () => sandboxChildren().length
        /** Waits (up to 60 s) until the pool has started `n` interpreters in all, alive or not. */
        const started = new Set<number>()
        const waitForStarted = (n: number) =>
          Effect.gen(function* () {
            for (let i = 0; i < 600 && started.size < n; i++) {
              for (const pid of sandboxChildren()) started.add(pid)
              if (started.size >= n) break
              yield* Effect.sleep(Duration.millis(100))
            }
            return started.size
          })
        assert.strictEqual(yield* waitForStarted(1), 1)
        // Session A takes the only interpreter; no replacement starts while it runs its first blocks.
        const scopeA = yield* Scope.make()
        const a = yield* sandbox.open({ context: { text: "A" }, host }).pipe(Scope.extend(scopeA))
        assert.strictEqual((yield* a.exec("print(P)")).stdout, "A\n")
        yield* Effect.sleep(Duration.seconds(2))
        for (const pid of sandboxChildren()) started.add(pid)
        assert.strictEqual(started.size, 1, "no replacement while session A is young")
        // A ends: its replacement starts then.
        yield* Scope.close(scopeA, Exit.void)
        assert.strictEqual(yield* waitForStarted(2), 2)
        assert.strictEqual(count(), 1)
        // Session B takes that one; C opening needs another: B's replacement starts for C at once.
        const b = yield* sandbox.open({ context: { text: "B" }, host })
        const c = yield* sandbox.open({ context: { text: "C" }, host })
        assert.strictEqual(yield* waitForStarted(3), 3)
        assert.strictEqual((yield* b.exec("print(P)")).stdout, "B\n")
        assert.strictEqual((yield* c.exec("print(P)")).stdout, "C\n")
        assert.strictEqual(started.size, 3)
      }).pipe(Effect.scoped, Effect.provide(PythonSandbox.layerPool({ size: 1, replaceAfter: Duration.minutes(5) }))),
    180_000
  )

  it.live(
    "a session that outlives the pool's layer: the layer closes at once, the session still runs, its interpreter ends with it",
    () =>
      Effect.gen(function* () {
        const { host } = recordingHost()
        const outer = yield* Scope.make()
        const repl = yield* Sandbox.Sandbox.pipe(
          Effect.flatMap((sandbox) => sandbox.open({ context: { text: "kept" }, host })),
          Scope.extend(outer),
          Effect.provide(PythonSandbox.layerPool({ size: 1, replaceAfter: Duration.minutes(5) })),
          Effect.timeoutFail({
            duration: Duration.seconds(30),
            onTimeout: () => new Error("the pool's layer did not close")
          })
        )
        // The layer is closed: its waiting interpreter is gone, the session's is not.
        const alive = sandboxChildren()
        assert.strictEqual(alive.length, 1)
        assert.strictEqual((yield* repl.exec("print(P)")).stdout, "kept\n")
        yield* Scope.close(outer, Exit.void)
        assert.isFalse(processExists(alive[0] as number))
      }),
    180_000
  )

  it.live(
    "a pool whose layer has closed opens no session: a typed Closed error, and an outliving session keeps its interpreter",
    () =>
      Effect.gen(function* () {
        const { host } = recordingHost()
        const outer = yield* Scope.make()
        const layerScope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(
          PythonSandbox.layerPool({ size: 1, replaceAfter: Duration.minutes(5) }),
          layerScope
        )
        const sandbox = Context.get(context, Sandbox.Sandbox)
        const kept = yield* sandbox.open({ context: { text: "kept" }, host }).pipe(Scope.extend(outer))
        yield* Scope.close(layerScope, Exit.void)
        // The session's interpreter went back to the closed pool: it is handed to nobody.
        const refused = yield* sandbox.open({ context: { text: "late" }, host }).pipe(Effect.scoped, Effect.flip)
        assert.strictEqual(refused._tag, "SandboxError")
        assert.strictEqual(refused.reason, "Closed")
        assert.strictEqual((yield* kept.exec("print(P)")).stdout, "kept\n")
        yield* Scope.close(outer, Exit.void)
      }).pipe(Effect.timeoutFail({ duration: Duration.seconds(60), onTimeout: () => new Error("open or close hung") })),
    180_000
  )

  it.live(
    "`replaceAfter` passed: the replacement starts while the session is still open",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const { host } = recordingHost()
        const first = sandboxChildren()
        const a = yield* sandbox.open({ context: { text: "A" }, host })
        assert.strictEqual((yield* a.exec("print(P)")).stdout, "A\n")
        const taken = sandboxChildren()
        let now = taken
        for (let i = 0; i < 300 && now.length < 2; i++) {
          yield* Effect.sleep(Duration.millis(100))
          now = sandboxChildren()
        }
        // The session's interpreter and, beside it, its replacement.
        assert.strictEqual(now.length, 2, `pool processes ${first} -> ${taken} -> ${now}`)
        assert.isTrue(taken.every((pid) => now.includes(pid)))
      }).pipe(Effect.scoped, Effect.provide(PythonSandbox.layerPool({ size: 1, replaceAfter: Duration.millis(500) }))),
    180_000
  )

  it.live(
    "an interpreter of the plain layer runs no warm-up",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const { host } = recordingHost()
        yield* sandbox.open({ context: { text: "plain" }, host })
        const cmdlines = sandboxChildren().map((pid) => readFileSync(`/proc/${pid}/cmdline`, "utf8"))
        assert.isAtLeast(cmdlines.length, 1)
        for (const line of cmdlines) {
          assert.notInclude(line, "warmUp")
          assert.include(line, "--wasm-tiering-budget=20000000")
        }
      }).pipe(Effect.scoped, Effect.provide(PythonSandbox.layer())),
    180_000
  )

  it.live(
    "a pooled interpreter serves one session: the next one skips the cold start and sees nothing of the first",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const { host } = recordingHost()
        const coldStarted = Date.now()
        const scopeA = yield* Scope.make()
        const a = yield* sandbox.open({ context: { text: "first session" }, host }).pipe(Scope.extend(scopeA))
        const coldMs = Date.now() - coldStarted
        const pidsA = sandboxChildren()
        const planted = yield* a.exec(
          `leak = "from A"\nimport builtins, sys\nbuiltins.planted = 1\nsys.modules["json"].planted = 1\nopen("/tmp/a.txt", "w").write("A")`
        )
        assert.isUndefined(planted.error)
        const before = new Set(sandboxChildren())
        yield* Scope.close(scopeA, Exit.void)
        // A's interpreter is killed (and reaped before close returns), not returned to the pool; the others live on.
        assert.strictEqual([...before].filter((pid) => !processExists(pid)).length, 1)
        const gone = pidsA.filter((pid) => !sandboxChildren().includes(pid))
        assert.strictEqual(gone.length, 1, `pool processes ${pidsA} -> ${sandboxChildren()}`)
        // The second pooled interpreter started with the first one; give it time to finish loading.
        yield* Effect.sleep(Duration.millis(Math.max(3000, coldMs)))
        const warmStarted = Date.now()
        const b = yield* sandbox.open({ context: { text: "second session" }, host })
        const warmMs = Date.now() - warmStarted
        assert.isBelow(warmMs, 1500, `warm open took ${warmMs} ms (cold: ${coldMs} ms)`)
        const r = yield* b.exec(
          `import builtins, json, os\nprint(P, "leak" in globals(), hasattr(builtins, "planted"), hasattr(json, "planted"), os.path.exists("/tmp/a.txt"))`
        )
        assert.strictEqual(r.stdout, "second session False False False False\n")
        return sandboxChildren()
      }).pipe(
        Effect.scoped,
        Effect.provide(PythonSandbox.layerPool({ size: 2 })),
        // Closing the pool's layer returns only once every interpreter it started has exited.
        Effect.tap((pids) =>
          Effect.sync(() => {
            assert.isAtLeast(pids.length, 2)
            for (const pid of pids) assert.isFalse(processExists(pid), `pooled interpreter ${pid} outlived the layer`)
          })
        )
      ),
    180_000
  )
})
