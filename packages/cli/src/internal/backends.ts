/**
 * Building the model adapter and sandbox layers a `rlm run` asks for. The
 * modules behind them are imported on demand, so `rlm --help` or a fake run
 * does not pay for loading an HTTP client or an interpreter it never uses.
 */
import * as FakeAdapter from "@rlm-runtime/adapters/FakeAdapter"
import { LlmAdapter } from "@rlm-runtime/adapters/LlmAdapter"
import type { Isolation, IsolationMode, Sandbox } from "@rlm-runtime/sandbox/Sandbox"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { CliError } from "../CliError.js"

/** @internal */
export type SandboxKind = "python" | "js"

/** @internal */
export interface SandboxSettings {
  readonly kind: SandboxKind
  readonly execTimeout: Duration.Duration | undefined
  readonly memoryMb: number | undefined
  /** The sandbox option (`--isolation strict` is `"require-namespace"`). */
  readonly isolation: IsolationMode
}

/** @internal The `--isolation` flag's values and the sandbox option each one asks for. */
export const isolationModes = {
  auto: "auto",
  strict: "require-namespace",
  process: "process"
} as const satisfies Record<string, IsolationMode>

/** @internal */
export type IsolationFlag = keyof typeof isolationModes

const languageName = (kind: SandboxKind) => (kind === "python" ? "Python" : "JavaScript")

const strictAdvice =
  "--isolation strict needs the OS wall: bubblewrap (Debian/Ubuntu: apt-get install bubblewrap), or unshare from util-linux with unprivileged user namespaces enabled; --isolation auto falls back to the process wall and says so"

const field = (u: unknown, key: string): unknown =>
  typeof u === "object" && u !== null && key in u ? (u as Record<string, unknown>)[key] : undefined

/**
 * @internal The CLI error for a sandbox that did not start. A `StartFailed`
 * under `--isolation strict` is an `Isolation` error (exit 4) with the advice
 * to install bubblewrap; anything else is a `Sandbox` error (exit 1).
 */
export const startError = (settings: SandboxSettings, error: unknown): CliError => {
  const message = typeof field(error, "message") === "string" ? (field(error, "message") as string) : String(error)
  const what = `the ${languageName(settings.kind)} sandbox did not start`
  if (settings.isolation === "require-namespace" && field(error, "reason") === "StartFailed") {
    return new CliError({ reason: "Isolation", message: `${what}: ${message}. ${strictAdvice}.` })
  }
  return new CliError({ reason: "Sandbox", message: `${what}: ${message}` })
}

/**
 * @internal What the sandbox got against what was asked: `--isolation strict`
 * with a sandbox behind the process wall only is an `Isolation` error, even if
 * the sandbox started (the CLI does not trust that it refused).
 */
export const checkIsolation = (settings: SandboxSettings, got: Isolation): Effect.Effect<void, CliError> =>
  settings.isolation === "require-namespace" && got !== "namespace"
    ? Effect.fail(
        new CliError({
          reason: "Isolation",
          message: `the ${languageName(settings.kind)} sandbox runs behind the ${got} wall only, but --isolation strict asks for the OS wall (isolation: namespace). ${strictAdvice}.`
        })
      )
    : Effect.void

const load = <A>(what: string, reason: "Sandbox" | "Model", importer: () => Promise<A>) =>
  Effect.tryPromise({
    try: importer,
    catch: (e) =>
      new CliError({
        reason,
        message: `could not load the ${what}: ${e instanceof Error ? e.message : String(e)}`
      })
  })

const sandboxStartFailed = (e: CliError | { readonly _tag: "SandboxError"; readonly message: string }) =>
  e._tag === "CliError" ? e : new CliError({ reason: "Sandbox", message: `the sandbox did not start: ${e.message}` })

