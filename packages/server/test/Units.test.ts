import { readdirSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import * as Admission from "@rlm-runtime/server/Admission"
import * as ContextStore from "@rlm-runtime/server/ContextStore"
import * as OpenAiChat from "@rlm-runtime/server/OpenAiChat"
import * as Server from "@rlm-runtime/server/Server"
import { Effect, Either, Fiber, FastCheck as fc, Ref, Stream } from "effect"
import { tempDir } from "./utils.js"

describe("Admission", () => {
  it.effect.prop(
    "all at once: min(n, concurrent + queue) admitted, the rest refused; never more than `concurrent` running; every admitted one runs",
    [fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 12 })],
    ([maxConcurrent, maxQueue, n]) =>
      Effect.gen(function* () {
        const admission = yield* Admission.make({ maxConcurrent, maxQueue })
        const reserved = yield* Effect.forEach(Array.from({ length: n }), () => Effect.either(admission.reserve))
        const slots = reserved.flatMap((r) => (Either.isRight(r) ? [r.right] : []))
        const refused = reserved.flatMap((r) => (Either.isLeft(r) ? [r.left] : []))
        assert.strictEqual(slots.length, Math.min(n, maxConcurrent + maxQueue))
        assert.strictEqual(refused.length, n - slots.length)
        for (const e of refused) assert.isAtLeast(e.retryAfterSeconds, 1)
        const running = yield* Ref.make(0)
        const peak = yield* Ref.make(0)
        const done = yield* Ref.make(0)
        const work = Effect.gen(function* () {
          const now = yield* Ref.updateAndGet(running, (x) => x + 1)
          yield* Ref.update(peak, (p) => Math.max(p, now))
          yield* Effect.yieldNow()
          yield* Effect.yieldNow()
          yield* Ref.update(running, (x) => x - 1)
          yield* Ref.update(done, (x) => x + 1)
        })
        const fibers = yield* Effect.forEach(slots, (slot) => Effect.fork(slot.run(work)))
        yield* Fiber.joinAll(fibers)
        assert.isAtMost(yield* Ref.get(peak), maxConcurrent)
        assert.strictEqual(yield* Ref.get(done), slots.length)
        const stats = yield* admission.stats
        assert.deepStrictEqual([stats.running, stats.queued], [0, 0])
        // Places are given back: as many can be admitted again.
        const again = yield* Effect.forEach(Array.from({ length: maxConcurrent + maxQueue }), () => admission.reserve)
        yield* Effect.forEach(again, (slot) => slot.release)
      })
  )

  it.effect("a waiting run that is interrupted gives its place back", () =>
    Effect.gen(function* () {
      const admission = yield* Admission.make({ maxConcurrent: 1, maxQueue: 1 })
      const first = yield* admission.reserve
      const second = yield* admission.reserve
      const blocker = yield* Effect.fork(first.run(Effect.never))
      yield* Effect.yieldNow()
      const waiting = yield* Effect.fork(second.run(Effect.void))
      yield* Effect.yieldNow()
      assert.deepStrictEqual(yield* admission.stats, { running: 1, queued: 1, maxConcurrent: 1, maxQueue: 1 })
      assert.isTrue(Either.isLeft(yield* Effect.either(admission.reserve)))
      yield* Fiber.interrupt(waiting)
      yield* Fiber.interrupt(blocker)
      assert.deepStrictEqual(yield* admission.stats, { running: 0, queued: 0, maxConcurrent: 1, maxQueue: 1 })
    })
  )
})

