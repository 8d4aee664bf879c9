import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { inspect } from "node:util"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Cli from "@rlm-runtime/cli/Cli"
import { Console, Effect, Exit } from "effect"

const format = (args: ReadonlyArray<unknown>) => args.map((a) => (typeof a === "string" ? a : inspect(a))).join(" ")

/** A Console writing `log`/`info` to `stdout` and every other level to `stderr`, in memory. */
export const captureConsole = () => {
  const stdout: Array<string> = []
  const stderr: Array<string> = []
  const out = (...args: ReadonlyArray<unknown>) => void stdout.push(format(args))
  const err = (...args: ReadonlyArray<unknown>) => void stderr.push(format(args))
  const noop = () => {}
  const unsafe: Console.UnsafeConsole = {
    assert: noop,
    clear: noop,
    count: noop,
    countReset: noop,
    debug: err,
    dir: err,
    dirxml: err,
    error: err,
    group: noop,
    groupCollapsed: noop,
    groupEnd: noop,
    info: out,
    log: out,
    table: out,
    time: noop,
    timeEnd: noop,
    timeLog: noop,
    trace: err,
    warn: err
  }
  const lift =
    (f: (...args: ReadonlyArray<any>) => void) =>
    (...args: ReadonlyArray<any>) =>
      Effect.sync(() => f(...args))
  const console: Console.Console = {
    [Console.TypeId]: Console.TypeId,
    assert: lift(noop),
    clear: Effect.void,
    count: lift(noop),
    countReset: lift(noop),
    debug: lift(err),
    dir: lift(err),
    dirxml: lift(err),
    error: lift(err),
    group: lift(noop),
    groupEnd: Effect.void,
    info: lift(out),
    log: lift(out),
    table: lift(out),
    time: lift(noop),
    timeEnd: lift(noop),
    timeLog: lift(noop),
    trace: lift(err),
    warn: lift(err),
    unsafe
  }
  return {
    console,
    /** stdout as a process would have written it (`Console.log` adds the newline). */
    stdout: () => stdout.map((line) => `${line}\n`).join(""),
    stderr: () => stderr.map((line) => `${line}\n`).join("")
  }
}

/** Run `rlm <args>` in-process; resolves with the exit code and what was printed. */
export const runCli = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const io = captureConsole()
    const exit = yield* Cli.run(args).pipe(
      Effect.withConsole(io.console),
      Effect.provide(NodeContext.layer),
      Effect.exit
    )
    return { exit, code: Cli.exitCode(exit), stdout: io.stdout(), stderr: io.stderr(), isSuccess: Exit.isSuccess(exit) }
  })

/** A fresh temporary directory with the given files. */
export const tempFiles = (files: Record<string, string>) => {
  const dir = mkdtempSync(join(tmpdir(), "rlm-cli-"))
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content)
  return { dir, path: (name: string) => join(dir, name) }
}

export const SEED_CONTEXT = "RLMs treat long prompts as environment state."

export const seedScript = (language: "python" | "js") =>
  JSON.stringify({
    script: [
      language === "python"
        ? "snippet = peek(80)\nsummary = llm_query(f'Summarize: {snippet}')\nanswer = summary"
        : // biome-ignore lint/suspicious/noTemplateCurlyInString: this is JavaScript source for the sandbox
          "const snippet = peek(80)\nconst summary = llm_query(`Summarize: ${snippet}`)\nconst answer = summary",
      "FINAL_VAR: answer"
    ],
    rules: [{ match: "Summarize", reply: "fake summary" }]
  })

/** The repository's root, where the real executable runs. */
export const repoRoot = fileURLToPath(new URL("../../..", import.meta.url))

const binSource = fileURLToPath(new URL("../src/bin.ts", import.meta.url))

/** What a real `rlm` process did. */
export interface Spawned {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Run the real executable in a child process (`node --import tsx bin.ts
 * <args>`, from the repository's root, with only `PATH` and `HOME` of this
 * environment plus `env`). `onStderr` sees all of stderr so far at each chunk,
 * `poll` is called every 25 ms; either may signal the child. Interrupting the
 * effect SIGKILLs it.
 */
export const spawnRlm = (
  args: ReadonlyArray<string>,
  options: {
    readonly stdin?: string | undefined
    readonly env?: Record<string, string> | undefined
    readonly onStderr?: ((stderr: string, child: ChildProcessWithoutNullStreams) => void) | undefined
    readonly poll?: ((child: ChildProcessWithoutNullStreams) => void) | undefined
  } = {}
) =>
  Effect.async<Spawned>((resume) => {
    const child = spawn(process.execPath, ["--import", "tsx", "--conditions=@rlm-runtime/source", binSource, ...args], {
      cwd: repoRoot,
      stdio: ["pipe", "pipe", "pipe"],
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...options.env }
    })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d
      options.onStderr?.(stderr, child)
    })
    const poll = options.poll
    const timer = poll === undefined ? undefined : setInterval(() => poll(child), 25)
    child.on("close", (code, signal) => {
      if (timer !== undefined) clearInterval(timer)
      resume(Effect.succeed({ code, signal, stdout, stderr }))
    })
    child.stdin.end(options.stdin ?? "")
    return Effect.sync(() => {
      if (timer !== undefined) clearInterval(timer)
      child.kill("SIGKILL")
    })
  })
