import { execFile } from "node:child_process"
import { readFileSync, statSync, utimesSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"

const root = fileURLToPath(new URL("../../..", import.meta.url))
const launcher = fileURLToPath(new URL("../bin/rlm.mjs", import.meta.url))
const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
  readonly bin: Record<string, string>
}

/** The `rlm` bin as installed: `node packages/cli/bin/rlm.mjs <args>`, no tsx. */
const rlm = (args: ReadonlyArray<string>) =>
  Effect.async<{ code: number | null; stdout: string; stderr: string }>((resume) => {
    const child = execFile(process.execPath, [launcher, ...args], { cwd: root }, (error, stdout, stderr) =>
      resume(Effect.succeed({ code: error === null ? 0 : (error.code as number | null), stdout, stderr }))
    )
    return Effect.sync(() => child.kill("SIGKILL"))
  })

describe("the rlm bin (packages/cli/bin/rlm.mjs)", () => {
  it("is what package.json's bin names, a committed file", () => {
    assert.strictEqual(pkg.bin.rlm, "./bin/rlm.mjs")
    assert.isTrue((statSync(launcher).mode & 0o111) !== 0, "executable")
  })

  it.live("runs the built CLI, bringing a stale output up to date first", () =>
    Effect.gen(function* () {
      // An output older than its source is transpiled again before the CLI starts.
      const out = fileURLToPath(new URL("../dist/TerminalText.js", import.meta.url))
      utimesSync(out, new Date(0), new Date(0))
      const r = yield* rlm([
        "run",
        "--context",
        "examples/seed.context.txt",
        "--query",
        "Summarize the context.",
        "--fake",
        "examples/seed.fake.js.json",
        "--sandbox",
        "js",
        "--quiet"
      ])
      assert.strictEqual(r.code, 0, r.stderr)
      assert.strictEqual(r.stdout, "fake summary\n")
      assert.isAbove(statSync(out).mtimeMs, 0)
      assert.isAtLeast(
        statSync(out).mtimeMs,
        statSync(fileURLToPath(new URL("../src/TerminalText.ts", import.meta.url))).mtimeMs
      )
    })
  )
})