describe("OpenAiChat", () => {
  it("the last user message is the query; the earlier ones, rendered by role, the context", () => {
    const split = OpenAiChat.split([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Here is the report." },
      { role: "assistant", content: "Noted.", name: "bot" },
      {
        role: "user",
        content: [
          { type: "text", text: "What does it say" },
          { type: "text", text: "about Q3?" }
        ]
      }
    ])
    assert.isTrue(Either.isRight(split))
    if (Either.isLeft(split)) return
    assert.strictEqual(split.right.query, "What does it say\nabout Q3?")
    assert.deepStrictEqual(
      OpenAiChat.renderContext(split.right.history),
      Either.right("system: Be brief.\n\nuser: Here is the report.\n\nassistant (bot): Noted.")
    )
  })

  it.prop(
    "any conversation ending with a user's text splits into that text and the rest",
    [
      fc.array(
        fc.record({
          role: fc.constantFrom("system" as const, "user" as const, "assistant" as const),
          content: fc.string()
        })
      ),
      fc.string({ minLength: 1 }).filter((s) => s.trim().length > 0)
    ],
    ([history, query]) => {
      const split = OpenAiChat.split([...history, { role: "user", content: query }])
      assert.deepStrictEqual(split, Either.right({ query, history }))
    }
  )

  it("a run's errors map to statuses: budget 422, model 502, timeout 504, interrupted 503", () => {
    const cases = [
      [{ _tag: "BudgetExceeded", limit: "maxSteps", message: "m" }, 422, "budget_exceeded_error"],
      [{ _tag: "RunFailed", reason: "Model", message: "m" }, 502, "upstream_error"],
      [{ _tag: "RunFailed", reason: "Timeout", message: "m" }, 504, "timeout_error"],
      [{ _tag: "RunFailed", reason: "Sandbox", message: "m" }, 500, "server_error"],
      [{ _tag: "Interrupted", message: "m" }, 503, "server_error"]
    ] as const
    for (const [error, status, type] of cases) {
      const e = OpenAiChat.runError(error, "run_1")
      assert.strictEqual(e.status, status)
      assert.strictEqual(e.type, type)
      assert.include(e.message, "run_1")
    }
  })
})

describe("safety helpers", () => {
  it.prop("tokenMatches is string equality", [fc.string(), fc.string()], ([a, b]) => {
    assert.strictEqual(Server.tokenMatches(a, b), a === b)
    assert.isTrue(Server.tokenMatches(a, a))
  })

  it("isLoopback", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"])
      assert.isTrue(Server.isLoopback(host), host)
    for (const host of ["0.0.0.0", "::", "192.168.1.2", "10.0.0.1", "example.com", "128.0.0.1"]) {
      assert.isFalse(Server.isLoopback(host), host)
    }
  })
})

describe("ContextStore", () => {
  it.live("put streams to a file, get reads it back; ids that are not the store's are not found", () =>
    Effect.gen(function* () {
      const dir = tempDir("store")
      const store = yield* ContextStore.make({ dir, maxBytes: 1000 })
      const text = "héllo wörld, ".repeat(20)
      const bytes = new TextEncoder().encode(text)
      // Split inside a multi-byte character on purpose.
      const info = yield* store.put(Stream.make(bytes.slice(0, 2), bytes.slice(2)))
      assert.strictEqual(info.bytes, bytes.byteLength)
      assert.strictEqual(yield* store.get(info.id), text)
      assert.deepStrictEqual(yield* store.info(info.id), info)
      for (const id of ["ctx_0", "../x", `${info.id}/..`, "ctx_ffffffffffffffffffffffffffffffff"]) {
        const e = yield* Effect.flip(store.get(id))
        assert.strictEqual(e.reason, "NotFound", id)
      }
      const big = yield* Effect.flip(store.put(Stream.make(new Uint8Array(600), new Uint8Array(600))))
      assert.strictEqual(big.reason, "TooLarge")
      const notText = yield* Effect.flip(store.put(Stream.make(new Uint8Array([0xff, 0xfe, 0xfd]))))
      assert.strictEqual(notText.reason, "NotText")
      assert.sameMembers(readdirSync(dir), [`${info.id}.txt`, `${info.id}.json`])
      yield* store.remove(info.id)
      assert.deepStrictEqual(readdirSync(dir), [])
    })
  )
})
