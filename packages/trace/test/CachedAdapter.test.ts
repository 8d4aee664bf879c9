import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { assert, describe, it } from "@effect/vitest"
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as CachedAdapter from "@rlm-runtime/trace/CachedAdapter"
import * as Hash from "@rlm-runtime/trace/Hash"
import * as LlmCache from "@rlm-runtime/trace/LlmCache"
import { Effect, Layer, Ref, Schema } from "effect"

const request = (role: LlmAdapter.CallRole, ...contents: ReadonlyArray<string>) =>
  new LlmAdapter.ChatRequest({
    role,
    messages: contents.map((content, i) => new LlmAdapter.ChatMessage({ role: i === 0 ? "system" : "user", content }))
  })

/**
 * A model that answers differently every time (like a sampling model), so a
 * replay that calls it instead of the cache would be caught.
 */
const countingModel = (calls: Ref.Ref<number>) =>
  Layer.succeed(
    LlmAdapter.LlmAdapter,
    LlmAdapter.make({
      model: (role) => (role === "root" ? "big-model" : "small-model"),
      chat: (req) =>
        Ref.updateAndGet(calls, (n) => n + 1).pipe(
          Effect.map(
            (n) =>
              new LlmAdapter.ChatResponse({
                text: `answer #${n} to ${req.messages.at(-1)?.content}`,
                model: req.role === "root" ? "big-model" : "small-model",
                usage: new LlmAdapter.Usage({ inputTokens: n, outputTokens: 1 })
              })
          )
        )
    })
  )

/** What a run does: root calls plus sub-calls, one asked twice. */
const conversation = [
  request("root", "system prompt", "query"),
  request("sub", "Summarize: chunk 1"),
  request("sub", "Summarize: chunk 2"),
  request("sub", "Summarize: chunk 1"),
  request("root", "system prompt", "query", "output")
]

const runConversation = Effect.flatMap(LlmAdapter.LlmAdapter, (adapter) =>
  Effect.forEach(conversation, (req) => adapter.chat(req))
)

const sameMessages = Schema.equivalence(Schema.Array(LlmAdapter.ChatMessage))

const sameResponses = Schema.equivalence(Schema.Array(LlmAdapter.ChatResponse))

describe("LlmCache.keyOf", () => {
  it("is the sha256 of the canonical JSON of role and messages", () => {
    const req = request("sub", "hi")
    assert.strictEqual(LlmCache.keyOf(req), Hash.sha256('{"messages":[{"content":"hi","role":"system"}],"role":"sub"}'))
    assert.match(LlmCache.keyOf(req), /^[0-9a-f]{64}$/)
  })

  it.prop(
    "requests share a key exactly when their role and messages are equal",
    [LlmAdapter.ChatRequest, LlmAdapter.ChatRequest],
    ([a, b]) => {
      const copy = new LlmAdapter.ChatRequest({
        role: a.role,
        messages: a.messages.map((m) => new LlmAdapter.ChatMessage({ ...m }))
      })
      assert.strictEqual(LlmCache.keyOf(copy), LlmCache.keyOf(a))
      // Only the role and the messages count (not e.g. maxOutputTokens, which is the run's remaining budget).
      const equal = a.role === b.role && sameMessages(a.messages, b.messages)
      assert.strictEqual(LlmCache.keyOf(a) === LlmCache.keyOf(b), equal)
    }
  )

  it.prop(
    "a conversation that grows, branches and is cut, sharing its message objects, keys as if hashed afresh",
    [
      Schema.Array(LlmAdapter.ChatMessage).pipe(Schema.minItems(1), Schema.maxItems(12)),
      Schema.Array(Schema.Tuple(Schema.Literal("append", "branch", "cut", "reorder"), Schema.NonNegativeInt)).pipe(
        Schema.maxItems(12)
      ),
      LlmAdapter.CallRole
    ],
    ([pool, edits, role]) => {
      // The definition keyOf must keep: sha256 of the canonical JSON of role and messages.
      const reference = (messages: ReadonlyArray<LlmAdapter.ChatMessage>) =>
        Hash.sha256(
          JSON.stringify({
            messages: messages.map((m) => ({
              content: m.content,
              role: m.role,
              ...(m.toolCallId !== undefined ? { toolCallId: m.toolCallId } : {}),
              ...(m.toolCalls !== undefined && m.toolCalls.length > 0
                ? { toolCalls: m.toolCalls.map((c) => ({ arguments: c.arguments, id: c.id, name: c.name })) }
                : {}),
              ...(m.toolName !== undefined ? { toolName: m.toolName } : {})
            })),
            role
          })
        )
      const seen: Array<ReadonlyArray<LlmAdapter.ChatMessage>> = [[pool[0] as LlmAdapter.ChatMessage]]
      for (const [edit, n] of edits) {
        const from = seen[n % seen.length] as ReadonlyArray<LlmAdapter.ChatMessage>
        const pick = pool[n % pool.length] as LlmAdapter.ChatMessage
        const next =
          edit === "append"
            ? [...from, pick, pool[(n + 1) % pool.length] as LlmAdapter.ChatMessage]
            : edit === "branch"
              ? [...from.slice(0, Math.max(1, from.length - 1)), pick]
              : edit === "cut"
                ? from.slice(0, Math.max(1, n % (from.length + 1)))
                : [...from].reverse()
        seen.push(next)
      }
      for (const messages of seen) {
        assert.strictEqual(LlmCache.keyOf({ role, messages }), reference(messages))
      }
      // Asked again in another order, every key is still the same.
      for (const messages of [...seen].reverse()) {
        assert.strictEqual(LlmCache.keyOf({ role, messages }), reference(messages))
      }
    }
  )

  it("a message without tool fields keeps its key; tool calls and results change it", () => {
    const plain = request("root", "a")
    const withCall = new LlmAdapter.ChatRequest({
      role: "root",
      messages: [
        new LlmAdapter.ChatMessage({
          role: "system",
          content: "a",
          toolCalls: [new LlmAdapter.ToolCall({ id: "c", name: "run_code", arguments: "{}" })]
        })
      ]
    })
    assert.strictEqual(
      LlmCache.keyOf(plain),
      Hash.sha256('{"messages":[{"content":"a","role":"system"}],"role":"root"}')
    )
    assert.notStrictEqual(LlmCache.keyOf(withCall), LlmCache.keyOf(plain))
  })

  it("changes with the call role, a message role or its content", () => {
    const base = LlmCache.keyOf(request("sub", "a", "b"))
    assert.notStrictEqual(LlmCache.keyOf(request("root", "a", "b")), base)
    assert.notStrictEqual(LlmCache.keyOf(request("sub", "a", "c")), base)
    assert.notStrictEqual(LlmCache.keyOf(request("sub", "ab")), base)
    const assistant = new LlmAdapter.ChatRequest({
      role: "sub",
      messages: [
        new LlmAdapter.ChatMessage({ role: "system", content: "a" }),
        new LlmAdapter.ChatMessage({ role: "assistant", content: "b" })
      ]
    })
    assert.notStrictEqual(LlmCache.keyOf(assistant), base)
  })
})

