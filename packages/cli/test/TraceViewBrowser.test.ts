/**
 * `rlm trace view` in a real headless browser: Debian's `chromium` driven by
 * `playwright-core`, both started here. Skipped, with the reason printed,
 * where no chromium is installed (CI installs it: `.ci/run`).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import * as TraceView from "@rlm-runtime/trace/TraceView"
import { Effect } from "effect"
import { type Browser, chromium, type Page } from "playwright-core"
import { afterAll, beforeAll } from "vitest"
import { runCli, tempFiles } from "./utils.js"

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..")

/** `CHROMIUM_PATH` when set (only it), else where Debian's `chromium` package puts it. */
const candidates =
  process.env.CHROMIUM_PATH !== undefined && process.env.CHROMIUM_PATH !== ""
    ? [process.env.CHROMIUM_PATH]
    : ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
const executablePath = candidates.find((p) => existsSync(p))
if (executablePath === undefined) {
  console.log(
    `TraceViewBrowser: skipped, no chromium at ${candidates.join(", ")} (Debian: apt-get install chromium; or set CHROMIUM_PATH).`
  )
}

const HOSTILE =
  "Looking first. <img src=x onerror=\"window.__pwned='img'\"><script>window.__pwned='script'</script></script><!--"

/** A run with a batched llm_query, a child run (rlm_query) and a hostile reply. */
const script = {
  latencyMs: 300,
  script: [
    `${HOSTILE}\n\`\`\`repl\nprint(len(P))\nparts = llm_query_batched([f'Summarize part {i}: ' + P[i*10:(i+1)*10] for i in range(3)])\nprint(parts)\n\`\`\``,
    "```repl\nchild = rlm_query('Count the words: ' + P)\nprint('child said', child)\n```",
    "FINAL(7 words)",
    "FINAL(The context is about RLMs.)"
  ],
  rules: [{ match: "Summarize part", reply: "a summary <b onmouseover=\"window.__pwned='b'\">bold</b>" }]
}

