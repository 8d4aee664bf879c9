import { spawn, spawnSync } from "node:child_process"
import { chmodSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import * as Cli from "@rlm-runtime/cli/Cli"
import * as TerminalText from "@rlm-runtime/cli/TerminalText"
import * as Trace from "@rlm-runtime/trace/Trace"
import { Console, Effect, Logger } from "effect"
import { captureConsole, runCli, SEED_CONTEXT, tempFiles } from "./utils.js"

const ESC = "\x1b"
const BEL = "\x07"

/** An answer full of what a hostile context would make the model print, ending in a cut-short sequence. */
const rawAnswer = [
  "Answer: 42",
  `${ESC}]0;pwned${BEL}`, // window title
  `${ESC}[2J${ESC}[H`, // clear screen, cursor home
  `${ESC}]52;c;cm0gLXJmIH4vKg==${BEL}`, // OSC 52: write the clipboard
  "\x9b2J", // 8-bit CSI: clear screen
  "\x9d2;pwned\x9c", // 8-bit OSC title
  " über 東京 🚀\tok\nline 2 ",
  "\u202eevil\u202c", // bidi override
  "\rover", // carriage return
  `${ESC}]0;cut short` // no terminator: to the end
].join("")
const cleanAnswer = "Answer: 42 über 東京 🚀\tok\nline 2 evilover"

/** A JavaScript REPL block assigning `answer`, then FINAL_VAR. */
const answerScript = (answer: string) =>
  JSON.stringify({ script: [`\`\`\`repl\nconst answer = ${JSON.stringify(answer)}\n\`\`\``, "FINAL_VAR(answer)"] })

const files = tempFiles({
  "ctx.txt": SEED_CONTEXT,
  "answer.json": answerScript(rawAnswer),
  // The model's reply quoted back in the feedback of a progress line (8-bit CSI and an OSC title).
  "feedback.json": JSON.stringify({ script: ["FINAL_VAR: \x9b2J \x9d0;pwned\x9c", "FINAL(done)"] }),
  "plain.json": JSON.stringify({ script: ["FINAL(plain answer)"] })
})

const run = (...args: Array<string>) =>
  runCli(["run", "--context", files.path("ctx.txt"), "--query", "Q", "--sandbox", "js", ...args])

const assertSafe = (text: string, what: string) =>
  assert.isTrue(TerminalText.isSafe(text), `${what} holds a control character: ${JSON.stringify(text)}`)

describe("terminal safety (in-process)", () => {
  it.live("stdout not a terminal: the answer's exact bytes on stdout; stderr has no control sequence", () =>
    Effect.gen(function* () {
      const r = yield* run("--fake", files.path("answer.json")).pipe(Effect.provideService(Cli.StdoutIsTerminal, false))
      assert.strictEqual(r.code, 0, r.stderr)
      assert.strictEqual(r.stdout, `${rawAnswer}\n`)
      assertSafe(r.stderr, "stderr")
      assert.match(r.stderr, /final answer \(FINAL_VAR, \d+ chars\)/)
    })
  )

  it.live("stdout a terminal: the answer is sanitized exactly; --raw keeps its bytes", () =>
    Effect.gen(function* () {
      const onTty = yield* run("--fake", files.path("answer.json")).pipe(
        Effect.provideService(Cli.StdoutIsTerminal, true)
      )
      assert.strictEqual(onTty.code, 0, onTty.stderr)
      assert.strictEqual(onTty.stdout, `${cleanAnswer}\n`)
      assertSafe(onTty.stderr, "stderr")
      const raw = yield* run("--fake", files.path("answer.json"), "--raw").pipe(
        Effect.provideService(Cli.StdoutIsTerminal, true)
      )
      assert.strictEqual(raw.code, 0, raw.stderr)
      assert.strictEqual(raw.stdout, `${rawAnswer}\n`)
      assertSafe(raw.stderr, "stderr with --raw (which is for stdout only)")
    })
  )

  it.live("a progress line quoting the model's reply carries none of its control sequences", () =>
    Effect.gen(function* () {
      const tracePath = files.path("feedback.trace.json")
      const r = yield* run("--fake", files.path("feedback.json"), "--trace", tracePath)
      assert.strictEqual(r.code, 0, r.stderr)
      assert.strictEqual(r.stdout, "done\n")
      assertSafe(r.stderr, "stderr")
      // `\x9b2J` (a whole CSI) and the OSC go; the space between them stays.
      assert.match(r.stderr, /^rlm: step 1: .* told the model: FINAL_VAR needs a variable name, got " "\.$/m)
      // The trace keeps what the model wrote.
      const trace = yield* Effect.orDie(Trace.decodeJson(readFileSync(tracePath, "utf8")))
      const step = trace.events.find((e) => e._tag === "StepCompleted")
      assert.include(step?._tag === "StepCompleted" ? step.feedback : "", "\x9b2J")
    })
  )

  it.live("an `rlm:` error line carrying a provider's text has no control sequence", () =>
    Effect.gen(function* () {
      const url = yield* Effect.acquireRelease(
        Effect.async<{ readonly url: string; readonly close: () => void }>((resume) => {
          const s = createServer((req, res) => {
            req.resume()
            req.on("end", () => {
              res.statusCode = 401
              res.setHeader("content-type", "text/plain")
              res.end(`bad key${ESC}]0;pwned${BEL}${ESC}[2J\x9b2J\x9d52;c;eA==\x9c\r gone`)
            })
          })
          s.listen(0, "127.0.0.1", () =>
            resume(
              Effect.succeed({
                url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`,
                close: () => s.close()
              })
            )
          )
        }),
        (s) => Effect.sync(s.close)
      )
      const r = yield* run("--adapter", "openai-compat", "--base-url", url.url, "--model", "m")
      assert.strictEqual(r.code, 1, r.stderr)
      assert.strictEqual(r.stdout, "")
      const error = r.stderr.split("\n").find((line) => line.startsWith("rlm: ") && line.includes("401"))
      assert.isDefined(error, r.stderr)
      assert.include(error, "bad key gone")
      assertSafe(r.stderr, "stderr")
    }).pipe(Effect.scoped)
  )

  it.effect("every stderr method (and the logger through it) is sanitized; stdout is left alone", () =>
    Effect.gen(function* () {
      const io = captureConsole()
      const attack = `x${ESC}]0;pwned${BEL}\x9b2Jy`
      yield* Effect.gen(function* () {
        yield* Console.error(attack, 1)
        yield* Console.warn(attack)
        yield* Console.debug(attack)
        yield* Effect.flatMap(Effect.console, (console) => Effect.sync(() => console.unsafe.error(attack)))
        yield* Effect.logError(attack)
        yield* Console.log(attack)
      }).pipe(
        Effect.withConsole(Cli.sanitizedStderr(io.console)),
        Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger)))
      )
      assertSafe(io.stderr(), "stderr")
      assert.include(io.stderr(), "xy 1\nxy\nxy\n")
      assert.match(io.stderr(), /level=ERROR .*message=xy/)
      assert.strictEqual(io.stdout(), `${attack}\n`)
    })
  )
})

describe("the first progress line says the isolation; --isolation", () => {
  it.live("--isolation process: `isolation: process` on the first line", () =>
    Effect.gen(function* () {
      const r = yield* run("--fake", files.path("plain.json"), "--isolation", "process")
      assert.strictEqual(r.code, 0, r.stderr)
      assert.strictEqual(r.stdout, "plain answer\n")
      assert.strictEqual(
        r.stderr.split("\n")[0],
        `rlm: run started: model fake, javascript sandbox, isolation: process, context ${SEED_CONTEXT.length} chars`
      )
    })
  )

  it.live("default (auto): the first line names the isolation the sandbox got", () =>
    Effect.gen(function* () {
      const r = yield* run("--fake", files.path("plain.json"))
      assert.strictEqual(r.code, 0, r.stderr)
      assert.match(r.stderr.split("\n")[0] ?? "", /^rlm: run started: .*, isolation: (namespace|process), context/)
    })
  )

  it.live(
    "--isolation strict: the run goes behind the OS wall, or refuses with exit 4 and the advice; never the process wall",
    () =>
      Effect.gen(function* () {
        const r = yield* run("--fake", files.path("plain.json"), "--isolation", "strict")
        if (r.code === 0) {
          assert.strictEqual(r.stdout, "plain answer\n")
          assert.match(r.stderr.split("\n")[0] ?? "", /, isolation: namespace, /)
        } else {
          assert.strictEqual(r.code, 4, r.stderr)
          assert.strictEqual(r.stdout, "")
          assert.match(
            r.stderr,
            /^rlm: .*--isolation strict needs the OS wall: bubblewrap .*apt-get install bubblewrap/m
          )
          assert.notMatch(r.stderr, /isolation: process, context/)
        }
      })
  )
})

describe("--trace files are 0600", () => {
  it.live("a new trace and one that existed with 0644, under umask 0", () =>
    Effect.gen(function* () {
      const before = process.umask(0)
      try {
        const fresh = files.path("fresh.trace.json")
        const old = files.path("old.trace.json")
        writeFileSync(old, "{}", { mode: 0o644 })
        chmodSync(old, 0o644)
        for (const path of [fresh, old]) {
          const r = yield* run("--fake", files.path("plain.json"), "--trace", path)
          assert.strictEqual(r.code, 0, r.stderr)
          assert.strictEqual(statSync(path).mode & 0o777, 0o600, path)
          const trace = yield* Effect.orDie(Trace.decodeJson(readFileSync(path, "utf8")))
          assert.strictEqual(trace.events.at(-1)?._tag, "RunFinished")
        }
      } finally {
        process.umask(before)
      }
    })
  )
})

// ---------------------------------------------------------------------------
// the real executable, its stdout a pseudo-terminal
// ---------------------------------------------------------------------------

const root = fileURLToPath(new URL("../../..", import.meta.url))
const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))
const hasScript = spawnSync("script", ["--version"]).status === 0
const quote = (arg: string) => `'${arg.replaceAll("'", "'\\''")}'`

/**
 * `rlm <args>` with its stdout on a pseudo-terminal: `script` (util-linux) runs
 * the command on a new pty and copies what it writes there to its own stdout.
 * stderr goes to a file, so the pty shows the answer alone. The tty turns each
 * `\n` into `\r\n` (onlcr).
 */
const rlmOnTty = (args: ReadonlyArray<string>) =>
  Effect.async<{ code: number | null; tty: string; stderr: string }>((resume) => {
    const stderrPath = files.path(`stderr-${Math.random().toString(36).slice(2)}.txt`)
    const command = [process.execPath, "--import", "tsx", "--conditions=@rlm-runtime/source", bin, ...args]
      .map(quote)
      .join(" ")
    const child = spawn("script", ["-qfec", `${command} 2>${quote(stderrPath)}`, "/dev/null"], {
      cwd: root,
      stdio: ["pipe", "pipe", "pipe"],
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", TERM: "xterm" }
    })
    let tty = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (tty += d))
    child.stderr.resume()
    child.on("close", (code) => resume(Effect.succeed({ code, tty, stderr: readFileSync(stderrPath, "utf8") })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const onTty = (text: string) => text.replaceAll("\n", "\r\n")

describe.skipIf(!hasScript)("rlm on a real terminal (script from util-linux)", () => {
  const runArgs = ["run", "--context", files.path("ctx.txt"), "--query", "Q", "--sandbox", "js"]

  it.live(
    "stdout a TTY: the answer is sanitized; stderr has no control sequence",
    () =>
      Effect.gen(function* () {
        const r = yield* rlmOnTty([...runArgs, "--fake", files.path("answer.json"), "--isolation", "process"])
        assert.strictEqual(r.code, 0, r.stderr)
        assert.strictEqual(r.tty, onTty(`${cleanAnswer}\n`))
        assertSafe(r.stderr, "stderr")
        assert.match(r.stderr, /^rlm: run started: model fake, javascript sandbox, isolation: process, /)
      }),
    120_000
  )

  it.live(
    "stdout a TTY with --raw: the answer's exact bytes",
    () =>
      Effect.gen(function* () {
        const r = yield* rlmOnTty([...runArgs, "--fake", files.path("answer.json"), "--raw"])
        assert.strictEqual(r.code, 0, r.stderr)
        assert.strictEqual(r.tty, onTty(`${rawAnswer}\n`))
        assertSafe(r.stderr, "stderr")
      }),
    120_000
  )
})
