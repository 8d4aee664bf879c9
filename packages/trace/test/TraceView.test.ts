import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import * as TraceView from "@rlm-runtime/trace/TraceView"

const T0 = 1_700_000_000_000

const started = (runId: string, timestamp: number, parent?: { runId: string; step: number }) =>
  new TraceEvent.RunStarted({
    runId,
    ...(parent !== undefined ? { parentRunId: parent.runId, parentStep: parent.step } : {}),
    depth: parent === undefined ? 0 : 1,
    query: `query of ${runId}`,
    context: { type: "text", totalChars: 10, documentCount: 1, documentLengths: [10], preview: "0123456789" },
    model: "root-model",
    language: "python",
    isolation: "process",
    timestamp
  })

const step = (runId: string, n: number, modelMs: number, blockMs: ReadonlyArray<number>, durationMs: number) =>
  new TraceEvent.StepCompleted({
    runId,
    step: n,
    reply: `reply ${n}`,
    blocks: blockMs.map((d, i) => ({
      code: `code ${n}.${i}`,
      stdout: `out ${n}.${i}`,
      stderr: "",
      truncated: false,
      durationMs: d
    })),
    usage: { inputTokens: 100, outputTokens: 10, totalTokens: 110 },
    model: "root-model",
    modelMs,
    durationMs
  })

const sub = (runId: string, parentStep: number, durationMs: number, extra: Partial<TraceEvent.SubCall> = {}) =>
  new TraceEvent.SubCall({
    runId,
    parentStep,
    kind: "llm_query",
    model: "sub-model",
    prompt: "p",
    promptSha256: "0".repeat(64),
    promptChars: 1,
    reply: "r",
    usage: { inputTokens: 5, outputTokens: 1, totalTokens: 6 },
    durationMs,
    ...extra
  })

const finished = (runId: string, durationMs: number, costUsd?: number) =>
  new TraceEvent.RunFinished({
    runId,
    status: "answered",
    steps: 1,
    subCalls: 0,
    usage: {},
    ...(costUsd !== undefined ? { costUsd } : {}),
    durationMs
  })

const spans = (calls: ReadonlyArray<TraceView.SubCallView>) => calls.map((c) => [c.span.start, c.span.end])

