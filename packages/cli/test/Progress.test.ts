import { assert, describe, it } from "@effect/vitest"
import * as Progress from "@rlm-runtime/cli/Progress"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import { Effect } from "effect"

const started = (runId: string, depth: number, isolation: "namespace" | "process" = "process") =>
  new TraceEvent.RunStarted({
    runId,
    ...(depth > 0 ? { parentRunId: "run", parentStep: 1 } : {}),
    depth,
    query: "q",
    context: { type: "text", totalChars: 45, documentCount: 1, documentLengths: [45], preview: "p" },
    model: "fake",
    language: "python",
    isolation,
    timestamp: 0
  })

const sub = (runId: string, error?: string) =>
  new TraceEvent.SubCall({
    runId,
    parentStep: 1,
    kind: "llm_query",
    model: "fake",
    prompt: "p",
    promptSha256: "x",
    promptChars: 1,
    ...(error !== undefined ? { error } : { reply: "r" }),
    usage: {},
    durationMs: 1
  })

const step = (runId: string, n: number, blocks: number, failed = 0, feedback?: string) =>
  new TraceEvent.StepCompleted({
    runId,
    step: n,
    reply: "r",
    blocks: Array.from({ length: blocks }, (_, i) => ({
      code: "x",
      stdout: "",
      stderr: "",
      ...(i < failed ? { error: "boom" } : {}),
      truncated: false,
      durationMs: 1
    })),
    ...(feedback !== undefined ? { feedback } : {}),
    usage: {},
    model: "fake",
    modelMs: 1,
    durationMs: 1500
  })

const final = (runId: string, n: number) =>
  new TraceEvent.FinalAnswer({ runId, step: n, source: "FINAL_VAR", answer: "fake summary" })

const finished = (runId: string) =>
  new TraceEvent.RunFinished({
    runId,
    status: "budget_exceeded",
    steps: 2,
    subCalls: 3,
    usage: { totalTokens: 100 },
    durationMs: 250
  })

const lines = (events: ReadonlyArray<TraceEvent.TraceEvent>) => {
  let state = Progress.initial
  const out: Array<string> = []
  for (const event of events) {
    const [line, next] = Progress.format(state, event)
    state = next
    if (line !== undefined) out.push(line)
  }
  return out
}

describe("Progress", () => {
  it("one line per step, counting the sub-calls of that step only", () => {
    assert.deepStrictEqual(
      lines([
        started("run", 0),
        sub("run"),
        sub("run", "no rule"),
        step("run", 1, 2, 1),
        step("run", 2, 0, 0, "FINAL_VAR(x) names a variable that does not exist"),
        final("run", 3),
        step("run", 3, 0),
        finished("run")
      ]),
      [
        "rlm: run started: model fake, python sandbox, isolation: process, context 45 chars",
        "rlm: step 1: 2 blocks (1 failed), 2 sub-calls (1 failed), 1.5 s",
        "rlm: step 2: 0 blocks, 0 sub-calls, 1.5 s — told the model: FINAL_VAR(x) names a variable that does not exist",
        "rlm: step 3: 0 blocks, 0 sub-calls, 1.5 s — final answer (FINAL_VAR, 12 chars)",
        "rlm: finished: budget exceeded, 2 steps, 3 sub-calls, 100 tokens, 250 ms"
      ]
    )
  })

  it("a retried model-call attempt gets its own line, and does not change the step's counts", () => {
    const retried = (runId: string, role: "root" | "sub", usage: TraceEvent.TokenUsage, status?: number) =>
      new TraceEvent.ModelCallRetried({
        runId,
        step: 1,
        role,
        model: "m",
        attempt: 1,
        reason: role === "root" ? "RateLimited" : "Timeout",
        message: "slow down",
        ...(status !== undefined ? { status } : {}),
        delayMs: 1500,
        usage
      })
    assert.deepStrictEqual(
      lines([retried("run", "root", {}, 429), retried("run/1.0", "sub", { totalTokens: 12 }), step("run", 1, 1)]),
      [
        "rlm: step 1: root model call to m failed (RateLimited 429, attempt 1): slow down — retrying in 1.5 s",
        "rlm:   [run/1.0] step 1: sub-call to m failed (Timeout, attempt 1, 12 tokens): slow down — retrying in 1.5 s",
        "rlm: step 1: 1 block, 0 sub-calls, 1.5 s"
      ]
    )
  })

  it("a final answer recorded after its step gets its own line", () => {
    assert.deepStrictEqual(lines([step("run", 1, 1), final("run", 1)]), [
      "rlm: step 1: 1 block, 0 sub-calls, 1.5 s",
      "rlm: step 1: final answer (FINAL_VAR, 12 chars)"
    ])
  })

  it("child runs are indented under their parent and counted apart", () => {
    assert.deepStrictEqual(lines([sub("run/1.0"), sub("run"), step("run/1.0", 1, 1), step("run", 1, 1)]), [
      "rlm:   [run/1.0] step 1: 1 block, 1 sub-call, 1.5 s",
      "rlm: step 1: 1 block, 1 sub-call, 1.5 s"
    ])
    assert.strictEqual(
      lines([started("run/1.0", 1)])[0],
      "rlm:   [run/1.0] child run started (depth 1): model fake, python sandbox, context 45 chars"
    )
  })

  it.effect("the recorder keeps every event and writes the lines (none when quiet)", () =>
    Effect.gen(function* () {
      const written: Array<string> = []
      const recorder = yield* Progress.make({ write: (line) => Effect.sync(() => void written.push(line)) })
      const quiet = yield* Progress.make({ quiet: true, write: () => Effect.die("must not write") })
      for (const event of [started("run", 0), sub("run"), step("run", 1, 1)]) {
        yield* recorder.record(event)
        yield* quiet.record(event)
      }
      assert.strictEqual(written.length, 2)
      assert.strictEqual((yield* recorder.snapshot).events.length, 3)
      assert.strictEqual((yield* quiet.events).length, 3)
    })
  )

  it.effect("the root run's first line says the isolation RunStarted records; a child's line does not repeat it", () =>
    Effect.gen(function* () {
      const written: Array<string> = []
      const recorder = yield* Progress.make({ write: (line) => Effect.sync(() => void written.push(line)) })
      // What the CLI read from the Sandbox service is only a fallback: the trace's record wins.
      yield* recorder.setIsolation("process")
      yield* recorder.record(started("run", 0, "namespace"))
      yield* recorder.record(started("run/1.0", 1, "namespace"))
      assert.deepStrictEqual(written, [
        "rlm: run started: model fake, python sandbox, isolation: namespace, context 45 chars",
        "rlm:   [run/1.0] child run started (depth 1): model fake, python sandbox, context 45 chars"
      ])
    })
  )

  it.effect("a line is written without the control sequences of the model's text in it", () =>
    Effect.gen(function* () {
      const written: Array<string> = []
      const recorder = yield* Progress.make({ write: (line) => Effect.sync(() => void written.push(line)) })
      yield* recorder.record(step("run", 1, 0, 0, "bad \x1b]0;pwned\x07\x9b2Jreply\r"))
      assert.deepStrictEqual(written, ["rlm: step 1: 0 blocks, 0 sub-calls, 1.5 s — told the model: bad reply"])
    })
  )

  it.effect("a failing writer never fails the run", () =>
    Effect.gen(function* () {
      const recorder = yield* Progress.make({ write: () => Effect.die("stderr is gone") })
      yield* recorder.record(started("run", 0))
      assert.strictEqual((yield* recorder.events).length, 1)
    })
  )
})
