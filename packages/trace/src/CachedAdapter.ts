/**
 * An `LlmAdapter` in front of an {@link LlmCache}: record a run's model calls,
 * replay them later with no model at all, or use the cache as a read-through
 * memo while iterating on prompts.
 *
 * - `record`: every call goes to the model; its response is stored. The first
 *   response stored for a request in this adapter's life replaces what the
 *   cache held for it; later ones are appended.
 * - `replay`: every call is answered from the cache; a miss fails with
 *   `LlmError` reason `"NotFound"`. Needs no underlying `LlmAdapter`.
 * - `read-through`: answered from the cache when it holds an answer, otherwise
 *   sent to the model and stored.
 *
 * The n-th identical request of a run gets the n-th recorded response (the last
 * one once they run out), so a run that asked the same question twice and got
 * two answers replays both.
 *
 * @since 0.1.0
 */
import * as KeyValueStore from "@effect/platform/KeyValueStore"
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Arr from "effect/Array"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as LlmCache from "./LlmCache.js"

/**
 * @since 0.1.0
 * @category Models
 */
export type Mode = "record" | "replay" | "read-through"

/**
 * @since 0.1.0
 * @category Models
 */
export interface ReplayOptions {
  readonly mode: "replay"
  /**
   * The model name reported by `model(role)`. Default: the model of the first
   * cached response for that role, else `"replay"`.
   */
  readonly model?: string | ((role: LlmAdapter.CallRole) => string) | undefined
}

/**
 * @since 0.1.0
 * @category Models
 */
export interface LiveOptions {
  readonly mode: "record" | "read-through"
}

/**
 * @since 0.1.0
 * @category Models
 */
export type Options = ReplayOptions | LiveOptions

const shortKey = (key: string) => key.slice(0, 12)

const describeRequest = (request: LlmAdapter.ChatRequest): string => {
  const last = request.messages[request.messages.length - 1]
  const preview =
    last === undefined
      ? "no messages"
      : `last ${last.role} message ${JSON.stringify(last.content.length > 80 ? `${last.content.slice(0, 80)}…` : last.content)}`
  return `${request.role} call with ${request.messages.length} message(s), ${preview}`
}

/** Occurrence counters: the n-th identical request of this adapter's life. */
const makeCounter = Effect.map(
  Ref.make(new Map<string, number>()),
  (ref) => (key: string) =>
    Ref.modify(ref, (map): [number, Map<string, number>] => {
      const n = map.get(key) ?? 0
      return [n, new Map(map).set(key, n + 1)]
    })
)

const pick = (entry: LlmCache.Entry, n: number): LlmAdapter.ChatResponse =>
  entry.responses[Math.min(n, entry.responses.length - 1)] as LlmAdapter.ChatResponse

const cacheWriteFailed = (error: LlmCache.LlmCacheError) =>
  new LlmAdapter.LlmError({
    reason: "Unknown",
    message: `The model answered but its response could not be stored in the LLM cache: ${error.message}`
  })

/**
 * An adapter answering only from the cache. It needs no model.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const makeReplay = (
  options: Omit<ReplayOptions, "mode"> = {}
): Effect.Effect<LlmAdapter.LlmAdapter.Service, never, LlmCache.LlmCache> =>
  Effect.gen(function* () {
    const cache = yield* LlmCache.LlmCache
    const next = yield* makeCounter
    const entries = yield* cache.entries
    const recordedModel = (role: LlmAdapter.CallRole) =>
      entries.find((entry) => entry.request.role === role)?.responses[0].model ?? "replay"
    const fixed = options.model
    const model: (role: LlmAdapter.CallRole) => string =
      fixed === undefined ? recordedModel : typeof fixed === "string" ? () => fixed : fixed
    return LlmAdapter.make({
      model,
      chat: (request) =>
        Effect.gen(function* () {
          const key = LlmCache.keyOf(request)
          const n = yield* next(key)
          const entry = yield* cache.get(key)
          if (Option.isNone(entry)) {
            const size = (yield* cache.entries).length
            return yield* new LlmAdapter.LlmError({
              reason: "NotFound",
              message: `Replay has no cached response for this ${describeRequest(request)} (key ${shortKey(key)}…; the cache at ${cache.location} holds ${size} entr${size === 1 ? "y" : "ies"}). Replay answers only from the cache: run the same query, context and options that were recorded, or record this run with mode "record" or "read-through".`
            })
          }
          return pick(entry.value, n)
        })
    })
  })

/**
 * An adapter recording into, or reading through, the cache in front of the
 * `LlmAdapter` in context.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const makeLive = (
  options: LiveOptions
): Effect.Effect<LlmAdapter.LlmAdapter.Service, never, LlmAdapter.LlmAdapter | LlmCache.LlmCache> =>
  Effect.gen(function* () {
    const model = yield* LlmAdapter.LlmAdapter
    const cache = yield* LlmCache.LlmCache
    const next = yield* makeCounter
    const stored = yield* makeCounter
    // get + put of one entry must not interleave with another append.
    const lock = yield* Effect.makeSemaphore(1)
    const store = (key: string, request: LlmAdapter.ChatRequest, response: LlmAdapter.ChatResponse) =>
      lock
        .withPermits(1)(
          Effect.gen(function* () {
            const first = (yield* stored(key)) === 0
            const previous = yield* cache.get(key)
            const earlier =
              options.mode === "record" && first
                ? []
                : Option.match(previous, { onNone: () => [], onSome: (entry) => entry.responses })
            yield* cache.put(
              new LlmCache.Entry({
                key,
                request: LlmCache.toCachedRequest(request),
                responses: Arr.append(earlier, response)
              })
            )
          })
        )
        .pipe(Effect.mapError(cacheWriteFailed))
    const callAndStore = (key: string, request: LlmAdapter.ChatRequest) =>
      Effect.tap(model.chat(request), (response) => store(key, request, response))
    return LlmAdapter.make({
      model: model.model,
      chat: (request) =>
        Effect.gen(function* () {
          const key = LlmCache.keyOf(request)
          const n = yield* next(key)
          if (options.mode === "read-through") {
            const entry = yield* cache.get(key)
            if (Option.isSome(entry) && n < entry.value.responses.length) return pick(entry.value, n)
          }
          return yield* callAndStore(key, request)
        })
    })
  })

/**
 * The cached adapter as a layer. In `replay` mode it needs only an
 * `LlmCache`; in `record` and `read-through` modes it also needs the real
 * `LlmAdapter` to wrap:
 *
 * ```ts
 * CachedAdapter.layer({ mode: "record" }).pipe(
 *   Layer.provide(FakeAdapter.layer(script)),
 *   Layer.provide(LlmCache.layerFile("cache.json"))
 * )
 * CachedAdapter.layer({ mode: "replay" }).pipe(Layer.provide(LlmCache.layerFile("cache.json")))
 * ```
 *
 * @since 0.1.0
 * @category Layers
 */
