import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as FakeAdapter from "@rlm-runtime/adapters/FakeAdapter"
import * as JavascriptSandbox from "@rlm-runtime/sandbox/JavascriptSandbox"
import * as Server from "@rlm-runtime/server/Server"
import { Effect, Layer, type Scope } from "effect"

/** A root reply (JS) answering with the `token-N` found in the context: each run's answer is its own. */
export const echoReply =
  "```repl\nvar m = String(context).match(/token-[0-9]+/); answer = 'answer: ' + (m ? m[0] : 'none'); console.log(answer)\n```\nFINAL_VAR(answer)"

export const tempDir = (prefix: string) => mkdtempSync(join(tmpdir(), `rlm-serve-${prefix}-`))

export interface TestServerOptions extends Partial<Server.Options> {
  readonly script?: ReadonlyArray<string>
  readonly latencyMs?: number
  readonly rules?: ReadonlyArray<{ readonly match: string; readonly reply: string }>
}

/** Start a server on a free loopback port in the current scope, with the fake adapter and the JS sandbox. */
export const startServer = (
  options: TestServerOptions = {}
): Effect.Effect<Server.Server.Service, Server.ServerError, Scope.Scope> => {
  const dir = tempDir("t")
  const { latencyMs, rules, script, ...rest } = options
  const backend = Layer.merge(
    FakeAdapter.layer({
      script: script ?? Array.from({ length: 200 }, () => echoReply),
      latencyMs: latencyMs ?? 0,
      rules: rules ?? []
    }),
    JavascriptSandbox.layer()
  )
  return Layer.build(
    Server.layer({
      host: "127.0.0.1",
      port: 0,
      contextsDir: join(dir, "contexts"),
      tracesDir: join(dir, "traces"),
      ...rest
    }).pipe(Layer.provide(backend))
  ).pipe(Effect.map((ctx) => ctx.unsafeMap.get(Server.Server.key) as Server.Server.Service))
}

/** `fetch` as an Effect (the test's own HTTP client for what the SDK does not do). */
export const http = (url: string, init?: RequestInit) =>
  Effect.promise(async () => {
    const res = await fetch(url, init)
    const text = await res.text()
    return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) as any }
  })

export const postJson = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  http(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) })

/** The body is OpenAI's error JSON: exactly {"error": {"message", "type", "param", "code"}}. */
export const assertOpenAiError = (text: string, code?: string) => {
  const body = JSON.parse(text)
  if (Object.keys(body).join() !== "error") throw new Error(`not an OpenAI error body: ${text}`)
  const e = body.error
  if (Object.keys(e).sort().join() !== "code,message,param,type") throw new Error(`bad error keys: ${text}`)
  if (typeof e.message !== "string" || e.message.length === 0) throw new Error(`no message: ${text}`)
  if (typeof e.type !== "string") throw new Error(`no type: ${text}`)
  if (!(e.param === null || typeof e.param === "string")) throw new Error(`bad param: ${text}`)
  if (!(e.code === null || typeof e.code === "string")) throw new Error(`bad code: ${text}`)
  if (code !== undefined && e.code !== code) throw new Error(`expected code ${code}: ${text}`)
  return e as { message: string; type: string; param: string | null; code: string | null }
}

export interface SseEvent {
  readonly id: string | undefined
  readonly event: string | undefined
  readonly data: string
}

/** Parse a complete text/event-stream body (comments skipped). */
export const parseSse = (text: string): ReadonlyArray<SseEvent> =>
  text
    .split("\n\n")
    .filter((block) => block.trim().length > 0)
    .flatMap((block) => {
      let id: string | undefined
      let event: string | undefined
      const data: Array<string> = []
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue
        const i = line.indexOf(":")
        const field = i < 0 ? line : line.slice(0, i)
        const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "")
        if (field === "id") id = value
        else if (field === "event") event = value
        else if (field === "data") data.push(value)
      }
      return data.length === 0 && id === undefined ? [] : [{ id, event, data: data.join("\n") }]
    })

/** A user question whose context (a system message) holds `token-<i>`. */
export const tokenMessages = (i: number) => [
  { role: "system" as const, content: `The secret is token-${i}.` },
  { role: "user" as const, content: `What is the secret of request ${i}?` }
]
