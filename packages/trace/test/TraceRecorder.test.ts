import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import * as TraceRecorder from "@rlm-runtime/trace/TraceRecorder"
import { Effect, Exit, Scope } from "effect"

const answer = (runId: string, step: number) =>
  new TraceEvent.FinalAnswer({ runId, step, source: "FINAL", answer: `answer ${step}\nwith a newline` })

const steps = (events: ReadonlyArray<TraceEvent.TraceEvent>) =>
  events.map((event) => (event._tag === "FinalAnswer" ? event.step : -1))

describe("TraceRecorder.layerMemory", () => {
  it.effect("keeps events in recording order and snapshots them as a Trace", () =>
    Effect.gen(function* () {
      for (let i = 0; i < 50; i++) yield* TraceRecorder.record(answer("r", i))
      const events = yield* TraceRecorder.events
      assert.deepStrictEqual(
        steps(events),
        Array.from({ length: 50 }, (_, i) => i)
      )
      const trace = yield* TraceRecorder.snapshot
      assert.instanceOf(trace, Trace.Trace)
      assert.strictEqual(trace.version, Trace.currentVersion)
      assert.strictEqual(trace.events.length, 50)
    }).pipe(Effect.provide(TraceRecorder.layerMemory))
  )

  it.effect("a snapshot does not change when more events are recorded", () =>
    Effect.gen(function* () {
      yield* TraceRecorder.record(answer("r", 1))
      const before = yield* TraceRecorder.snapshot
      yield* TraceRecorder.record(answer("r", 2))
      assert.strictEqual(before.events.length, 1)
      assert.strictEqual((yield* TraceRecorder.events).length, 2)
    }).pipe(Effect.provide(TraceRecorder.layerMemory))
  )

  it.effect("concurrent records are all kept", () =>
    Effect.gen(function* () {
      yield* Effect.forEach(
        Array.from({ length: 200 }, (_, i) => i),
        (i) => TraceRecorder.record(answer("r", i)),
        { concurrency: "unbounded" }
      )
      const got = steps(yield* TraceRecorder.events).sort((a, b) => a - b)
      assert.deepStrictEqual(
        got,
        Array.from({ length: 200 }, (_, i) => i)
      )
    }).pipe(Effect.provide(TraceRecorder.layerMemory))
  )

  it.effect("each build of the layer is isolated", () =>
    Effect.gen(function* () {
      const recordTwo = Effect.zipRight(
        Effect.zipRight(TraceRecorder.record(answer("a", 1)), TraceRecorder.record(answer("a", 2))),
        TraceRecorder.events
      )
      const first = yield* Effect.provide(recordTwo, TraceRecorder.layerMemory)
      const second = yield* Effect.provide(recordTwo, TraceRecorder.layerMemory)
      assert.strictEqual(first.length, 2)
      assert.strictEqual(second.length, 2)
      // and two recorders alive at once do not see each other's events
      const a = yield* TraceRecorder.makeMemory
      const b = yield* TraceRecorder.makeMemory
      yield* a.record(answer("a", 1))
      assert.strictEqual((yield* a.events).length, 1)
      assert.strictEqual((yield* b.events).length, 0)
    })
  )

  it.effect("layerNoop drops everything", () =>
    Effect.gen(function* () {
      yield* TraceRecorder.record(answer("r", 1))
      assert.strictEqual((yield* TraceRecorder.events).length, 0)
      assert.strictEqual((yield* TraceRecorder.snapshot).events.length, 0)
    }).pipe(Effect.provide(TraceRecorder.layerNoop))
  )
})

describe("TraceRecorder.layerJsonl", () => {
  const readLines = (path: string) =>
    Effect.flatMap(FileSystem.FileSystem, (fs) => fs.readFileString(path)).pipe(
      Effect.map((text) => text.split("\n").filter((line) => line !== ""))
    )

  it.scoped("writes each event as a line as it happens, and the file decodes to the snapshot", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const path = `${dir}/run.jsonl`
      const scope = yield* Scope.make()
      const recorder = yield* TraceRecorder.makeJsonl(path).pipe(Scope.extend(scope))

      yield* recorder.record(answer("r", 1))
      yield* recorder.record(answer("r", 2))
      assert.strictEqual((yield* readLines(path)).length, 2, "lines are on disk before the recorder closes")

      yield* Effect.forEach(
        Array.from({ length: 100 }, (_, i) => i + 3),
        (i) => recorder.record(answer("r", i)),
        { concurrency: "unbounded" }
      )
      yield* Scope.close(scope, Exit.void)

      const fromFile = yield* Trace.decodeJsonl(yield* fs.readFileString(path))
      const snapshot = yield* recorder.snapshot
      assert.strictEqual(fromFile.events.length, 102)
      assert.deepStrictEqual(steps(fromFile.events), steps(snapshot.events), "file order is recording order")
      assert.strictEqual(Trace.toJsonl(snapshot), yield* fs.readFileString(path))
    }).pipe(Effect.provide(NodeFileSystem.layer))
  )

  it.scoped("truncates by default and appends on request", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const path = `${dir}/run.jsonl`
      const recordOne = (step: number, options?: TraceRecorder.JsonlOptions) =>
        TraceRecorder.record(answer("r", step)).pipe(Effect.provide(TraceRecorder.layerJsonl(path, options)))

      yield* recordOne(1)
      yield* recordOne(2)
      assert.deepStrictEqual(steps((yield* Trace.decodeJsonl(yield* fs.readFileString(path))).events), [2])
      yield* recordOne(3, { append: true })
      assert.deepStrictEqual(steps((yield* Trace.decodeJsonl(yield* fs.readFileString(path))).events), [2, 3])
    }).pipe(Effect.provide(NodeFileSystem.layer))
  )

  it.scoped("a path that cannot be opened fails the layer with a PlatformError", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const error = yield* Effect.flip(
        TraceRecorder.events.pipe(Effect.provide(TraceRecorder.layerJsonl(`${dir}/missing/dir/run.jsonl`)))
      )
      assert.strictEqual(error._tag, "SystemError")
    }).pipe(Effect.provide(NodeFileSystem.layer))
  )
})
