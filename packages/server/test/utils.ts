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