describe("TraceView.view", () => {
  it("nests a child run under the step and the sub-call that started it", () => {
    const v = TraceView.view(
      Trace.make([
        started("run", T0),
        started("run/1.0", T0 + 50, { runId: "run", step: 1 }),
        step("run/1.0", 1, 10, [], 10),
        finished("run/1.0", 30),
        sub("run", 1, 40, { kind: "rlm_query", childRunId: "run/1.0", usage: {} }),
        step("run", 1, 20, [80], 100),
        new TraceEvent.FinalAnswer({ runId: "run", step: 1, source: "FINAL", answer: "42" }),
        finished("run", 120, 0.25)
      ])
    )
    assert.deepStrictEqual(v.roots, ["run"])
    const root = v.runs.run
    assert.strictEqual(root?.steps.length, 1)
    assert.deepStrictEqual(root?.steps[0]?.children, ["run/1.0"])
    assert.strictEqual(root?.steps[0]?.subCalls[0]?.childRunId, "run/1.0")
    assert.strictEqual(root?.final?.answer, "42")
    // The rlm_query starts exactly when its child run started.
    assert.deepStrictEqual(root?.steps[0]?.subCalls[0]?.span, { start: 50, end: 90 })
    assert.strictEqual(v.runs["run/1.0"]?.span.start, 50)
    // Totals: tokens of every call, the root run's cost, the time from first start to last end.
    assert.deepStrictEqual(v.totals.usage, { inputTokens: 200, outputTokens: 20, totalTokens: 220 })
    assert.strictEqual(v.totals.costUsd, 0.25)
    assert.strictEqual(v.totals.durationMs, 120)
    assert.strictEqual(v.totals.runs, 2)
    assert.strictEqual(v.totals.status, "answered")
  })

  it("lays steps end to end, ending with the run; a step is its model call then its blocks", () => {
    const v = TraceView.view(
      Trace.make([
        started("run", T0),
        step("run", 1, 30, [10, 20], 65),
        step("run", 2, 25, [], 25),
        finished("run", 100)
      ])
    )
    const [s1, s2] = v.runs.run?.steps ?? []
    // 100 ms of run, 90 ms of steps: the first 10 ms are the interpreter's start-up.
    assert.deepStrictEqual(s1?.span, { start: 10, end: 75 })
    assert.deepStrictEqual(s1?.modelSpan, { start: 10, end: 40 })
    assert.deepStrictEqual(s1?.blockSpans, [
      { start: 40, end: 50 },
      { start: 50, end: 70 }
    ])
    assert.deepStrictEqual(s2?.span, { start: 75, end: 100 })
  })

  it("draws sub-calls that fit their step's window end to end, and a batch that cannot as started together", () => {
    const sequential = TraceView.view(
      Trace.make([
        started("run", T0),
        sub("run", 1, 100),
        sub("run", 1, 120),
        sub("run", 1, 90),
        step("run", 1, 0, [320], 320)
      ])
    )
    assert.deepStrictEqual(spans(sequential.runs.run?.steps[0]?.subCalls ?? []), [
      [0, 100],
      [100, 220],
      [220, 310]
    ])
    // Three calls of ~300 ms in a block of 310 ms: they ran concurrently (completion order = duration order).
    const batch = TraceView.view(
      Trace.make([
        started("run", T0),
        sub("run", 1, 298),
        sub("run", 1, 300),
        sub("run", 1, 305),
        step("run", 1, 10, [310], 320)
      ])
    )
    const calls = batch.runs.run?.steps[0]?.subCalls ?? []
    assert.deepStrictEqual(spans(calls), [
      [10, 308],
      [10, 310],
      [10, 315]
    ])
    assert.isTrue(calls.every((c) => c.span.estimated === true))
  })

  it("draws sub-calls with a start time where they ran, not estimated; calls without one are still laid out", () => {
    const v = TraceView.view(
      Trace.make([
        started("run", T0),
        // Completion order is not start order: the second call started first.
        sub("run", 1, 50, { timestamp: T0 + 40 }),
        sub("run", 1, 200, { timestamp: T0 + 12 }),
        sub("run", 1, 30),
        step("run", 1, 10, [300], 310)
      ])
    )
    const calls = v.runs.run?.steps[0]?.subCalls ?? []
    assert.deepStrictEqual(spans(calls), [
      [40, 90],
      [12, 212],
      [10, 40]
    ])
    assert.deepStrictEqual(
      calls.map((c) => c.span.estimated === true),
      [false, false, true]
    )
  })

  it("keeps sub-calls and child runs whose step was never recorded", () => {
    const v = TraceView.view(
      Trace.make([started("run", T0), started("run/3.0", T0 + 5, { runId: "run", step: 3 }), sub("run", 3, 10)])
    )
    assert.strictEqual(v.runs.run?.strays.length, 1)
    assert.deepStrictEqual(v.runs.run?.children, ["run/3.0"])
    assert.strictEqual(v.runs.run?.finished, undefined)
  })

  it("run ids are plain keys: __proto__ and toString are runs like any other; a parent cycle is still shown", () => {
    const v = TraceView.view(
      Trace.make([
        started("__proto__", T0),
        started("toString", T0 + 1, { runId: "__proto__", step: 1 }),
        step("__proto__", 1, 1, [], 2),
        started("a", T0, { runId: "b", step: 1 }),
        started("b", T0, { runId: "a", step: 1 })
      ])
    )
    const back = JSON.parse(TraceView.embedJson(v)) as TraceView.View
    assert.deepStrictEqual(Object.keys(back.runs), ["__proto__", "toString", "a", "b"])
    assert.deepStrictEqual(back.runs.__proto__?.steps[0]?.children, ["toString"])
    assert.deepStrictEqual(back.roots, ["__proto__", "a"])
  })

  it("an empty trace has no runs", () => {
    const v = TraceView.view(Trace.empty)
    assert.deepStrictEqual(v.roots, [])
    assert.strictEqual(v.totals.durationMs, 0)
  })
})

describe("TraceView.render", () => {
  const hostile = "</script><script>alert(1)</script><!-- <img src=x onerror=alert(2)> \u2028 </SCRIPT >"

  it("embeds JSON with no '<' that reads back as the same text", () => {
    const embedded = TraceView.embedJson({ text: hostile })
    assert.notInclude(embedded, "<")
    assert.deepStrictEqual(JSON.parse(embedded), { text: hostile })
  })

  it("hostile text cannot end the data element or add markup: the page has exactly its own two scripts", () => {
    const trace = Trace.make([
      started("run", T0),
      new TraceEvent.StepCompleted({
        runId: "run",
        step: 1,
        reply: hostile,
        blocks: [{ code: hostile, stdout: hostile, stderr: hostile, truncated: false, durationMs: 1 }],
        feedback: hostile,
        usage: {},
        model: hostile,
        modelMs: 1,
        durationMs: 1
      }),
      sub("run", 1, 1, { prompt: hostile, reply: hostile })
    ])
    const html = TraceView.render(trace)
    assert.strictEqual(html.match(/<script/gi)?.length, 2)
    assert.strictEqual(html.match(/<\/script/gi)?.length, 2)
    assert.notInclude(html, "<img")
    assert.notInclude(html, "<!-- ")
    assert.match(html, /<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'sha256-/)
    // The data reads back as the trace's text.
    const data = html.match(/<script type="application\/json" id="rlm-trace-data">(.*)<\/script>/)?.[1] ?? ""
    const view = JSON.parse(data) as TraceView.View
    assert.strictEqual(view.runs.run?.steps[0]?.reply, hostile)
    assert.strictEqual(view.runs.run?.steps[0]?.subCalls[0]?.prompt, hostile)
  })

  it("is self-contained: no external script, style, link or URL", () => {
    const html = TraceView.render(Trace.make([started("run", T0)]))
    assert.notMatch(html, /<link|src=|href=|https?:\/\//i)
  })
})