describe.skipIf(executablePath === undefined)("rlm trace view in headless chromium", () => {
  let browser: Browser
  const files = tempFiles({
    "ctx.txt": "RLMs treat long prompts as environment state.",
    "fake.json": JSON.stringify(script)
  })

  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: executablePath as string })
  })
  afterAll(async () => {
    await browser?.close()
    rmSync(files.dir, { recursive: true, force: true })
  })

  /** Open a page on the file; every request that is not the file itself is recorded and refused. */
  const open = async (file: string) => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
    const problems: Array<string> = []
    const requests: Array<string> = []
    page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`))
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console: ${m.text()}`)
    })
    const url = pathToFileURL(file).href
    await page.route("**/*", (route) => {
      if (route.request().url() === url) return route.continue()
      requests.push(route.request().url())
      return route.abort()
    })
    const started = performance.now()
    await page.goto(url)
    await page.waitForSelector("body[data-ready=true]", { timeout: 60_000 })
    return { page, problems, requests, readyMs: performance.now() - started }
  }

  const summary = (page: Page, cls: string, text: string) =>
    page.locator(`details.${cls} > summary`).filter({ hasText: text }).first()

  it.live(
    "the page opens, a step expands to its code and output, a child run is nested, hostile text stays text",
    () =>
      Effect.gen(function* () {
        const tracePath = files.path("trace.json")
        const htmlPath = files.path("trace.html")
        const ran = yield* runCli([
          "run",
          "--context",
          files.path("ctx.txt"),
          "--query",
          "What is the context about?",
          "--fake",
          files.path("fake.json"),
          "--trace",
          tracePath,
          "--quiet"
        ])
        assert.strictEqual(ran.code, 0, ran.stderr)
        const viewed = yield* runCli(["trace", "view", tracePath, "--out", htmlPath])
        assert.strictEqual(viewed.code, 0, viewed.stderr)
        assert.match(viewed.stderr, /trace view written to .*trace\.html \(2 runs, \d+ events\)/)

        yield* Effect.promise(async () => {
          const { page, problems, requests } = await open(htmlPath)
          // The totals.
          const totals = await page.locator(".totals").innerText()
          assert.include(totals, "answered")
          assert.match(totals, /2\s+runs/)
          assert.match(totals, /4\s+sub-calls/)
          // The root run is open; its step 1 is collapsed and its body not built yet.
          const step1 = page.locator("details.step").first()
          assert.strictEqual(await step1.locator(".body").count(), 0)
          await summary(page, "step", "1").click()
          const code = step1.locator("pre.code").first()
          await code.waitFor({ state: "visible" })
          assert.include(await code.innerText(), "print(len(P))")
          const body = await step1.locator(".body").innerText()
          assert.include(body, "45") // stdout: len(P)
          assert.include(body, "a summary <b onmouseover") // stdout: the batched replies, as text
          // The hostile reply is shown as text and ran nothing.
          assert.include(body, "<img src=x onerror=")
          assert.include(body, "<script>window.__pwned='script'</script>")
          assert.strictEqual(await page.evaluate(() => (window as { __pwned?: unknown }).__pwned), undefined)
          assert.strictEqual(await page.locator("img, main script, [onerror], [onmouseover]").count(), 0)
          // The three batched sub-calls, with prompt, reply, tokens and duration.
          const subs = step1.locator("details.sub")
          assert.strictEqual(await subs.count(), 3)
          await subs.first().locator("summary").click()
          await subs.first().locator(".body").waitFor()
          const sub = await subs.first().innerText()
          assert.match(sub, /llm_query/)
          assert.match(sub, /\d+ tok/)
          assert.match(sub, /\d+ ms/)
          assert.include(sub, "Summarize part")
          // Step 2 started a child run, nested under its rlm_query sub-call.
          const step2 = page.locator("details.step").nth(1)
          await step2.locator("summary").first().click()
          await step2.locator(".body").first().waitFor()
          const rlm = step2.locator("details.sub.rlm")
          await rlm.locator("summary").first().click()
          await rlm.locator(".body").first().waitFor()
          const child = rlm.locator("details.run")
          assert.strictEqual(await child.count(), 1)
          assert.include(await child.locator("summary").first().innerText(), "run/2.0")
          await child.locator("summary").first().click()
          await child.locator(".body").first().waitFor()
          assert.include(await child.innerText(), "7 words")
          // The timeline drew the batched calls on three lanes: they overlapped.
          const lanes = await page
            .locator(".tl-row")
            .filter({ has: page.locator(".tl-bar.llm_query") })
            .count()
          assert.strictEqual(lanes, 3)
          assert.deepStrictEqual(problems, [])
          assert.deepStrictEqual(requests, [])
          // The screenshot for the README: step 1 open, scrolled to the top.
          await subs.first().locator("summary").click()
          await step2.locator("summary").first().click()
          await page.evaluate(() => window.scrollTo(0, 0))
          // docs/trace-viewer.png is rewritten when missing or asked for (RLM_UPDATE_SCREENSHOT=1), so a test run
          // leaves the committed one alone; the screenshot is always taken.
          const docsShot = join(repoRoot, "docs", "trace-viewer.png")
          const update = process.env.RLM_UPDATE_SCREENSHOT === "1" || !existsSync(docsShot)
          const shot = update ? docsShot : files.path("trace-viewer.png")
          mkdirSync(dirname(shot), { recursive: true })
          await page.screenshot({ path: shot, fullPage: true })
          assert.isAbove(statSync(shot).size, 10_000)
          await page.close()

          // A timeline bar opens its call: the child run's model call opens the path down to the child's step.
          const fresh = await open(htmlPath)
          await fresh.page.locator('.tl-bar.model[data-run="run/2.0"]').first().click()
          const childStep = fresh.page.locator("details.run:not(.root) details.step").first()
          await childStep.locator("pre").first().waitFor({ state: "visible" })
          assert.include(await childStep.innerText(), "FINAL(7 words)")
          assert.deepStrictEqual(fresh.problems, [])
          await fresh.page.close()
        })
      }),
    120_000
  )

  it.live("every part of a step renders: tool calls, stderr, errors, feedback, a lost interpreter, retries", () =>
    Effect.promise(async () => {
      const trace = Trace.make([
        new TraceEvent.RunStarted({
          runId: "run",
          depth: 0,
          query: "q",
          context: { type: "documents", totalChars: 2, documentCount: 2, documentLengths: [1, 1], preview: "ab" },
          model: "m",
          language: "javascript",
          isolation: "namespace",
          timestamp: 1_700_000_000_000
        }),
        new TraceEvent.ModelCallRetried({
          runId: "run",
          step: 1,
          role: "root",
          model: "m",
          attempt: 1,
          reason: "RateLimited",
          message: "RETRY-MESSAGE",
          status: 429,
          delayMs: 500,
          usage: {}
        }),
        new TraceEvent.SubCall({
          runId: "run",
          parentStep: 1,
          kind: "llm_query",
          model: "s",
          prompt: "SUB-PROMPT",
          promptSha256: "0".repeat(64),
          promptChars: 10,
          error: "SUB-ERROR",
          usage: {},
          durationMs: 5,
          finishReason: "length"
        }),
        new TraceEvent.StepCompleted({
          runId: "run",
          step: 1,
          reply: "",
          blocks: [
            { code: "CODE-1", stdout: "", stderr: "STDERR-1", error: "ERROR-1", truncated: true, durationMs: 3 },
            { code: "CODE-2", stdout: "STDOUT-2", stderr: "", truncated: false, durationMs: 4 }
          ],
          feedback: "FEEDBACK-1",
          interpreterLost: { reason: "Crashed", message: "LOST-MESSAGE", restarts: 1 },
          toolCalls: [{ id: "call_1", name: "run_code", arguments: '{"code": "CODE-1"}' }],
          usage: { inputTokens: 3 },
          model: "m",
          modelMs: 2,
          durationMs: 20,
          finishReason: "tool-calls"
        }),
        new TraceEvent.FinalAnswer({ runId: "run", step: 1, source: "forced", answer: "ANSWER" }),
        new TraceEvent.RunFinished({
          runId: "run",
          status: "budget_exceeded",
          steps: 1,
          subCalls: 1,
          usage: { inputTokens: 3 },
          costUsd: 0.0123,
          durationMs: 30,
          error: "RUN-ERROR"
        })
      ])
      const htmlPath = files.path("all.html")
      writeFileSync(htmlPath, TraceView.render(trace))
      const { page, problems } = await open(htmlPath)
      const totals = await page.locator(".totals").innerText()
      assert.include(totals, "budget_exceeded")
      assert.include(totals, "$0.0123")
      assert.match(totals, /1\s+retried attempts/)
      // textContent: the labels are upper-cased by CSS only.
      const run = (await page.locator("details.run").first().textContent()) ?? ""
      for (const text of ["RUN-ERROR", "ANSWER", "forced", "documents", "namespace"]) assert.include(run, text)
      await page.locator("details.step > summary").first().click()
      await page.locator("details.sub > summary").first().click()
      await page.locator("details.sub > .body").first().waitFor()
      const step = (await page.locator("details.step").first().textContent()) ?? ""
      for (const text of [
        "tool call run_code (call_1)",
        '{"code": "CODE-1"}',
        "CODE-1",
        "STDERR-1",
        "ERROR-1",
        "output truncated",
        "CODE-2",
        "STDOUT-2",
        "FEEDBACK-1",
        "interpreter lost (Crashed, restart 1)",
        "LOST-MESSAGE",
        "retried root call, attempt 1 (RateLimited 429, waited 500 ms)",
        "RETRY-MESSAGE",
        "SUB-PROMPT",
        "SUB-ERROR",
        "tool-calls",
        "length"
      ]) {
        assert.include(step, text)
      }
      assert.deepStrictEqual(problems, [])
      await page.close()
    })
  )

  it.live("hostile run ids (__proto__, toString, a parent cycle) do not break the page", () =>
    Effect.promise(async () => {
      const run = (runId: string, parent?: string) =>
        new TraceEvent.RunStarted({
          runId,
          ...(parent !== undefined ? { parentRunId: parent, parentStep: 1 } : {}),
          depth: parent === undefined ? 0 : 1,
          query: `query of ${runId}`,
          context: { type: "text", totalChars: 1, documentCount: 1, documentLengths: [1], preview: "x" },
          model: "m",
          language: "python",
          isolation: "process",
          timestamp: 1_700_000_000_000
        })
      const trace = Trace.make([
        run("__proto__"),
        run("toString", "__proto__"),
        new TraceEvent.SubCall({
          runId: "__proto__",
          parentStep: 1,
          kind: "rlm_query",
          model: "m",
          prompt: "p",
          promptSha256: "0".repeat(64),
          promptChars: 1,
          usage: {},
          durationMs: 1,
          childRunId: "toString"
        }),
        new TraceEvent.StepCompleted({
          runId: "__proto__",
          step: 1,
          reply: "r",
          blocks: [],
          usage: {},
          model: "m",
          modelMs: 1,
          durationMs: 2
        }),
        run("a", "b"),
        run("b", "a")
      ])
      const htmlPath = files.path("ids.html")
      writeFileSync(htmlPath, TraceView.render(trace))
      const { page, problems } = await open(htmlPath)
      const runs = await page.locator("details.run > summary").allInnerTexts()
      assert.strictEqual(runs.length, 2)
      assert.include(runs[0], "__proto__")
      await page.locator('.tl-bar.model[data-run="__proto__"]').first().click()
      await page.locator("details.sub.rlm > summary").first().click()
      await page.locator("details.sub.rlm details.run > summary").first().waitFor()
      assert.include(await page.locator("details.sub.rlm details.run > summary").first().innerText(), "toString")
      assert.deepStrictEqual(problems, [])
      await page.close()
    })
  )

  it.live(
    "a 50 MB trace opens without freezing: interactive in seconds, a step expands at once",
    () =>
      Effect.promise(async () => {
        const steps = 250
        const events: Array<TraceEvent.TraceEvent> = [
          new TraceEvent.RunStarted({
            runId: "run",
            depth: 0,
            query: "A big one.",
            context: { type: "text", totalChars: 1e8, documentCount: 1, documentLengths: [1e8], preview: "…" },
            model: "big",
            language: "python",
            isolation: "process",
            timestamp: 1_700_000_000_000
          })
        ]
        const filler = (n: number, seed: number) => `line ${seed} <tag> & "quotes"\n`.repeat(n)
        for (let step = 1; step <= steps; step++) {
          for (let i = 0; i < 8; i++) {
            events.push(
              new TraceEvent.SubCall({
                runId: "run",
                parentStep: step,
                kind: "llm_query",
                model: "small",
                prompt: filler(200, i),
                promptSha256: "0".repeat(64),
                promptChars: 6000,
                reply: filler(20, i),
                usage: { inputTokens: 1500, outputTokens: 150, totalTokens: 1650 },
                durationMs: 100 + i * 10
              })
            )
          }
          events.push(
            new TraceEvent.StepCompleted({
              runId: "run",
              step,
              reply: `Step ${step}.\n${filler(400, step)}`,
              blocks: [
                {
                  code: `print("step ${step}")\n${filler(20, step)}`,
                  stdout: `STDOUT-OF-STEP-${step}\n${filler(5200, step)}`,
                  stderr: "",
                  truncated: false,
                  durationMs: 180
                }
              ],
              usage: { inputTokens: 10_000, outputTokens: 500, totalTokens: 10_500 },
              model: "big",
              modelMs: 400,
              durationMs: 600
            })
          )
        }
        events.push(
          new TraceEvent.FinalAnswer({ runId: "run", step: steps, source: "FINAL", answer: "done" }),
          new TraceEvent.RunFinished({
            runId: "run",
            status: "answered",
            steps,
            subCalls: steps * 8,
            usage: {},
            durationMs: steps * 600 + 1000
          })
        )
        const trace = Trace.make(events)
        const tracePath = files.path("big.json")
        writeFileSync(tracePath, Trace.toJson(trace, { pretty: false }))
        const traceMb = statSync(tracePath).size / 1e6
        const rendering = performance.now()
        const html = TraceView.render(trace)
        const renderMs = performance.now() - rendering
        const htmlPath = files.path("big.html")
        writeFileSync(htmlPath, html)
        assert.isAbove(traceMb, 50)

        const { page, problems, readyMs } = await open(htmlPath)
        const step = page.locator("details.step").nth(steps - 1)
        const expanding = performance.now()
        await step.locator("summary").first().click()
        await step.locator("pre.code").first().waitFor({ state: "visible" })
        const expandMs = performance.now() - expanding
        const stdout = await step.locator(".body").innerText()
        assert.include(stdout, `STDOUT-OF-STEP-${steps}`)
        assert.include(stdout, "show all")
        // "show all" puts the whole stdout (5,200 lines) in place of the cut.
        const stdoutBox = step.locator("pre").filter({ hasText: `STDOUT-OF-STEP-${steps}` })
        assert.isBelow((await stdoutBox.innerText()).length, 3000)
        await stdoutBox.locator("xpath=following-sibling::button").click()
        assert.isAbove((await stdoutBox.innerText()).length, 100_000)
        // Only the open step's body was built: the page is not holding 50 MB of DOM.
        assert.strictEqual(await page.locator("details.step > .body").count(), 1)
        assert.deepStrictEqual(problems, [])
        console.log(
          `TraceViewBrowser: ${traceMb.toFixed(1)} MB trace (${events.length} events): render ${Math.round(renderMs)} ms, page interactive ${Math.round(readyMs)} ms, a step expands in ${Math.round(expandMs)} ms`
        )
        assert.isBelow(readyMs, 20_000)
        assert.isBelow(expandMs, 2_000)
        assert.isTrue(readFileSync(htmlPath, "utf8").length > 50e6)
        await page.close()
      }),
    180_000
  )
})
