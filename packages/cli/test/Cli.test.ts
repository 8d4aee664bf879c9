import * as Command from "@effect/cli/Command"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { assert, describe, it } from "@effect/vitest"
import * as Cli from "@rlm-runtime/cli/Cli"
import { CliError } from "@rlm-runtime/cli/CliError"
import * as Prompts from "@rlm-runtime/core/Prompts"
import { Duration, Effect, Either, Exit, FiberId, Schema } from "effect"
import { captureConsole, runCli, SEED_CONTEXT, seedScript, tempFiles } from "./utils.js"

/** Parse `rlm <args>` with a handler that only captures the flags. */
const parse = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    let flags: Cli.RunFlags | undefined
    const app = Command.run(
      Cli.makeCommand((f) =>
        Effect.sync(() => {
          flags = f
        })
      ),
      { name: "rlm", version: Cli.version }
    )
    const io = captureConsole()
    const exit = yield* app(["node", "rlm", ...args]).pipe(
      Effect.withConsole(io.console),
      Effect.provide(NodeContext.layer),
      Effect.exit
    )
    return { exit, flags, stderr: io.stderr() }
  })

const files = tempFiles({
  "ctx.txt": SEED_CONTEXT,
  "seed.json": seedScript("python"),
  "prices.json": JSON.stringify({ fake: { inputPerMillion: 1, outputPerMillion: 2 } }),
  "bad-json.json": "{ script: [",
  "bad-shape.json": JSON.stringify({ script: "not a list" })
})

const base = ["run", "--context", files.path("ctx.txt"), "--query", "Q"]

const plan = (flags: Cli.RunFlags) => Cli.plan(flags).pipe(Effect.provide(NodeContext.layer), Effect.either)

const flagsOf = (args: ReadonlyArray<string>) =>
  Effect.map(parse([...base, ...args]), (r) => {
    assert.isTrue(Exit.isSuccess(r.exit), r.stderr)
    return r.flags as Cli.RunFlags
  })

const usageError = (result: Either.Either<Cli.RunPlan, CliError>, fragment: string) => {
  assert.isTrue(Either.isLeft(result), "expected a CliError")
  const error = (result as Either.Left<CliError, Cli.RunPlan>).left
  assert.include(error.message, fragment)
  return error
}

describe("rlm run: flag parsing", () => {
  it.effect("defaults", () =>
    Effect.gen(function* () {
      const flags = yield* flagsOf([])
      assert.deepStrictEqual(flags, {
        context: files.path("ctx.txt"),
        query: "Q",
        fake: undefined,
        trace: undefined,
        cache: undefined,
        sandbox: "python",
        protocol: "fenced",
        isolation: "auto",
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
      })
    })
  )

  it.effect("every flag", () =>
    Effect.gen(function* () {
      const flags = yield* flagsOf([
        "--fake",
        "s.json",
        "--trace",
        "t.json",
        "--sandbox",
        "js",
        "--exec-timeout",
        "2.5",
        "--memory-mb",
        "512",
        "--max-steps",
        "7",
        "--max-subcalls",
        "0",
        "--max-tokens",
        "1000",
        "--max-cost",
        "0.25",
        "--prices",
        "p.json",
        "--timeout",
        "30",
        "--max-depth",
        "2",
        "--concurrency",
        "4",
        "--adapter",
        "generic",
        "--generic-preset",
        "ollama",
        "--base-url",
        "http://127.0.0.1:11434",
        "--model",
        "big",
        "--sub-model",
        "small",
        "--llama",
        "--quiet",
        "--isolation",
        "strict",
        "--protocol",
        "tools",
        "--raw",
        "--otlp",
        "http://127.0.0.1:4318/v1/traces",
        "--cache",
        "cache-dir"
      ])
      assert.deepStrictEqual(flags, {
        context: files.path("ctx.txt"),
        query: "Q",
        fake: "s.json",
        trace: "t.json",
        cache: "cache-dir",
        sandbox: "js",
        protocol: "tools",
        isolation: "strict",
        execTimeout: 2.5,
        memoryMb: 512,
        maxSteps: 7,
        maxSubcalls: 0,
        maxTokens: 1000,
        maxCost: 0.25,
        prices: "p.json",
        timeout: 30,
        maxDepth: 2,
        concurrency: 4,
        adapter: "generic",
        genericPreset: "ollama",
        baseUrl: "http://127.0.0.1:11434",
        model: "big",
        subModel: "small",
        llama: true,
        quiet: true,
        raw: true,
        otlp: "http://127.0.0.1:4318/v1/traces"
      })
    })
  )

  it.effect("short aliases -c and -q", () =>
    Effect.gen(function* () {
      const r = yield* parse(["run", "-c", "-", "-q", "what?"])
      assert.isTrue(Exit.isSuccess(r.exit))
      assert.strictEqual(r.flags?.context, "-")
      assert.strictEqual(r.flags?.query, "what?")
    })
  )

  it.effect("an unknown --sandbox value is a usage error (exit 2) naming the choices", () =>
    Effect.gen(function* () {
      const r = yield* runCli([...base, "--sandbox", "ruby"])
      assert.strictEqual(r.code, 2)
      assert.strictEqual(r.stdout, "")
      assert.include(r.stderr, "python")
      assert.include(r.stderr, "js")
    })
  )

  it.effect("a missing --query is a usage error (exit 2)", () =>
    Effect.gen(function* () {
      const r = yield* runCli(["run", "--context", files.path("ctx.txt")])
      assert.strictEqual(r.code, 2)
      assert.include(r.stderr, "query")
      assert.strictEqual(r.stdout, "")
    })
  )

  it.effect("`rlm` without a command fails with a hint", () =>
    Effect.gen(function* () {
      const r = yield* runCli([])
      assert.strictEqual(r.code, 2)
      assert.strictEqual(r.stderr, "rlm: missing command: try `rlm run --help`.\n")
    })
  )

  it.effect("--help prints the flags on stdout and succeeds", () =>
    Effect.gen(function* () {
      const r = yield* runCli(["run", "--help"])
      assert.strictEqual(r.code, 0)
      for (const flag of [
        "--context",
        "--fake",
        "--trace",
        "--max-subcalls",
        "--sub-model",
        "--llama",
        "--exec-timeout",
        "--isolation",
        "--raw"
      ]) {
        assert.include(r.stdout, flag)
      }
    })
  )
})

