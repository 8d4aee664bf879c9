import { PassThrough } from "node:stream"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FastCheck } from "effect"
import { chunkRanges, writeUtf8 } from "../src/internal/utf8Stream.js"

/** Strings mixing ASCII, BMP, astral characters (surrogate pairs) and lone surrogates. */
const text = FastCheck.array(
  FastCheck.oneof(
    FastCheck.string({ maxLength: 6 }),
    FastCheck.string({ unit: "binary", maxLength: 6 }),
    FastCheck.integer({ min: 0xd800, max: 0xdfff }).map((code) => String.fromCharCode(code))
  ),
  { maxLength: 12 }
).map((parts) => parts.join(""))

const collect = (texts: ReadonlyArray<string>, units: number) =>
  Effect.gen(function* () {
    const output = new PassThrough({ highWaterMark: 4 })
    const chunks: Array<Buffer> = []
    output.on("data", (chunk: Buffer) => chunks.push(Buffer.from(chunk)))
    yield* writeUtf8(output, texts, () => false, units)
    return Buffer.concat(chunks)
  })

describe("UTF-8 streaming of the context", () => {
  it.prop(
    "chunks never split a surrogate pair, cover the text in order, and hold at most the given units",
    [text, FastCheck.integer({ min: 2, max: 7 })],
    ([s, units]) => {
      const ranges = chunkRanges(s, units)
      let at = 0
      for (const [start, end] of ranges) {
        assert.strictEqual(start, at)
        assert.isAbove(end, start)
        assert.isAtMost(end - start, units)
        const high = s.charCodeAt(end - 1)
        const low = s.charCodeAt(end)
        assert.isFalse(high >= 0xd800 && high <= 0xdbff && low >= 0xdc00 && low <= 0xdfff, "a pair was split")
        at = end
      }
      assert.strictEqual(at, s.length)
      assert.strictEqual(
        Buffer.concat(ranges.map(([start, end]) => Buffer.from(s.slice(start, end), "utf8"))).toString("hex"),
        Buffer.from(s, "utf8").toString("hex")
      )
    },
    { fastCheck: { numRuns: 300 } }
  )

  it.effect.prop(
    "the bytes written are each text's own UTF-8 encoding, in order, and their count is Buffer.byteLength",
    [FastCheck.array(text, { maxLength: 4 }), FastCheck.integer({ min: 2, max: 9 })],
    ([texts, units]) =>
      Effect.gen(function* () {
        const written = yield* collect(texts, units)
        const expected = Buffer.concat(texts.map((s) => Buffer.from(s, "utf8")))
        assert.strictEqual(written.toString("hex"), expected.toString("hex"))
        assert.strictEqual(
          written.length,
          texts.reduce((n, s) => n + Buffer.byteLength(s, "utf8"), 0)
        )
      }),
    { fastCheck: { numRuns: 100 } }
  )

  it.effect("a large text goes through two reused scratch buffers, and writing stops when the reader is gone", () =>
    Effect.gen(function* () {
      const big = "abc😀".repeat(300_000)
      const written = yield* collect([big, "", "tail"], 1 << 16)
      assert.isTrue(written.equals(Buffer.from(`${big}tail`, "utf8")))
      // The reader dies after 1 MB: at most the two chunks in flight follow.
      const output = new PassThrough()
      let bytes = 0
      output.on("data", (chunk: Buffer) => {
        bytes += chunk.length
      })
      yield* writeUtf8(output, ["x".repeat(50_000_000)], () => bytes >= 1 << 20, 1 << 16)
      assert.isAtLeast(bytes, 1 << 20)
      assert.isAtMost(bytes, (1 << 20) + 2 * (1 << 16))
    })
  )
})