export function layer(options: ReplayOptions): Layer.Layer<LlmAdapter.LlmAdapter, never, LlmCache.LlmCache>
export function layer(
  options: LiveOptions
): Layer.Layer<LlmAdapter.LlmAdapter, never, LlmAdapter.LlmAdapter | LlmCache.LlmCache>
export function layer(
  options: Options
): Layer.Layer<LlmAdapter.LlmAdapter, never, LlmAdapter.LlmAdapter | LlmCache.LlmCache>
export function layer(
  options: Options
): Layer.Layer<LlmAdapter.LlmAdapter, never, LlmAdapter.LlmAdapter | LlmCache.LlmCache> {
  return options.mode === "replay"
    ? Layer.effect(LlmAdapter.LlmAdapter, makeReplay(options))
    : Layer.effect(LlmAdapter.LlmAdapter, makeLive(options))
}

/**
 * `layer({ mode: "replay" })`: an `LlmAdapter` built purely from the cache.
 *
 * @since 0.1.0
 * @category Layers
 */
export const layerReplay = (
  options: Omit<ReplayOptions, "mode"> = {}
): Layer.Layer<LlmAdapter.LlmAdapter, never, LlmCache.LlmCache> =>
  Layer.effect(LlmAdapter.LlmAdapter, makeReplay(options))

/**
 * @since 0.2.0
 * @category Models
 */
export interface StoreOptions {
  /** The calls read through the store. Default `["sub"]`: sub-calls only. */
  readonly roles?: ReadonlyArray<LlmAdapter.CallRole> | undefined
}

/**
 * A read-through cache across runs in front of the `LlmAdapter` in context,
 * kept in a `KeyValueStore` (for a directory,
 * `NodeKeyValueStore.layerFileSystem(dir)`; `rlm run --cache DIR`): a call of
 * one of `roles` (default: sub-calls) is answered from the store when it holds
 * a response for the request's key ({@link LlmCache.keyOf}), else sent to the
 * model and its response stored. Repeated prompts, in this run or a later
 * one, cost nothing. Calls of other roles (the root model's turns) always go
 * to the model. A store that cannot be read or written is logged and treated
 * as a miss: the cache never fails a run.
 *
 * @since 0.2.0
 * @category Constructors
 */
export const makeStore = (
  options: StoreOptions = {}
): Effect.Effect<LlmAdapter.LlmAdapter.Service, never, LlmAdapter.LlmAdapter | KeyValueStore.KeyValueStore> =>
  Effect.gen(function* () {
    const model = yield* LlmAdapter.LlmAdapter
    const store = (yield* KeyValueStore.KeyValueStore).forSchema(LlmAdapter.ChatResponse)
    const roles = new Set(options.roles ?? ["sub"])
    const read = (key: string) =>
      store
        .get(key)
        .pipe(
          Effect.catchAllCause((cause) =>
            Effect.as(
              Effect.logWarning(`The LLM cache entry ${shortKey(key)}… could not be read; asking the model`, cause),
              Option.none()
            )
          )
        )
    const write = (key: string, response: LlmAdapter.ChatResponse) =>
      store
        .set(key, response)
        .pipe(
          Effect.catchAllCause((cause) =>
            Effect.logWarning(`The LLM cache entry ${shortKey(key)}… could not be written`, cause)
          )
        )
    return LlmAdapter.make({
      model: model.model,
      chat: (request) => {
        if (!roles.has(request.role)) return model.chat(request)
        const key = LlmCache.keyOf(request)
        return Effect.flatMap(read(key), (cached) =>
          Option.isSome(cached)
            ? Effect.succeed(cached.value)
            : Effect.tap(model.chat(request), (response) => write(key, response))
        )
      }
    })
  })

/**
 * {@link makeStore} as a layer:
 *
 * ```ts
 * CachedAdapter.layerStore().pipe(
 *   Layer.provide(adapter),
 *   Layer.provide(NodeKeyValueStore.layerFileSystem(".rlm-cache"))
 * )
 * ```
 *
 * @since 0.2.0
 * @category Layers
 */
export const layerStore = (
  options?: StoreOptions
): Layer.Layer<LlmAdapter.LlmAdapter, never, LlmAdapter.LlmAdapter | KeyValueStore.KeyValueStore> =>
  Layer.effect(LlmAdapter.LlmAdapter, makeStore(options))