describe("CachedAdapter", () => {
  it.effect("record then replay returns identical responses with no model", () =>
    Effect.gen(function* () {
      const calls = yield* Ref.make(0)
      const cache = Layer.succeed(LlmCache.LlmCache, yield* LlmCache.makeMemory())

      const recorded = yield* runConversation.pipe(
        Effect.provide(
          CachedAdapter.layer({ mode: "record" }).pipe(Layer.provide(countingModel(calls)), Layer.provide(cache))
        )
      )
      assert.strictEqual(yield* Ref.get(calls), 5)
      assert.notStrictEqual(recorded[1]?.text, recorded[3]?.text, "the repeated question got two answers")

      // No LlmAdapter layer anywhere: replay is built from the cache alone.
      const replayLayer = CachedAdapter.layer({ mode: "replay" }).pipe(Layer.provide(cache))
      const replayed = yield* runConversation.pipe(Effect.provide(replayLayer))
      const again = yield* runConversation.pipe(Effect.provide(replayLayer))
      assert.isTrue(sameResponses(replayed, recorded))
      assert.isTrue(sameResponses(again, recorded), "each adapter build replays from the start")
      assert.strictEqual(yield* Ref.get(calls), 5, "the model was not called again")

      const model = yield* Effect.map(Effect.provide(LlmAdapter.LlmAdapter, replayLayer), (a) => [
        a.model("root"),
        a.model("sub")
      ])
      assert.deepStrictEqual(model, ["big-model", "small-model"])
    })
  )

  it.effect("a replay miss fails with a typed, actionable NotFound", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        Effect.flatMap(LlmAdapter.LlmAdapter, (adapter) => adapter.chat(request("sub", "never recorded"))).pipe(
          Effect.provide(CachedAdapter.layerReplay({ model: "m" }).pipe(Layer.provide(LlmCache.layerMemory)))
        )
      )
      assert.instanceOf(error, LlmAdapter.LlmError)
      assert.strictEqual(error.reason, "NotFound")
      assert.isFalse(error.retryable)
      assert.include(error.message, "never recorded")
      assert.include(error.message, "0 entries")
      assert.include(error.message, '"record"')
    })
  )

  it.effect("replay repeats the last recorded answer once a request's answers run out", () =>
    Effect.gen(function* () {
      const calls = yield* Ref.make(0)
      const cache = Layer.succeed(LlmCache.LlmCache, yield* LlmCache.makeMemory())
      const ask = Effect.flatMap(LlmAdapter.LlmAdapter, (adapter) => adapter.chat(request("sub", "q")))
      const one = yield* ask.pipe(
        Effect.provide(
          CachedAdapter.layer({ mode: "record" }).pipe(Layer.provide(countingModel(calls)), Layer.provide(cache))
        )
      )
      const replayed = yield* Effect.all([ask, ask, ask]).pipe(
        Effect.provide(CachedAdapter.layerReplay().pipe(Layer.provide(cache)))
      )
      assert.deepStrictEqual(
        replayed.map((r) => r.text),
        [one.text, one.text, one.text]
      )
    })
  )

  it.effect("read-through calls the model only for what the cache lacks", () =>
    Effect.gen(function* () {
      const calls = yield* Ref.make(0)
      const cache = Layer.succeed(LlmCache.LlmCache, yield* LlmCache.makeMemory())
      const readThrough = CachedAdapter.layer({ mode: "read-through" }).pipe(
        Layer.provide(countingModel(calls)),
        Layer.provide(cache)
      )
      const first = yield* runConversation.pipe(Effect.provide(readThrough))
      assert.strictEqual(yield* Ref.get(calls), 5)
      const second = yield* runConversation.pipe(Effect.provide(readThrough))
      assert.strictEqual(yield* Ref.get(calls), 5, "second pass is all hits")
      assert.isTrue(sameResponses(second, first))

      const longer = yield* Effect.flatMap(LlmAdapter.LlmAdapter, (adapter) =>
        Effect.forEach([...conversation, request("sub", "new question")], (req) => adapter.chat(req))
      ).pipe(Effect.provide(readThrough))
      assert.strictEqual(yield* Ref.get(calls), 6, "only the new question reached the model")
      assert.isTrue(sameResponses(longer.slice(0, 5), first))
    })
  )

  it.effect("record replaces what an earlier recording stored for a request", () =>
    Effect.gen(function* () {
      const calls = yield* Ref.make(0)
      const cache = Layer.succeed(LlmCache.LlmCache, yield* LlmCache.makeMemory())
      const record = CachedAdapter.layer({ mode: "record" }).pipe(
        Layer.provide(countingModel(calls)),
        Layer.provide(cache)
      )
      yield* runConversation.pipe(Effect.provide(record))
      const second = yield* runConversation.pipe(Effect.provide(record))
      assert.strictEqual(yield* Ref.get(calls), 10)
      const replayed = yield* runConversation.pipe(
        Effect.provide(CachedAdapter.layerReplay().pipe(Layer.provide(cache)))
      )
      assert.isTrue(sameResponses(replayed, second))
      const entries = yield* Effect.flatMap(LlmCache.LlmCache, (c) => c.entries).pipe(Effect.provide(cache))
      assert.strictEqual(entries.length, 4, "four distinct requests")
      assert.deepStrictEqual(
        entries.map((entry) => entry.responses.length),
        [1, 2, 1, 1]
      )
    })
  )

  it.effect("model errors pass through record mode and are not cached", () =>
    Effect.gen(function* () {
      const failing = Layer.succeed(
        LlmAdapter.LlmAdapter,
        LlmAdapter.make({
          model: () => "m",
          chat: () =>
            Effect.fail(new LlmAdapter.LlmError({ reason: "RateLimited", message: "slow down", retryable: true }))
        })
      )
      const cache = yield* LlmCache.makeMemory()
      const error = yield* Effect.flip(
        Effect.flatMap(LlmAdapter.LlmAdapter, (adapter) => adapter.chat(request("sub", "q"))).pipe(
          Effect.provide(
            CachedAdapter.layer({ mode: "record" }).pipe(
              Layer.provide(failing),
              Layer.provide(Layer.succeed(LlmCache.LlmCache, cache))
            )
          )
        )
      )
      assert.strictEqual(error.reason, "RateLimited")
      assert.strictEqual((yield* cache.entries).length, 0)
    })
  )
})

