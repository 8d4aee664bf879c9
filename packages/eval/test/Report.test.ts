import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { assert, describe, it } from "@effect/vitest"
import * as Report from "@rlm-runtime/eval/Report"
import * as Result from "@rlm-runtime/eval/Result"
import * as Runner from "@rlm-runtime/eval/Runner"
import * as JavascriptSandbox from "@rlm-runtime/sandbox/JavascriptSandbox"
import { Effect, FastCheck as fc, Layer } from "effect"
import * as Oracle from "./oracle.js"

const HOSTILE = '</pre><script>alert("x")</script><img src=x onerror=alert(1)><a href="javascript:alert(1)">'

const line = (answer: string, overrides: Partial<ConstructorParameters<typeof Result.ResultLine>[0]> = {}) =>
  new Result.ResultLine({
    taskId: "sniah-8k-s1-000",
    kind: "sniah",
    size: 8192,
    seed: 1,
    index: 0,
    method: "rlm",
    score: 0,
    status: "answered",
    answer,
    truth: "1234567",
    inputTokens: 10,
    outputTokens: 5,
    totalTokens: 15,
    costUsd: 0,
    timeMs: 12,
    steps: 2,
    subCalls: 1,
    trace: "traces/sniah-8k-s1-000.rlm.jsonl",
    ...overrides
  })

const config = { kinds: ["sniah"] as const, sizes: [8192], methods: ["rlm", "direct"] as const, n: 1, seed: 1 }

describe("report.html", () => {
  it("model text with <script> in an answer (or an error) stays text, never markup", () => {
    const lines = [
      line(HOSTILE, { trace: "javascript:alert(1)" }),
      line("", { method: "direct", status: "failed", error: HOSTILE })
    ]
    const html = Report.html(Result.summarize(config, lines), lines)
    assert.notInclude(html, "<script")
    assert.notInclude(html, "<img")
    assert.notInclude(html, 'href="javascript:')
    assert.include(html, '<a href="traces/sniah-8k-s1-000.rlm.jsonl">')
    assert.include(html, "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;")
    // No script and nothing from the network: a Content-Security-Policy that allows neither.
    assert.include(html, "default-src 'none'")
    assert.notMatch(html, /\bsrc="http|<link /)
  })

  it.prop("escapeHtml leaves no character that starts markup or ends an attribute", [fc.string()], ([text]) => {
    const escaped = Report.escapeHtml(text)
    assert.notMatch(escaped, /[<>"']/)
    const back = escaped
      .replace(/&lt;/g, "<")
      .replace(/&gt;/g, ">")
      .replace(/&quot;/g, '"')
      .replace(/&#39;/g, "'")
      .replace(/&amp;/g, "&")
    assert.strictEqual(back, text)
  })

  it("the markdown table has a row per kind × size × method and one per method overall", () => {
    const lines = [line("1234567", { score: 1 }), line("no", { method: "direct" })]
    const table = Report.markdown(Result.summarize(config, lines))
    assert.include(table, "| sniah | 8k | rlm | 1 | 100.0 | 0 | 15 |")
    assert.include(table, "| sniah | 8k | direct | 1 | 0.0 | 0 | 15 |")
    assert.include(table, "| **all** |  | rlm | 1 | 100.0 |")
    assert.strictEqual(table.split("\n").length, 2 + 2 + 2)
  })
})

describe("Runner input checks", () => {
  const services = Layer.mergeAll(Oracle.layer, JavascriptSandbox.layer(), NodeContext.layer)
  const base: Runner.Config = { kinds: ["sniah"], sizes: [1024], n: 1, seed: 1, methods: ["rlm"], out: "" }

  it.effect("a bad config fails with EvalFailure Config before anything runs", () =>
    Effect.gen(function* () {
      for (const bad of [{ n: 0 }, { methods: [] }, { window: 0 }, { concurrency: 1.5 }, { seed: 0.5 }]) {
        const error = yield* Runner.run({ ...base, out: mkdtempSync(join(tmpdir(), "rlm-eval-")), ...bad }).pipe(
          Effect.provide(services),
          Effect.flip
        )
        assert.strictEqual(error._tag, "EvalFailure")
        if (error._tag === "EvalFailure") assert.strictEqual(error.reason, "Config", JSON.stringify(bad))
      }
    })
  )

  it.effect("a results.jsonl with a bad line before the last fails with EvalFailure Resume", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(join(tmpdir(), "rlm-eval-"))
      writeFileSync(join(dir, "results.jsonl"), 'not json\n{"also": "bad"}\n')
      const error = yield* Runner.readResults(join(dir, "results.jsonl")).pipe(
        Effect.provide(NodeContext.layer),
        Effect.flip
      )
      assert.strictEqual(error.reason, "Resume")
      assert.include(error.message, "line 1")
    })
  )
})
