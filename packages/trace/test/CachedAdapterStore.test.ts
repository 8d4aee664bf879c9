import { mkdtempSync, readdirSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as KeyValueStore from "@effect/platform/KeyValueStore"
import * as NodeKeyValueStore from "@effect/platform-node/NodeKeyValueStore"
import { assert, describe, it } from "@effect/vitest"
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as CachedAdapter from "@rlm-runtime/trace/CachedAdapter"
import * as LlmCache from "@rlm-runtime/trace/LlmCache"
import { Effect, Layer, Ref } from "effect"

const request = (role: LlmAdapter.CallRole, content: string) =>
  new LlmAdapter.ChatRequest({ role, messages: [new LlmAdapter.ChatMessage({ role: "user", content })] })

/** A model counting its calls by role, answering differently every time. */
const countingModel = (calls: Ref.Ref<{ root: number; sub: number }>) =>
  Layer.succeed(
    LlmAdapter.LlmAdapter,
    LlmAdapter.make({
      model: () => "counted",
      chat: (req) =>
        Ref.updateAndGet(calls, (c) => ({ ...c, [req.role]: c[req.role] + 1 })).pipe(
          Effect.map(
            (c) =>
              new LlmAdapter.ChatResponse({
                text: `answer #${c[req.role]} to ${req.messages.at(-1)?.content}`,
                model: "counted",
                usage: new LlmAdapter.Usage({ inputTokens: 3, outputTokens: 1 }),
                finishReason: "stop"
              })
          )
        )
    })
  )

/** One "run": two root turns and three sub-calls, one of them asked twice. */
const aRun = Effect.gen(function* () {
  const adapter = yield* LlmAdapter.LlmAdapter
  const out: Array<string> = []
  for (const r of [
    request("root", "turn 1"),
    request("sub", "chunk a"),
    request("sub", "chunk b"),
    request("sub", "chunk a"),
    request("root", "turn 2")
  ]) {
    out.push((yield* adapter.chat(r)).text)
  }
  return out
})

const withStore = (
  calls: Ref.Ref<{ root: number; sub: number }>,
  store: Layer.Layer<KeyValueStore.KeyValueStore, unknown>
) => CachedAdapter.layerStore().pipe(Layer.provide(countingModel(calls)), Layer.provide(store))

describe("CachedAdapter.layerStore: a sub-call cache across runs", () => {
  it.effect("a second run with the same prompts makes no sub-call to the model; root calls always go", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(join(tmpdir(), "rlm-kv-"))
      const calls = yield* Ref.make({ root: 0, sub: 0 })
      const first = yield* Effect.provide(aRun, withStore(calls, NodeKeyValueStore.layerFileSystem(dir)))
      assert.deepStrictEqual(yield* Ref.get(calls), { root: 2, sub: 2 })
      // The repeated prompt was answered from the store within the run too.
      assert.strictEqual(first[3], first[1])
      assert.strictEqual(readdirSync(dir).length, 2)
      // A new store over the same directory: a later run.
      const second = yield* Effect.provide(aRun, withStore(calls, NodeKeyValueStore.layerFileSystem(dir)))
      assert.deepStrictEqual(yield* Ref.get(calls), { root: 4, sub: 2 })
      assert.deepStrictEqual([second[1], second[2], second[3]], [first[1], first[2], first[3]])
      assert.notStrictEqual(second[0], first[0])
    })
  )

  it.effect("entries are keyed by LlmCache.keyOf and keep the whole response", () =>
    Effect.gen(function* () {
      const calls = yield* Ref.make({ root: 0, sub: 0 })
      const store = yield* KeyValueStore.KeyValueStore
      yield* Effect.provide(aRun, withStore(calls, Layer.succeed(KeyValueStore.KeyValueStore, store)))
      const cached = yield* store.forSchema(LlmAdapter.ChatResponse).get(LlmCache.keyOf(request("sub", "chunk b")))
      assert.strictEqual(cached._tag, "Some")
      if (cached._tag === "Some") {
        assert.strictEqual(cached.value.text, "answer #2 to chunk b")
        assert.strictEqual(cached.value.finishReason, "stop")
        assert.strictEqual(cached.value.usage.inputTokens, 3)
      }
    }).pipe(Effect.provide(KeyValueStore.layerMemory))
  )

  it.effect("an unreadable entry is a miss, not a failure: the model is asked and the entry rewritten", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(join(tmpdir(), "rlm-kv-"))
      writeFileSync(join(dir, LlmCache.keyOf(request("sub", "chunk a"))), "{ not a response")
      const calls = yield* Ref.make({ root: 0, sub: 0 })
      const out = yield* Effect.provide(aRun, withStore(calls, NodeKeyValueStore.layerFileSystem(dir)))
      assert.deepStrictEqual(yield* Ref.get(calls), { root: 2, sub: 2 })
      assert.strictEqual(out[1], "answer #1 to chunk a")
    })
  )
})
