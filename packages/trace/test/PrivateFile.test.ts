import { chmodSync, mkdtempSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type * as FileSystem from "@effect/platform/FileSystem"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as LlmCache from "@rlm-runtime/trace/LlmCache"
import * as PrivateFile from "@rlm-runtime/trace/PrivateFile"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import * as TraceRecorder from "@rlm-runtime/trace/TraceRecorder"
import { Effect } from "effect"

const modeOf = (path: string) => statSync(path).mode & 0o777

const answer = (step: number) => new TraceEvent.FinalAnswer({ runId: "run", step, source: "FINAL", answer: "secret" })

const entry = (q: string) => {
  const request = new LlmAdapter.ChatRequest({
    role: "sub",
    messages: [new LlmAdapter.ChatMessage({ role: "user", content: q })]
  })
  return new LlmCache.Entry({
    key: LlmCache.keyOf(request),
    request,
    responses: [new LlmAdapter.ChatResponse({ text: "a", model: "m", usage: LlmAdapter.Usage.unknown })]
  })
}

/** Every way this package writes a file, each writing to `path`. */
const writers: ReadonlyArray<
  readonly [name: string, write: (path: string) => Effect.Effect<void, unknown, FileSystem.FileSystem>]
> = [
  ["PrivateFile.writeFileString", (path) => PrivateFile.writeFileString(path, "the whole context")],
  [
    "a trace .json (Trace.toJson through PrivateFile.writeFileString)",
    (path) => PrivateFile.writeFileString(path, Trace.toJson(Trace.make([answer(1)])))
  ],
  [
    "TraceRecorder.layerJsonl (truncating)",
    (path) => Effect.provide(TraceRecorder.record(answer(1)), TraceRecorder.layerJsonl(path))
  ],
  [
    "TraceRecorder.layerJsonl (append)",
    (path) => Effect.provide(TraceRecorder.record(answer(1)), TraceRecorder.layerJsonl(path, { append: true }))
  ],
  ["LlmCache.writeFile", (path) => LlmCache.writeFile(path, [entry("q")])],
  [
    "LlmCache.layerFile (put, then the layer closes)",
    (path) =>
      Effect.provide(
        Effect.flatMap(LlmCache.LlmCache, (cache) => cache.put(entry("q"))),
        LlmCache.layerFile(path)
      )
  ]
]

const run = <E>(effect: Effect.Effect<void, E, FileSystem.FileSystem>) =>
  effect.pipe(Effect.provide(NodeFileSystem.layer), Effect.orDie)

describe("files are written with mode 0600", () => {
  let umask = 0
  // A permissive umask: the mode must come from the writer, not from the environment.
  beforeAll(() => {
    umask = process.umask(0)
  })
  afterAll(() => {
    process.umask(umask)
  })
  const dir = mkdtempSync(join(tmpdir(), "rlm-private-"))

  for (const [name, write] of writers) {
    const slug = name.replace(/[^a-z0-9]+/gi, "-")
    it.effect(`${name}: a new file is 0600 under umask 0`, () =>
      Effect.gen(function* () {
        const path = join(dir, `${slug}.new`)
        yield* run(write(path))
        assert.strictEqual(modeOf(path), 0o600)
      })
    )

    it.effect(`${name}: a file that existed with 0644 becomes 0600`, () =>
      Effect.gen(function* () {
        const path = join(dir, `${slug}.old`)
        // An existing cache must still decode, so the old content is a valid empty cache.
        writeFileSync(path, '{"version":1,"entries":[]}\n', { mode: 0o644 })
        chmodSync(path, 0o644)
        assert.strictEqual(modeOf(path), 0o644)
        yield* run(write(path))
        assert.strictEqual(modeOf(path), 0o600)
      })
    )

    it.effect(`${name}: a file that existed with 0666 under a strict umask (0277) still ends 0600`, () =>
      Effect.gen(function* () {
        const path = join(dir, `${slug}.strict`)
        writeFileSync(path, '{"version":1,"entries":[]}\n')
        chmodSync(path, 0o666)
        const before = process.umask(0o277)
        try {
          yield* run(write(path))
        } finally {
          process.umask(before)
        }
        assert.strictEqual(modeOf(path), 0o600)
      })
    )
  }

  it.effect("writeFileString replaces the file atomically and leaves no temporary file", () =>
    Effect.gen(function* () {
      const sub = mkdtempSync(join(dir, "atomic-"))
      const path = join(sub, "trace.json")
      yield* run(PrivateFile.writeFileString(path, "one"))
      yield* run(PrivateFile.writeFileString(path, "two"))
      assert.strictEqual(readFileSync(path, "utf8"), "two")
      assert.deepStrictEqual(readdirSync(sub), ["trace.json"])
    })
  )

  it.effect("writeFileString over a symlink replaces the link and never writes through it", () =>
    Effect.gen(function* () {
      const sub = mkdtempSync(join(dir, "link-"))
      const victim = join(sub, "victim.txt")
      writeFileSync(victim, "keep me", { mode: 0o644 })
      chmodSync(victim, 0o644)
      const path = join(sub, "trace.json")
      symlinkSync(victim, path)
      yield* run(PrivateFile.writeFileString(path, "the whole context"))
      assert.strictEqual(readFileSync(victim, "utf8"), "keep me")
      assert.strictEqual(modeOf(victim), 0o644)
      assert.strictEqual(readFileSync(path, "utf8"), "the whole context")
      assert.strictEqual(modeOf(path), 0o600)
    })
  )

  it.effect("a target that is not a regular file (/dev/null) is written in place, its mode untouched", () =>
    Effect.gen(function* () {
      const before = modeOf("/dev/null")
      yield* run(PrivateFile.writeFileString("/dev/null", "x"))
      yield* run(Effect.provide(TraceRecorder.record(answer(1)), TraceRecorder.layerJsonl("/dev/null")))
      assert.strictEqual(modeOf("/dev/null"), before)
      assert.isTrue(statSync("/dev/null").isCharacterDevice())
    })
  )

  it.effect("a failed write (no such directory) leaves nothing behind and fails", () =>
    Effect.gen(function* () {
      const result = yield* PrivateFile.writeFileString(join(dir, "no", "such", "trace.json"), "x").pipe(
        Effect.provide(NodeFileSystem.layer),
        Effect.either
      )
      assert.strictEqual(result._tag, "Left")
    })
  )
})