describe("rlm run: validation (plan)", () => {
  const flags = (overrides: Partial<Cli.RunFlags>) =>
    Effect.map(flagsOf([]), (f): Cli.RunFlags => ({ ...f, ...overrides }))

  it.effect("--fake selects the fake adapter and reads the script", () =>
    Effect.gen(function* () {
      const result = yield* plan(yield* flags({ fake: files.path("seed.json") }))
      assert.isTrue(Either.isRight(result))
      const p = (result as Either.Right<CliError, Cli.RunPlan>).right
      assert.strictEqual(p.adapter.kind, "fake")
      if (p.adapter.kind === "fake") assert.deepStrictEqual(p.adapter.script.rules[0]?.reply, "fake summary")
      assert.strictEqual(p.context, SEED_CONTEXT)
      assert.strictEqual(p.sandbox.kind, "python")
    })
  )

  it.effect("without --fake the adapter is openai-compat, with --model and --sub-model", () =>
    Effect.gen(function* () {
      const result = yield* plan(yield* flags({ model: "big", subModel: "small", baseUrl: "http://x/v1" }))
      assert.deepStrictEqual(
        Either.map(result, (p) => p.adapter),
        Either.right({
          kind: "openai-compat" as const,
          baseUrl: "http://x/v1",
          model: "big",
          subModel: "small"
        })
      )
    })
  )

  it.effect("adapter combinations that cannot work are usage errors", () =>
    Effect.gen(function* () {
      usageError(yield* plan(yield* flags({ adapter: "fake" })), "--adapter fake needs --fake")
      usageError(
        yield* plan(yield* flags({ adapter: "openai-compat", fake: files.path("seed.json") })),
        "--fake only works with the fake adapter"
      )
      usageError(yield* plan(yield* flags({ adapter: "generic" })), "--generic-preset anthropic|ollama")
    })
  )

  it.effect("limits map onto the policy", () =>
    Effect.gen(function* () {
      const result = yield* plan(
        yield* flags({
          fake: files.path("seed.json"),
          maxSteps: 3,
          maxSubcalls: 0,
          maxTokens: 500,
          maxCost: 0.5,
          prices: files.path("prices.json"),
          timeout: 1.5,
          maxDepth: 0,
          concurrency: 2,
          execTimeout: 0.25
        })
      )
      assert.isTrue(Either.isRight(result))
      const p = (result as Either.Right<CliError, Cli.RunPlan>).right
      assert.strictEqual(p.policy.maxSteps, 3)
      assert.strictEqual(p.policy.maxSubCalls, 0)
      assert.strictEqual(p.policy.maxTotalTokens, 500)
      assert.strictEqual(p.policy.maxCostUsd, 0.5)
      assert.deepStrictEqual(p.policy.prices, { fake: { inputPerMillion: 1, outputPerMillion: 2 } })
      assert.strictEqual(p.policy.timeoutMs, 1500)
      assert.strictEqual(p.policy.maxDepth, 0)
      assert.strictEqual(p.policy.concurrency, 2)
      assert.isTrue(Duration.equals(Duration.decode(p.options.execTimeout ?? 0), Duration.millis(250)))
      assert.deepStrictEqual(p.notes, [])
    })
  )

  it.effect("--max-cost without --prices is accepted with a note that cost is not bounded", () =>
    Effect.gen(function* () {
      const result = yield* plan(yield* flags({ fake: files.path("seed.json"), maxCost: 1 }))
      assert.isTrue(Either.isRight(result))
      assert.match((result as Either.Right<CliError, Cli.RunPlan>).right.notes.join("\n"), /cost is not bounded/)
    })
  )

  it.effect("--llama sets LLAMA_SYSTEM_PROMPT and requireReplBeforeFinal", () =>
    Effect.gen(function* () {
      const result = yield* plan(yield* flags({ fake: files.path("seed.json"), llama: true }))
      const p = (result as Either.Right<CliError, Cli.RunPlan>).right
      assert.strictEqual(p.options.systemPrompt, Prompts.LLAMA_SYSTEM_PROMPT)
      assert.isTrue(p.options.requireReplBeforeFinal)
      const plain = (yield* plan(yield* flags({ fake: files.path("seed.json") }))) as Either.Right<
        CliError,
        Cli.RunPlan
      >
      assert.isUndefined(plain.right.options.systemPrompt)
      assert.isUndefined(plain.right.options.requireReplBeforeFinal)
    })
  )

  it.effect("out-of-range limits are usage errors naming the flag", () =>
    Effect.gen(function* () {
      const f = yield* flags({ fake: files.path("seed.json") })
      assert.strictEqual(
        usageError(yield* plan({ ...f, maxSteps: 0 }), "--max-steps must be an integer >= 1, got 0").reason,
        "Usage"
      )
      usageError(yield* plan({ ...f, maxSubcalls: -1 }), "--max-subcalls must be an integer >= 0")
      usageError(yield* plan({ ...f, concurrency: 0 }), "--concurrency must be an integer >= 1")
      usageError(yield* plan({ ...f, timeout: 0 }), "--timeout must be a number of seconds > 0")
      usageError(yield* plan({ ...f, execTimeout: -1 }), "--exec-timeout must be a number of seconds > 0")
      usageError(yield* plan({ ...f, maxCost: -0.5 }), "--max-cost must be a number of USD >= 0")
    })
  )

  it.effect.prop(
    "--max-steps N is accepted exactly when N >= 1, and becomes policy.maxSteps",
    [Schema.Int.pipe(Schema.between(-1000, 1_000_000))],
    ([n]) =>
      Effect.gen(function* () {
        const result = yield* plan(yield* flags({ fake: files.path("seed.json"), maxSteps: n }))
        if (n >= 1) return Either.isRight(result) && result.right.policy.maxSteps === n
        return Either.isLeft(result) && result.left.reason === "Usage"
      }),
    { fastCheck: { numRuns: 30 } }
  )

  it.effect("unreadable inputs are Input errors (exit 2)", () =>
    Effect.gen(function* () {
      const f = yield* flags({ fake: files.path("seed.json") })
      const missing = usageError(
        yield* plan({ ...f, context: files.path("nope.txt") }),
        "could not read the --context file"
      )
      assert.strictEqual(missing.reason, "Input")
      assert.strictEqual(missing.exitCode, 2)
      usageError(yield* plan({ ...f, fake: files.path("bad-json.json") }), "is not valid JSON")
      usageError(yield* plan({ ...f, fake: files.path("bad-shape.json") }), "does not have the expected shape")
      usageError(yield* plan({ ...f, prices: files.path("bad-shape.json") }), "--prices file")
      usageError(yield* plan({ ...f, trace: files.path("no-such-dir/trace.json") }), "--trace directory")
    })
  )
})

describe("rlm run: exit codes", () => {
  it("maps outcomes to exit codes", () => {
    assert.strictEqual(Cli.exitCode(Exit.succeed(undefined)), 0)
    assert.strictEqual(Cli.exitCode(Exit.fail(new CliError({ reason: "Budget", message: "x" }))), 3)
    assert.strictEqual(Cli.exitCode(Exit.fail(new CliError({ reason: "Input", message: "x" }))), 2)
    assert.strictEqual(Cli.exitCode(Exit.fail(new CliError({ reason: "Model", message: "x" }))), 1)
    assert.strictEqual(Cli.exitCode(Exit.interrupt(FiberId.none)), 130)
  })
})
