/**
 * `rlm run --otlp URL`: the run tree's spans (see core's `Tracing`) exported
 * with `@effect/opentelemetry`'s OTLP tracer, as OTLP/HTTP JSON, over
 * `@effect/platform`'s HTTP client. The exporter sends a batch every few
 * seconds and the rest when its layer's scope closes: after the run, on
 * success, failure and interruption alike (waiting at most
 * {@link shutdownTimeout} for the collector, and saying once on stderr when it
 * cannot be reached or refuses the spans). Its modules are imported only
 * when the flag is given.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { CliError } from "../CliError.js"

/** @internal How long the exit waits for the collector to take the last spans. */
export const shutdownTimeout = Duration.seconds(3)

/**
 * @internal The traces endpoint of an `--otlp` value, or why it is not one. A
 * URL with no path (`http://host:4318`) gets the OTLP/HTTP traces path
 * `/v1/traces`; any other path is used as it is.
 */
export const endpoint = (value: string): { readonly url: string } | { readonly error: string } => {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return { error: `--otlp must be a URL, got ${JSON.stringify(value)}` }
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return { error: `--otlp must be an http:// or https:// URL (OTLP over HTTP), got ${url.protocol}` }
  }
  if (url.pathname === "/" || url.pathname === "") url.pathname = "/v1/traces"
  return { url: url.href }
}

/**
 * @internal `OTEL_EXPORTER_OTLP_TRACES_HEADERS` or `OTEL_EXPORTER_OTLP_HEADERS`
 * (`key=value,key2=value2`, values percent-decoded), as the OpenTelemetry
 * SDKs read them: headers a hosted collector needs (an API key, say).
 */
export const headersFromEnv = Effect.map(
  Config.string("OTEL_EXPORTER_OTLP_TRACES_HEADERS").pipe(
    Config.orElse(() => Config.string("OTEL_EXPORTER_OTLP_HEADERS")),
    Config.withDefault("")
  ),
  (text) => {
    const headers: Record<string, string> = {}
    for (const pair of text.split(",")) {
      const at = pair.indexOf("=")
      if (at <= 0) continue
      const key = pair.slice(0, at).trim()
      const raw = pair.slice(at + 1).trim()
      let value = raw
      try {
        value = decodeURIComponent(raw)
      } catch {}
      if (key !== "") headers[key] = value
    }
    return headers
  }
)

const load = <A>(importer: () => Promise<A>) =>
  Effect.tryPromise({
    try: importer,
    catch: (e) =>
      new CliError({
        reason: "Internal",
        message: `could not load the OTLP exporter (@effect/opentelemetry): ${e instanceof Error ? e.message : String(e)}`
      })
  })

/**
 * @internal The tracer Layer of `--otlp`: every span of the effect it is
 * provided to goes to `url`. The service is `OTEL_SERVICE_NAME` (default
 * `rlm`).
 */
export const layer = (url: string, serviceVersion: string): Layer.Layer<never, CliError> =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const [OtlpTracer, OtlpSerialization, NodeHttpClient] = yield* Effect.all([
        load(() => import("@effect/opentelemetry/OtlpTracer")),
        load(() => import("@effect/opentelemetry/OtlpSerialization")),
        load(() => import("@effect/platform-node/NodeHttpClient"))
      ])
      const serviceName = yield* Effect.orElseSucceed(Config.string("OTEL_SERVICE_NAME"), () => "rlm")
      const headers = yield* Effect.orElseSucceed(headersFromEnv, () => ({}))
      return OtlpTracer.layer({
        url,
        resource: { serviceName, serviceVersion },
        headers,
        shutdownTimeout
      }).pipe(
        Layer.provide(OtlpSerialization.layerJson),
        Layer.provide(noting(url)),
        Layer.provide(NodeHttpClient.layerUndici)
      )
    })
  )

/**
 * The exporter's HTTP client, saying once on stderr when the collector cannot
 * be reached or refuses the spans (the exporter itself drops them silently
 * and, at exit, waits up to {@link shutdownTimeout} for it).
 */
const noting = (url: string): Layer.Layer<HttpClient.HttpClient, never, HttpClient.HttpClient> =>
  Layer.effect(
    HttpClient.HttpClient,
    Effect.map(HttpClient.HttpClient, (client) => {
      let told = false
      const tell = (why: string) =>
        told
          ? Effect.void
          : Effect.suspend(() => {
              told = true
              return Console.error(`rlm: note: --otlp: could not export spans to ${url} (${why}); they are dropped.`)
            })
      return client.pipe(
        HttpClient.tap((response) =>
          response.status >= 200 && response.status < 300 ? Effect.void : tell(`HTTP ${response.status}`)
        ),
        HttpClient.tapError((error) => tell(error.reason === "Transport" ? "no connection" : error.message))
      )
    })
  )
