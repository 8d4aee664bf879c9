/**
 * Building the model adapter and sandbox layers a `rlm run` asks for. The
 * modules behind them are imported on demand, so `rlm --help` or a fake run
 * does not pay for loading an HTTP client or an interpreter it never uses.
 */
import * as FakeAdapter from "@rlm-runtime/adapters/FakeAdapter"
import { LlmAdapter } from "@rlm-runtime/adapters/LlmAdapter"
import type { Sandbox } from "@rlm-runtime/sandbox/Sandbox"
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
}

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
    ...(settings.memoryMb !== undefined ? { memoryMb: settings.memoryMb } : {})
  }
  switch (settings.kind) {
    case "js":
      return Layer.unwrapEffect(
        Effect.map(
          load("JavaScript sandbox", "Sandbox", () => import("@rlm-runtime/sandbox/JavascriptSandbox")),
          (m) => m.layer(options)
        )
      ).pipe(Layer.mapError(sandboxStartFailed))
    case "python":
      return Layer.unwrapEffect(
        Effect.map(
          load("Python sandbox", "Sandbox", () => import("@rlm-runtime/sandbox/PythonSandbox")),
          (m) => m.layer(options)
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
      readonly model: string
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
        model: settings.model,
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