/** @internal */
export const sandboxLayer = (settings: SandboxSettings): Layer.Layer<Sandbox, CliError> => {
  const options = {
    ...(settings.execTimeout !== undefined ? { execTimeout: settings.execTimeout } : {}),
    ...(settings.memoryMb !== undefined ? { memoryMb: settings.memoryMb } : {}),
    isolation: settings.isolation
  }
  // Building a layer may fail with `SandboxError` (e.g. "StartFailed" under "require-namespace").
  const started = <E>(layer: Layer.Layer<Sandbox, E>) => Layer.mapError(layer, (e: unknown) => startError(settings, e))
  switch (settings.kind) {
    case "js":
      return Layer.unwrapEffect(
        Effect.map(
          load("JavaScript sandbox", "Sandbox", () => import("@rlm-runtime/sandbox/JavascriptSandbox")),
          (m) => started(m.layer(options))
        )
      ).pipe(Layer.mapError(sandboxStartFailed))
    case "python":
      return Layer.unwrapEffect(
        Effect.map(
          load("Python sandbox", "Sandbox", () => import("@rlm-runtime/sandbox/PythonSandbox")),
          (m) => started(m.layer(options))
        )
      ).pipe(Layer.mapError(sandboxStartFailed))
  }
}

/** @internal */
export type AdapterSettings =
  | {
      readonly kind: "fake"
      readonly script: FakeAdapter.FakeScript
      readonly model: string | undefined
    }
  | {
      readonly kind: "openai-compat"
      readonly baseUrl: string | undefined
      /** Absent: no model is named in requests (a server serving one model, like llama-server). */
      readonly model: string | undefined
      readonly subModel: string | undefined
    }
  | {
      readonly kind: "generic"
      readonly preset: "anthropic" | "ollama"
      readonly baseUrl: string | undefined
      readonly model: string
      readonly subModel: string | undefined
    }

const httpClient = Layer.unwrapEffect(
  Effect.map(
    load("HTTP client", "Model", () => import("@effect/platform-node/NodeHttpClient")),
    (m) => m.layerUndici
  )
)

const configError = (e: { readonly message: string }) =>
  new CliError({ reason: "Usage", message: `bad model configuration in the environment: ${e.message}` })

/** @internal */
export const adapterLayer = (settings: AdapterSettings): Layer.Layer<LlmAdapter, CliError> => {
  switch (settings.kind) {
    case "fake":
      return Layer.effect(
        LlmAdapter,
        FakeAdapter.make({
          script: settings.script.script,
          rules: settings.script.rules,
          latencyMs: settings.script.latencyMs,
          usage: settings.script.usage,
          model: settings.model
        })
      )
    case "openai-compat": {
      const options = {
        ...(settings.model !== undefined ? { model: settings.model } : {}),
        ...(settings.baseUrl !== undefined ? { baseUrl: settings.baseUrl } : {}),
        ...(settings.subModel !== undefined ? { sub: { model: settings.subModel } } : {})
      }
      return Layer.unwrapEffect(
        Effect.map(
          load("OpenAI-compatible adapter", "Model", () => import("@rlm-runtime/adapters/OpenAICompatAdapter")),
          (m) => m.layerConfig(options).pipe(Layer.mapError(configError))
        )
      ).pipe(Layer.provide(httpClient))
    }
    case "generic": {
      const options = {
        model: settings.model,
        ...(settings.baseUrl !== undefined ? { baseUrl: settings.baseUrl } : {}),
        ...(settings.subModel !== undefined ? { sub: { model: settings.subModel } } : {})
      }
      const preset = settings.preset
      return Layer.unwrapEffect(
        Effect.map(
          load("generic chat adapter", "Model", () => import("@rlm-runtime/adapters/GenericChatAdapter")),
          (m) =>
            (preset === "anthropic"
              ? m.layerConfig(m.anthropicMessages, options)
              : m.layerConfig(m.ollamaChat, options)
            ).pipe(Layer.mapError(configError))
        )
      ).pipe(Layer.provide(httpClient))
    }
  }
}
