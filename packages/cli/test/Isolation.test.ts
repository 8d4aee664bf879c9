import * as NodeContext from "@effect/platform-node/NodeContext"
import { assert, describe, it } from "@effect/vitest"
import * as Cli from "@rlm-runtime/cli/Cli"
import { CliError } from "@rlm-runtime/cli/CliError"
import { SandboxError } from "@rlm-runtime/sandbox/Sandbox"
import { Effect, Either, Exit } from "effect"
import { runCli, SEED_CONTEXT, seedScript, tempFiles } from "./utils.js"

const files = tempFiles({ "ctx.txt": SEED_CONTEXT, "seed.json": seedScript("js") })

const settings = (isolation: "auto" | "require-namespace" | "process", kind: "python" | "js" = "python") => ({
  kind,
  execTimeout: undefined,
  memoryMb: undefined,
  isolation
})

const planOf = (isolation: "auto" | "strict" | "process") =>
  Cli.plan({
    context: files.path("ctx.txt"),
    query: "Q",
    fake: files.path("seed.json"),
    trace: undefined,
    sandbox: "js",
    isolation,
    execTimeout: undefined,
    memoryMb: undefined,
    maxSteps: undefined,
    maxSubcalls: undefined,
    maxTokens: undefined,
    maxCost: undefined,
    prices: undefined,
    timeout: undefined,
    maxDepth: undefined,
    concurrency: undefined,
    adapter: undefined,
    genericPreset: undefined,
    baseUrl: undefined,
    model: undefined,
    subModel: undefined,
    llama: false,
    quiet: false,
    raw: false
  }).pipe(Effect.provide(NodeContext.layer))

describe("--isolation", () => {
  it.effect("auto, strict and process become the sandbox options auto, require-namespace and process", () =>
    Effect.gen(function* () {
      assert.strictEqual((yield* planOf("auto")).sandbox.isolation, "auto")
      assert.strictEqual((yield* planOf("strict")).sandbox.isolation, "require-namespace")
      assert.strictEqual((yield* planOf("process")).sandbox.isolation, "process")
    })
  )

  it.effect("strict with a sandbox behind the process wall only: an Isolation error, exit 4, with the advice", () =>
    Effect.gen(function* () {
      const result = yield* Effect.either(Cli.checkIsolation(settings("require-namespace"), "process"))
      assert.isTrue(Either.isLeft(result))
      const error = (result as Either.Left<CliError, void>).left
      assert.strictEqual(error.reason, "Isolation")
      assert.strictEqual(error.exitCode, 4)
      assert.strictEqual(Cli.exitCode(Exit.fail(error)), 4)
      assert.strictEqual(
        error.message,
        "the Python sandbox runs behind the process wall only, but --isolation strict asks for the OS wall (isolation: namespace). --isolation strict needs the OS wall: bubblewrap (Debian/Ubuntu: apt-get install bubblewrap), or unshare from util-linux with unprivileged user namespaces enabled; --isolation auto falls back to the process wall and says so."
      )
    })
  )

  it.effect("strict behind the OS wall, and auto or process behind either wall, pass", () =>
    Effect.gen(function* () {
      yield* Cli.checkIsolation(settings("require-namespace"), "namespace")
      for (const mode of ["auto", "process"] as const) {
        for (const got of ["namespace", "process"] as const) yield* Cli.checkIsolation(settings(mode), got)
      }
    })
  )

  it("a StartFailed under strict is an Isolation error (exit 4); any other start failure is a Sandbox error (exit 1)", () => {
    const startFailed = new SandboxError({
      reason: "StartFailed",
      message: "bwrap: setting up uid map: Permission denied"
    })
    const strict = Cli.sandboxStartError(settings("require-namespace", "js"), startFailed)
    assert.instanceOf(strict, CliError)
    assert.strictEqual(strict.reason, "Isolation")
    assert.strictEqual(strict.exitCode, 4)
    assert.match(
      strict.message,
      /^the JavaScript sandbox did not start: bwrap: setting up uid map: Permission denied\. --isolation strict needs the OS wall: bubblewrap/
    )
    const auto = Cli.sandboxStartError(settings("auto"), startFailed)
    assert.strictEqual(auto.reason, "Sandbox")
    assert.strictEqual(auto.exitCode, 1)
    assert.strictEqual(auto.message, "the Python sandbox did not start: bwrap: setting up uid map: Permission denied")
    const crashed = Cli.sandboxStartError(
      settings("require-namespace"),
      new SandboxError({ reason: "Crashed", message: "gone" })
    )
    assert.strictEqual(crashed.reason, "Sandbox")
  })

  it.effect("`rlm run --help` describes --isolation and --raw", () =>
    Effect.gen(function* () {
      const r = yield* runCli(["run", "--help"])
      assert.strictEqual(r.code, 0)
      assert.include(r.stdout, "--isolation auto | strict | process")
      assert.include(r.stdout, "refuse to run without the OS wall")
      assert.include(r.stdout, "--raw")
    })
  )
})
