/**
 * Shared helpers for the Python sandbox tests: a recording fake host, a
 * session Layer (one interpreter shared by the tests of a file), and a way to
 * see the sandbox child processes of this test process.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { Context, Duration, Effect, Layer } from "effect"
import * as PythonSandbox from "../src/PythonSandbox.js"
import * as Sandbox from "../src/Sandbox.js"

/** Set in the HOST environment; no sandbox may ever see it. */
export const SECRET = "s3cr3t-host-token-5f0c9a"
process.env.SECRET_TEST_TOKEN = SECRET

export interface Recorded {
  readonly kind: "llm" | "llm_batched" | "rlm" | "rlm_batched"
  readonly prompts: ReadonlyArray<string>
}

/**
 * `llm_query(p)` answers `llm:p`; a prompt `fail` fails with a HostCallError;
 * a prompt starting `sleep:N ` waits N ms first.
 */
export const recordingHost = () => {
  const calls: Array<Recorded> = []
  const answer = (prefix: string) => (prompt: string) =>
    Effect.gen(function* () {
      if (prompt === "fail") return yield* Effect.fail(new Sandbox.HostCallError({ message: "quota exceeded" }))
      const sleep = /^sleep:(\d+)/.exec(prompt)
      if (sleep) yield* Effect.sleep(Duration.millis(Number(sleep[1])))
      return `${prefix}:${prompt}`
    })
  const record = (kind: Recorded["kind"], prompts: ReadonlyArray<string>) =>
    Effect.sync(() => {
      calls.push({ kind, prompts: [...prompts] })
    })
  const host: Sandbox.HostFunctions = {
    llmQuery: (p) => Effect.zipRight(record("llm", [p]), answer("llm")(p)),
    rlmQuery: (p) => Effect.zipRight(record("rlm", [p]), answer("rlm")(p)),
    llmQueryBatched: (ps) =>
      Effect.zipRight(record("llm_batched", ps), Effect.forEach(ps, answer("llm"), { concurrency: "unbounded" })),
    rlmQueryBatched: (ps) =>
      Effect.zipRight(record("rlm_batched", ps), Effect.forEach(ps, answer("rlm"), { concurrency: "unbounded" }))
  }
  return { calls, host }
}

export class Session extends Context.Tag("test/PythonSession")<
  Session,
  { readonly repl: Sandbox.Repl; readonly calls: Array<Recorded> }
>() {}

export const sessionLayer = (
  context: Sandbox.ReplContext,
  options: PythonSandbox.Options & { readonly outputLimit?: number }
): Layer.Layer<Session, Sandbox.SandboxError> =>
  Layer.scoped(
    Session,
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const { calls, host } = recordingHost()
      const repl = yield* sandbox.open({ context, host, outputLimit: options.outputLimit })
      return { repl, calls }
    })
  ).pipe(Layer.provide(PythonSandbox.layer(options)))

/** Pids of the live sandbox child processes started by this test process. */
export const sandboxChildren = (): Array<number> => {
  const out: Array<number> = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
      const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0]
      if (ppid !== process.pid || state === "Z") continue
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8")
      if (cmdline.includes("python-child.mjs")) out.push(Number(entry))
    } catch {
      // the process went away
    }
  }
  return out
}

/** Wait (briefly) until `pid` has exited. */
export const exited = (pid: number) =>
  Effect.gen(function* () {
    for (let i = 0; i < 50; i++) {
      if (!sandboxChildren().includes(pid)) return true
      yield* Effect.sleep(Duration.millis(20))
    }
    return false
  })

/**
 * Whether `pid` exists at all right now, zombies included: a process the
 * host has not reaped yet still counts. Used without any waiting, to check
 * that closing a scope returns only once its interpreter process is gone.
 */
export const processExists = (pid: number): boolean => existsSync(`/proc/${pid}`)
