import { readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import * as Trace from "@rlm-runtime/trace/Trace"
import { Effect, Exit, Fiber, Scope } from "effect"
import { assertOpenAiError, http, postJson, startServer } from "./utils.js"

/** Turn 1 stores a variable; turn 2 answers from it: the same REPL across asks. */
const remember = "```repl\nremembered = String(context).match(/token-[0-9]+/)[0]\n```\nFINAL_VAR(remembered)"
const recall = "```repl\nrecalled = 'still ' + remembered\n```\nFINAL_VAR(recalled)"

describe("sessions", () => {
  it.live("create, ask twice (state kept between turns), delete returns the state; asks after it are 404", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: [remember, recall] })
      const created = yield* postJson(`${server.url}/v1/sessions`, { context: "the secret is token-31" })
      assert.strictEqual(created.status, 201, created.text)
      const session = created.json()
      assert.match(session.id, /^sess_/)
      assert.strictEqual(session.turns, 0)
      const first = yield* postJson(`${server.url}/v1/sessions/${session.id}/ask`, { query: "remember the secret" })
      assert.strictEqual(first.status, 200, first.text)
      assert.strictEqual(first.json().answer, "token-31")
      assert.strictEqual(first.json().turn, 1)
      assert.isAbove(first.json().usage.total_tokens, 0)
      const second = yield* postJson(`${server.url}/v1/sessions/${session.id}/ask`, { query: "what was it?" })
      assert.strictEqual(second.json().answer, "still token-31")
      assert.strictEqual(second.json().turn, 2)
      // Each turn's trace is on disk.
      const trace = yield* Trace.decodeJsonl(readFileSync(second.json().trace_file, "utf8"))
      assert.isTrue(trace.events.some((e) => e._tag === "FinalAnswer"))
      assert.strictEqual((yield* http(`${server.url}/v1/sessions/${session.id}`)).json().turns, 2)

      const deleted = yield* http(`${server.url}/v1/sessions/${session.id}`, { method: "DELETE" })
      assert.strictEqual(deleted.status, 200)
      const state = deleted.json().state
      assert.strictEqual(state.version, 1)
      assert.strictEqual(state.turns.length, 2)
      const gone = yield* postJson(`${server.url}/v1/sessions/${session.id}/ask`, { query: "again?" })
      assert.strictEqual(gone.status, 404)
      assertOpenAiError(gone.text, "session_not_found")
    }).pipe(Effect.scoped)
  )

  it.live("resume from a deleted session's state; a bad state is a 400", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: [remember, recall] })
      const session = (yield* postJson(`${server.url}/v1/sessions`, { context: "token-8" })).json()
      yield* postJson(`${server.url}/v1/sessions/${session.id}/ask`, { query: "remember" })
      const state = (yield* http(`${server.url}/v1/sessions/${session.id}`, { method: "DELETE" })).json().state
      const resumed = yield* postJson(`${server.url}/v1/sessions`, { resume: state })
      assert.strictEqual(resumed.status, 201, resumed.text)
      assert.strictEqual(resumed.json().turns, 1)
      const answer = yield* postJson(`${server.url}/v1/sessions/${resumed.json().id}/ask`, { query: "what was it?" })
      assert.strictEqual(answer.json().answer, "still token-8", answer.text)
      const bad = yield* postJson(`${server.url}/v1/sessions`, { resume: { version: 7 } })
      assert.strictEqual(bad.status, 400)
      assertOpenAiError(bad.text, "invalid_state")
    }).pipe(Effect.scoped)
  )

  it.live("idle sessions are closed; sessions with an uploaded context", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: [remember], sessionIdleTimeout: "1 second" })
      const ctx = (yield* http(`${server.url}/v1/contexts`, { method: "POST", body: "token-77" })).json()
      const session = (yield* postJson(`${server.url}/v1/sessions`, { context_id: ctx.id })).json()
      const first = yield* postJson(`${server.url}/v1/sessions/${session.id}/ask`, { query: "remember" })
      assert.strictEqual(first.json().answer, "token-77")
      yield* Effect.sleep("3500 millis")
      assert.strictEqual((yield* http(`${server.url}/v1/sessions/${session.id}`)).status, 404)
    }).pipe(Effect.scoped)
  )

  it.live("past --max-sessions, 429; a deleted one frees its place; a failed turn is an OpenAI error", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ script: [remember], maxSessions: 1 })
      const one = (yield* postJson(`${server.url}/v1/sessions`, { context: "token-1" })).json()
      const two = yield* postJson(`${server.url}/v1/sessions`, { context: "token-2" })
      assert.strictEqual(two.status, 429)
      assertOpenAiError(two.text, "too_many_sessions")
      assert.isNotNull(two.headers.get("retry-after"))
      const ok = yield* postJson(`${server.url}/v1/sessions/${one.id}/ask`, { query: "remember" })
      assert.strictEqual(ok.json().answer, "token-1")
      // The script is used up: the next turn's model call fails.
      const failed = yield* postJson(`${server.url}/v1/sessions/${one.id}/ask`, { query: "again" })
      assert.strictEqual(failed.status, 502)
      assertOpenAiError(failed.text, "model_failed")
      assert.strictEqual((yield* http(`${server.url}/v1/sessions/${one.id}`, { method: "DELETE" })).status, 200)
      assert.strictEqual((yield* postJson(`${server.url}/v1/sessions`, { context: "token-3" })).status, 201)
      const empty = yield* postJson(`${server.url}/v1/sessions/${one.id}/ask`, { query: " " })
      assert.strictEqual(empty.status, 400)
    }).pipe(Effect.scoped)
  )

  it.live("at shutdown a turn in flight finishes, new turns get 503, then the sessions are closed", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const server = yield* startServer({
        script: [remember, remember],
        latencyMs: 800,
        shutdownGrace: "20 seconds"
      }).pipe(Scope.extend(scope))
      const a = (yield* postJson(`${server.url}/v1/sessions`, { context: "token-5" })).json()
      const b = (yield* postJson(`${server.url}/v1/sessions`, { context: "token-6" })).json()
      const turn = yield* Effect.fork(postJson(`${server.url}/v1/sessions/${a.id}/ask`, { query: "remember" }))
      yield* Effect.promise(async () => {
        while ((await (await fetch(`${server.url}/healthz`)).json()).runs.running === 0) {
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
      })
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* Effect.promise(async () => {
        while ((await (await fetch(`${server.url}/healthz`)).json()).status !== "draining") {
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
      })
      const refused = yield* postJson(`${server.url}/v1/sessions/${b.id}/ask`, { query: "remember" })
      assert.strictEqual(refused.status, 503)
      assertOpenAiError(refused.text, "shutting_down")
      const answered = yield* Fiber.join(turn)
      assert.strictEqual(answered.status, 200, answered.text)
      assert.strictEqual(answered.json().answer, "token-5")
      yield* Fiber.join(closing)
      assert.strictEqual(yield* server.sessions.count, 0)
    })
  )
})
