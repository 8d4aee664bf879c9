import { assert, describe, it } from "@effect/vitest"
import { FastCheck } from "effect"
import {
  dirtyOutsideRuns,
  encode,
  MAGIC,
  PAGE,
  type Read,
  readHead,
  restoreInto,
  scanImage,
  withRestoreHook
} from "../runtime/snapshot-image.mjs"

/** Sequential reads over bytes, like the worker's reader of a cached file. */
const reader = (bytes: Uint8Array): Read => {
  let at = 0
  return (target) => {
    if (at + target.length > bytes.length) throw new Error("the snapshot ended early")
    target.set(bytes.subarray(at, at + target.length))
    at += target.length
  }
}

/** A Pyodide-like snapshot: a prefix whose u32 at offset 4 is its length, then the memory image. */
const snapshot = (prefixLength: number, pages: ReadonlyArray<number>, tail: number) => {
  const imageLength = pages.length * PAGE + tail
  const full = new Uint8Array(prefixLength + imageLength)
  full.fill(0xab, 0, prefixLength)
  new DataView(full.buffer).setUint32(4, prefixLength, true)
  pages.forEach((fill, i) => {
    // 0: a zero page; otherwise a page with a few bytes set (one near its end).
    if (fill === 0) return
    const at = prefixLength + i * PAGE
    full[at + ((fill * 37) % PAGE)] = fill
    full[at + PAGE - 1] = fill
  })
  if (tail > 0) full[full.length - 1] = 7
  return full
}

const arbitrarySnapshot = FastCheck.record({
  prefixLength: FastCheck.integer({ min: 16, max: 300 }).map((n) => n * 4),
  pages: FastCheck.array(FastCheck.oneof(FastCheck.constant(0), FastCheck.integer({ min: 1, max: 255 })), {
    maxLength: 40
  }),
  tail: FastCheck.integer({ min: 0, max: PAGE - 1 }),
  dirty: FastCheck.array(FastCheck.nat(), { maxLength: 6 })
})

/** What a fresh interpreter's memory looks like before a restore: zero, with a few pages written. */
const freshMemory = (length: number, dirtyPages: ReadonlyArray<number>) => {
  const memory = new Uint8Array(length + 3 * PAGE)
  for (const page of dirtyPages) {
    const at = (page % Math.max(1, Math.ceil(length / PAGE))) * PAGE
    if (at < length) memory[at] = 0x5a
  }
  return memory
}

describe("snapshot image format", () => {
  it.prop(
    "restoring an encoded snapshot into a fresh memory reproduces the image exactly",
    [arbitrarySnapshot],
    ([{ dirty, pages, prefixLength, tail }]) => {
      const full = snapshot(prefixLength, pages, tail)
      const scanned = scanImage(full)
      // The build: learn which written pages the image has zero.
      const probe = freshMemory(scanned.image.length, dirty)
      const zeros = dirtyOutsideRuns(scanned.runs, probe, scanned.image.length)
      // A restore into another fresh memory written the same way.
      const read = reader(encode(scanned, zeros))
      const head = readHead(read)
      assert.deepStrictEqual(head.full.subarray(0, prefixLength), full.subarray(0, prefixLength))
      assert.strictEqual(head.full.length, full.length)
      const memory = freshMemory(scanned.image.length, dirty)
      restoreInto(head, memory, read)
      assert.deepStrictEqual(memory.subarray(0, head.imageLength), full.subarray(prefixLength))
      assert.isTrue(memory.subarray(head.imageLength).every((b) => b === 0))
    },
    { fastCheck: { numRuns: 60 } }
  )

  it.prop(
    "the file holds only the non-zero pages, and every truncation of it is refused",
    [arbitrarySnapshot, FastCheck.double({ min: 0, max: 1, noNaN: true })],
    ([{ pages, prefixLength, tail }, cut]) => {
      const full = snapshot(prefixLength, pages, tail)
      const scanned = scanImage(full)
      const bytes = encode(scanned)
      const nonZero = pages.filter((p) => p !== 0).length * PAGE + tail
      const tables = scanned.runs.length * 8
      assert.strictEqual(bytes.length, 24 + tables + prefixLength + nonZero)
      assert.strictEqual(Buffer.from(bytes.subarray(0, 8)).toString("latin1"), MAGIC)
      const truncated = bytes.subarray(0, Math.floor(cut * (bytes.length - 1)))
      assert.throws(() => {
        const read = reader(truncated)
        restoreInto(readHead(read), new Uint8Array(scanned.image.length), read)
      }, /ended early/)
    },
    { fastCheck: { numRuns: 60 } }
  )

  it("a file that is not a snapshot, or whose tables are inconsistent, is refused before anything is restored", () => {
    const scanned = scanImage(snapshot(64, [1, 0, 2, 3], 100))
    const bytes = encode(scanned)
    const notOurs = bytes.slice()
    notOurs[0] = 0
    assert.throws(() => readHead(reader(notOurs)), /not an rlm-runtime snapshot/)
    const overlapping = bytes.slice()
    // The second run starts inside the first.
    new DataView(overlapping.buffer).setUint32(24 + 8, 0, true)
    assert.throws(() => readHead(reader(overlapping)), /corrupt snapshot table/)
    // The last run moved past the end of the image.
    const outside = bytes.slice()
    const runs = new DataView(outside.buffer).getUint32(16, true)
    new DataView(outside.buffer).setUint32(24 + (runs - 1) * 8, 4 * PAGE, true)
    assert.throws(() => readHead(reader(outside)), /corrupt snapshot table/)
  })

  it("the restore hook replaces exactly Pyodide's copy of the image, and fails if that copy never happens", async () => {
    const full = snapshot(64, [9, 0, 4], 0)
    const read = reader(encode(scanImage(full)))
    const head = readHead(read)
    const heap = new Int8Array(head.imageLength + PAGE)
    const other = new Int8Array(4)
    // What Pyodide's restoreSnapshot does: HEAP8.set(snapshot.subarray(prefixLength)).
    const restored = await withRestoreHook(
      head,
      (target) => restoreInto(head, target, read),
      async () => {
        other.set([1, 2, 3, 4])
        heap.set(head.full.subarray(head.prefixLength) as unknown as Int8Array)
        return "loaded"
      }
    )
    assert.strictEqual(restored, "loaded")
    assert.deepStrictEqual(new Uint8Array(heap.buffer, 0, head.imageLength), full.subarray(64))
    assert.deepStrictEqual([...other], [1, 2, 3, 4])
    assert.isFalse(Object.hasOwn(Int8Array.prototype, "set"), "the hook is removed")
    let error: unknown
    try {
      await withRestoreHook(
        head,
        () => {},
        async () => "loaded"
      )
    } catch (e) {
      error = e
    }
    assert.match(String(error), /did not restore the snapshot image/)
    assert.isFalse(Object.hasOwn(Int8Array.prototype, "set"))
  })
})
