import { assert, describe, it } from "@effect/vitest"
import { JavascriptSandbox, Sandbox } from "@rlm-runtime/sandbox"
import { Effect, FastCheck, Option } from "effect"
import * as RlmContext from "../src/RlmContext.js"

const indexOfAll = (text: string, needle: string, from: number) => {
  const out: Array<number> = []
  for (let i = Math.max(0, from); i + needle.length <= text.length; i++) if (text.startsWith(needle, i)) out.push(i)
  return out
}

describe("RlmContext", () => {
  it("builds from one text", () => {
    const ctx = RlmContext.make("hello world")
    assert.strictEqual(ctx.type, "text")
    assert.strictEqual(ctx.text, "hello world")
    assert.isUndefined(ctx.documents)
  })

  it("builds from documents, joined with the separator", () => {
    const ctx = RlmContext.make(["a", "bb", "ccc"])
    assert.strictEqual(ctx.type, "documents")
    assert.strictEqual(ctx.text, ["a", "bb", "ccc"].join(RlmContext.DOCUMENT_SEPARATOR))
    const meta = RlmContext.metadata(ctx)
    assert.deepStrictEqual(meta.documentLengths, [1, 2, 3])
    assert.strictEqual(meta.documentCount, 3)
    assert.strictEqual(meta.totalChars, ctx.text.length)
  })

  it("metadata holds only a short preview", () => {
    const ctx = RlmContext.make("x".repeat(10_000))
    const meta = RlmContext.metadata(ctx, { previewChars: 50 })
    assert.strictEqual(meta.preview.length, 50)
    assert.strictEqual(meta.totalChars, 10_000)
    assert.include(RlmContext.describe(meta), "Total characters: 10000")
  })

  it("slice is deterministic and clamps like String.slice", () => {
    const ctx = RlmContext.make("abcdef")
    assert.strictEqual(RlmContext.slice(ctx, 1, 3), "bc")
    assert.strictEqual(RlmContext.slice(ctx, 4, 100), "ef")
  })

  it("find returns overlapping hits and honours from", () => {
    const ctx = RlmContext.make("aaaa")
    assert.deepStrictEqual(RlmContext.find(ctx, "aa"), [0, 1, 2])
    assert.deepStrictEqual(RlmContext.find(ctx, "aa", { from: 2 }), [2])
    assert.deepStrictEqual(RlmContext.find(ctx, ""), [])
  })

  it("chunk rejects bad sizes with a typed error", () => {
    const ctx = RlmContext.make("abc")
    assert.throws(() => RlmContext.chunk(ctx, 0), /size must be/)
    assert.throws(() => RlmContext.chunk(ctx, 2, 2), /overlap/)
  })

  const smallText = FastCheck.string({ unit: FastCheck.constantFrom("a", "b", "c", "\n"), maxLength: 200 })

  it.prop(
    "find agrees with a scan by startsWith / indexOf",
    [
      smallText,
      FastCheck.string({ unit: FastCheck.constantFrom("a", "b"), minLength: 1, maxLength: 3 }),
      FastCheck.nat(50)
    ],
    ([text, needle, from]) => {
      const ctx = RlmContext.make(text)
      assert.deepStrictEqual(RlmContext.find(ctx, needle, { from }), indexOfAll(text, needle, from))
      const first = RlmContext.find(ctx, needle)[0]
      assert.strictEqual(first ?? -1, text.indexOf(needle))
    }
  )

  it.prop(
    "chunks cover the text in order",
    [smallText, FastCheck.integer({ min: 1, max: 40 }), FastCheck.integer({ min: 0, max: 39 })],
    ([text, size, rawOverlap]) => {
      const overlap = rawOverlap % size
      const chunks = RlmContext.chunk(RlmContext.make(text), size, overlap)
      const step = size - overlap
      // every chunk starts where it should and has the right text
      for (const [i, c] of chunks.entries()) assert.strictEqual(c, text.slice(i * step, i * step + size))
      // removing the overlaps gives back the text
      const rebuilt = chunks.map((c, i) => (i === chunks.length - 1 ? c : c.slice(0, step))).join("")
      assert.strictEqual(rebuilt, text)
      if (text.length === 0) assert.strictEqual(chunks.length, 0)
      else assert.isTrue((chunks.at(-1) as string).length > 0)
    }
  )

  // The deprecated host accessors give what the REPL's helpers give model code (what to migrate to).
  it.live("slice, find and chunk agree with the JavaScript REPL's helpers", () =>
    Effect.gen(function* () {
      const sandbox = yield* Sandbox.Sandbox
      const host: Sandbox.HostFunctions = {
        llmQuery: () => Effect.succeed(""),
        llmQueryBatched: () => Effect.succeed([]),
        rlmQuery: () => Effect.succeed(""),
        rlmQueryBatched: () => Effect.succeed([])
      }
      const cases = FastCheck.sample(
        FastCheck.tuple(
          FastCheck.string({ unit: FastCheck.constantFrom("a", "b", "c"), maxLength: 60 }),
          FastCheck.string({ unit: FastCheck.constantFrom("a", "b"), minLength: 1, maxLength: 3 }),
          FastCheck.nat(70),
          FastCheck.nat(70),
          FastCheck.integer({ min: 1, max: 20 }),
          FastCheck.nat(19)
        ),
        { numRuns: 6, seed: 11 }
      )
      for (const [text, needle, start, end, size, rawOverlap] of cases) {
        const overlap = rawOverlap % size
        const ctx = RlmContext.make(text)
        const got = yield* Effect.scoped(
          Effect.gen(function* () {
            const repl = yield* sandbox.open({ context: { text }, host })
            yield* repl.exec(
              `var out = JSON.stringify([slice(${start}, ${end}), find(${JSON.stringify(needle)}, ${start}), chunk(${size}, ${overlap})])`
            )
            return Option.getOrThrow(yield* repl.getVar("out"))
          })
        )
        assert.deepStrictEqual(JSON.parse(got), [
          RlmContext.slice(ctx, start, end),
          RlmContext.find(ctx, needle, { from: start }),
          RlmContext.chunk(ctx, size, overlap)
        ])
      }
    }).pipe(Effect.provide(JavascriptSandbox.layer()))
  )
})