describe("LlmCache.layerFile", () => {
  it.scoped("a recording written to a file replays from a fresh layer", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const path = `${dir}/cache.json`
      const calls = yield* Ref.make(0)

      const recorded = yield* runConversation.pipe(
        Effect.provide(
          CachedAdapter.layer({ mode: "record" }).pipe(
            Layer.provide(countingModel(calls)),
            Layer.provide(LlmCache.layerFile(path))
          )
        )
      )
      const onDisk = JSON.parse(yield* fs.readFileString(path))
      assert.strictEqual(onDisk.version, 1)
      assert.strictEqual(onDisk.entries.length, 4)
      assert.deepStrictEqual(yield* fs.readDirectory(dir), ["cache.json"], "no temporary file is left behind")

      const replayed = yield* runConversation.pipe(
        Effect.provide(CachedAdapter.layer({ mode: "replay" }).pipe(Layer.provide(LlmCache.layerFile(path))))
      )
      assert.isTrue(sameResponses(replayed, recorded))
      assert.strictEqual(yield* Ref.get(calls), 5)
    }).pipe(Effect.provide(NodeFileSystem.layer))
  )

  it.scoped("only role and messages are stored, so a request field JSON cannot hold does not spoil the file", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const path = `${dir}/cache.json`
      const calls = yield* Ref.make(0)
      const unbounded = new LlmAdapter.ChatRequest({
        ...request("sub", "q"),
        maxOutputTokens: Number.POSITIVE_INFINITY
      })
      assert.strictEqual(LlmCache.keyOf(unbounded), LlmCache.keyOf(request("sub", "q")))
      const recorded = yield* Effect.flatMap(LlmAdapter.LlmAdapter, (adapter) => adapter.chat(unbounded)).pipe(
        Effect.provide(
          CachedAdapter.layer({ mode: "record" }).pipe(
            Layer.provide(countingModel(calls)),
            Layer.provide(LlmCache.layerFile(path))
          )
        )
      )
      const [entry] = yield* LlmCache.readFile(path)
      assert.isDefined(entry)
      assert.deepStrictEqual(Object.keys(entry?.request ?? {}).sort(), ["messages", "role"])
      assert.strictEqual(entry?.responses[0].text, recorded.text)
    }).pipe(Effect.provide(NodeFileSystem.layer))
  )

  it.scoped("concurrent stores all reach the file", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const path = `${dir}/cache.json`
      const calls = yield* Ref.make(0)
      yield* Effect.flatMap(LlmAdapter.LlmAdapter, (adapter) =>
        Effect.forEach(
          Array.from({ length: 50 }, (_, i) => request("sub", `q${i}`)),
          (req) => adapter.chat(req),
          { concurrency: "unbounded" }
        )
      ).pipe(
        Effect.provide(
          CachedAdapter.layer({ mode: "record" }).pipe(
            Layer.provide(countingModel(calls)),
            Layer.provide(LlmCache.layerFile(path))
          )
        )
      )
      const entries = yield* LlmCache.readFile(path)
      assert.strictEqual(entries.length, 50)
    }).pipe(Effect.provide(NodeFileSystem.layer))
  )

  it.scoped("flush puts everything on disk while the cache is still open", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const path = `${dir}/cache.json`
      const cache = yield* LlmCache.makeFile(path)
      const response = new LlmAdapter.ChatResponse({ text: "a", model: "m", usage: LlmAdapter.Usage.unknown })
      for (let i = 0; i < 20; i++) {
        const req = request("sub", `q${i}`)
        yield* cache.put(new LlmCache.Entry({ key: LlmCache.keyOf(req), request: req, responses: [response] }))
      }
      yield* cache.flush
      assert.strictEqual((yield* LlmCache.readFile(path)).length, 20)
    }).pipe(Effect.provide(NodeFileSystem.layer))
  )

  it.scoped("a failed write is reported by flush and by the next put", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const cache = yield* LlmCache.makeFile(`${dir}/no/such/dir/cache.json`)
      const req = request("sub", "q")
      const entry = new LlmCache.Entry({
        key: LlmCache.keyOf(req),
        request: req,
        responses: [new LlmAdapter.ChatResponse({ text: "a", model: "m", usage: LlmAdapter.Usage.unknown })]
      })
      yield* cache.put(entry)
      const flushError = yield* Effect.flip(cache.flush)
      assert.strictEqual(flushError.reason, "WriteFailed")
      assert.include(flushError.message, "no/such/dir")
      const putError = yield* Effect.flip(cache.put(entry))
      assert.strictEqual(putError.reason, "WriteFailed")
    }).pipe(Effect.provide(NodeFileSystem.layer))
  )

  it.scoped("a missing file is an empty cache; a corrupt one fails with InvalidFile", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      assert.deepStrictEqual(yield* LlmCache.readFile(`${dir}/none.json`), [])

      yield* fs.writeFileString(`${dir}/bad.json`, "{ not json")
      const notJson = yield* Effect.flip(Effect.provide(LlmCache.LlmCache, LlmCache.layerFile(`${dir}/bad.json`)))
      assert.strictEqual(notJson.reason, "InvalidFile")
      assert.include(notJson.message, "bad.json")

      yield* fs.writeFileString(`${dir}/trace.json`, JSON.stringify({ version: 1, events: [] }))
      const notCache = yield* Effect.flip(LlmCache.readFile(`${dir}/trace.json`))
      assert.strictEqual(notCache.reason, "InvalidFile")
      assert.include(notCache.message, "entries")
    }).pipe(Effect.provide(NodeFileSystem.layer))
  )
})
