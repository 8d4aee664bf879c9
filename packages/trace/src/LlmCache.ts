/**
 * A store of model responses keyed by request, so a run can be replayed with
 * no model (see `CachedAdapter`).
 *
 * The key of a request is the SHA-256 of the canonical JSON (keys sorted) of
 * its `role` and `messages`. An entry keeps every response recorded for its
 * request, in order: a run that asks the same question twice replays the two
 * answers it got, not the first one twice.
 *
 * @since 0.1.0
 */

import { createHash, type Hash } from "node:crypto"
import * as FileSystem from "@effect/platform/FileSystem"
import { CallRole, ChatMessage, type ChatRequest, ChatResponse } from "@rlm-runtime/adapters/LlmAdapter"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { canonicalJson } from "./internal/canonicalJson.js"
import * as PrivateFile from "./PrivateFile.js"

/**
 * The part of a `ChatRequest` the cache keys on and stores: the call role and
 * the messages. Other request fields (such as `maxOutputTokens`, the run's
 * remaining budget) do not change the key.
 *
 * @since 0.1.0
 * @category Models
 */
export const CachedRequest = Schema.Struct({
  role: CallRole,
  messages: Schema.Array(ChatMessage)
})

/**
 * @since 0.1.0
 * @category Models
 */
export type CachedRequest = typeof CachedRequest.Type

/**
 * The cached part of a request.
 *
 * @since 0.1.0
 * @category Models
 */
export const toCachedRequest = (request: ChatRequest | CachedRequest): CachedRequest => ({
  role: request.role,
  messages: request.messages
})

/**
 * The cache key of a request: SHA-256 hex of the canonical JSON of
 * `{ role, messages: [{ role, content }] }`. A message's tool calls, tool
 * call id and tool name (the tools protocol) are part of it when present, so a request
 * without them keeps the key it always had.
 *
 * @since 0.1.0
 * @category Keys
 */
export const keyOf = (request: ChatRequest | CachedRequest): string => {
  const messages = request.messages
  const resumed = resumePrefix(messages)
  const hash = resumed?.hash.copy() ?? createHash("sha256").update('{"messages":[', "utf8")
  for (let i = resumed?.count ?? 0; i < messages.length; i++) {
    hash.update(
      i === 0 ? messageJson(messages[i] as ChatMessage) : `,${messageJson(messages[i] as ChatMessage)}`,
      "utf8"
    )
  }
  const last = messages[messages.length - 1]
  if (last !== undefined && resumed?.count !== messages.length) {
    prefixes.set(last, { messages, count: messages.length, hash: hash.copy() })
  }
  return hash.update(`],"role":${JSON.stringify(request.role)}}`, "utf8").digest("hex")
}

/**
 * The canonical JSON of one message (keys sorted, as `canonicalJson` writes
 * them), computed once per message object: a conversation's earlier messages
 * are the same objects at every step (messages are immutable).
 */
const messageJson = (message: ChatMessage): string => {
  const known = messageJsons.get(message)
  if (known !== undefined) return known
  const json = canonicalJson({
    role: message.role,
    content: message.content,
    ...(message.toolCalls !== undefined && message.toolCalls.length > 0
      ? { toolCalls: message.toolCalls.map(({ arguments: args, id, name }) => ({ id, name, arguments: args })) }
      : {}),
    ...(message.toolCallId !== undefined ? { toolCallId: message.toolCallId } : {}),
    ...(message.toolName !== undefined ? { toolName: message.toolName } : {})
  })
  messageJsons.set(message, json)
  return json
}

const messageJsons = new WeakMap<object, string>()

/**
 * The hash state after the messages of an earlier request, kept by that
 * request's last message. A root request is the previous one with the reply
 * and the feedback appended, so {@link keyOf} hashes only what is new: the key
 * of a whole conversation is not recomputed at every step (which made a run's
 * hashing quadratic in its length).
 */
interface Prefix {
  readonly messages: ReadonlyArray<object>
  readonly count: number
  readonly hash: Hash
}

const prefixes = new WeakMap<object, Prefix>()

/** How far from the end {@link resumePrefix} looks for a known prefix. */
const prefixSearch = 8

/** The longest known prefix of `messages` among the last few positions, checked message by message (by identity). */
const resumePrefix = (messages: ReadonlyArray<object>): Prefix | undefined => {
  for (let end = messages.length; end > 0 && end > messages.length - prefixSearch; end--) {
    const prefix = prefixes.get(messages[end - 1] as object)
    if (prefix === undefined || prefix.count !== end) continue
    let same = true
    for (let i = 0; i < end && same; i++) same = prefix.messages[i] === messages[i]
    if (same) return prefix
  }
  return undefined
}

/**
 * One cached request with every response recorded for it, oldest first.
 *
 * @since 0.1.0
 * @category Models
 */
export class Entry extends Schema.Class<Entry>("@rlm-runtime/trace/LlmCache/Entry")({
  key: Schema.String,
  request: CachedRequest,
  responses: Schema.NonEmptyArray(ChatResponse)
}) {}

/**
 * The JSON file written by {@link layerFile}.
 *
 * @since 0.1.0
 * @category Models
 */
export class CacheFile extends Schema.Class<CacheFile>("@rlm-runtime/trace/LlmCache/CacheFile")({
  version: Schema.Literal(1),
  entries: Schema.Array(Entry)
}) {}

/**
 * A cache file could not be read or written.
 *
 * @since 0.1.0
 * @category Errors
 */
export class LlmCacheError extends Schema.TaggedError<LlmCacheError>("@rlm-runtime/trace/LlmCacheError")(
  "LlmCacheError",
  {
    reason: Schema.Literal("ReadFailed", "InvalidFile", "WriteFailed"),
    message: Schema.String,
    path: Schema.String
  }
) {}

/**
 * @since 0.1.0
 * @category Tags
 */
export class LlmCache extends Context.Tag("@rlm-runtime/trace/LlmCache")<LlmCache, LlmCache.Service>() {}

/**
 * @since 0.1.0
 */
export declare namespace LlmCache {
  /**
   * @since 0.1.0
   * @category Models
   */
  export interface Service {
    /** Where the cache lives (`"memory"` or a file path), for messages. */
    readonly location: string
    /** The entry for a key ({@link keyOf}). */
    readonly get: (key: string) => Effect.Effect<Option.Option<Entry>>
    /** Insert or replace the entry for `entry.key`. */
    readonly put: (entry: Entry) => Effect.Effect<void, LlmCacheError>
    /** Every entry, in insertion order. */
    readonly entries: Effect.Effect<ReadonlyArray<Entry>>
    /** Wait until every `put` so far is persisted (a no-op in memory). */
    readonly flush: Effect.Effect<void, LlmCacheError>
  }
}

const makeStore = (initial: Iterable<Entry>) =>
  Ref.make(new Map<string, Entry>(Array.from(initial, (entry) => [entry.key, entry] as const)))

/**
 * An in-memory cache, optionally pre-filled.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const makeMemory = (initial: Iterable<Entry> = []): Effect.Effect<LlmCache.Service> =>
  Effect.map(makeStore(initial), (ref) => ({
    location: "memory",
    get: (key) => Effect.map(Ref.get(ref), (map) => Option.fromNullable(map.get(key))),
    put: (entry) => Ref.update(ref, (map) => new Map(map).set(entry.key, entry)),
    entries: Effect.map(Ref.get(ref), (map) => Array.from(map.values())),
    flush: Effect.void
  }))

/**
 * An empty in-memory cache; each build of the layer has its own.
 *
 * @since 0.1.0
 * @category Layers
 */
export const layerMemory: Layer.Layer<LlmCache> = Layer.effect(LlmCache, makeMemory())

const decodeFile = Schema.decodeUnknown(CacheFile)
const encodeEntry = Schema.encode(Entry)

/** Entries are immutable, so each one is encoded once however often the file is rewritten. */
const entryJson = new WeakMap<Entry, string>()

const entryToJson = (entry: Entry) => {
  const cached = entryJson.get(entry)
  if (cached !== undefined) return Effect.succeed(cached)
  return Effect.map(encodeEntry(entry), (encoded) => {
    const json = JSON.stringify(encoded)
    entryJson.set(entry, json)
    return json
  })
}

/**
 * Read a cache file. A missing file is an empty cache.
 *
 * @since 0.1.0
 * @category Files
 */
export const readFile = (path: string): Effect.Effect<ReadonlyArray<Entry>, LlmCacheError, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const readFailed = (error: unknown) =>
      new LlmCacheError({
        reason: "ReadFailed",
        path,
        message: `Could not read the LLM cache file ${path}: ${String(error)}`
      })
    const exists = yield* fs.exists(path).pipe(Effect.mapError(readFailed))
    if (!exists) return []
    const text = yield* fs.readFileString(path).pipe(Effect.mapError(readFailed))
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (error) =>
        new LlmCacheError({
          reason: "InvalidFile",
          path,
          message: `The LLM cache file ${path} is not valid JSON (${error instanceof Error ? error.message : String(error)}). Delete it and record again.`
        })
    })
    const file = yield* decodeFile(json).pipe(
      Effect.mapError(
        (error) =>
          new LlmCacheError({
            reason: "InvalidFile",
            path,
            message: `The LLM cache file ${path} is not an LLM cache (version 1):\n${ParseResult.TreeFormatter.formatErrorSync(error)}`
          })
      )
    )
    // The key is derived from the request: recompute it rather than trust the file.
    return file.entries.map((entry) => new Entry({ ...entry, key: keyOf(entry.request) }))
  })

/**
 * Write a cache file atomically (a temporary file renamed over the target),
 * with mode `0600` whatever the umask or the old file's mode (see
 * `PrivateFile.writeFileString`): it holds every prompt and reply. The file is
 * one JSON document with one entry per line.
 *
 * @since 0.1.0
 * @category Files
 */
export const writeFile = (
  path: string,
  entries: ReadonlyArray<Entry>
): Effect.Effect<void, LlmCacheError, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    const lines = yield* Effect.forEach(entries, entryToJson)
    const text = `{"version":1,"entries":[${lines.length === 0 ? "" : `\n${lines.join(",\n")}\n`}]}\n`
    yield* PrivateFile.writeFileString(path, text)
  }).pipe(
    Effect.mapError(
      (error) =>
        new LlmCacheError({
          reason: "WriteFailed",
          path,
          message: `Could not write the LLM cache file ${path}: ${String(error)}. Check the directory exists and is writable.`
        })
    )
  )

/**
 * A cache persisted as one JSON file ({@link CacheFile}). The file is read
 * once when the cache is built (a missing file is an empty cache). After a
 * `put`, a background writer rewrites the file atomically; puts that arrive
 * while it writes are folded into its next write, so a burst of fast calls
 * costs a few writes, not one per call. `flush` waits until everything is on
 * disk, and closing the scope flushes too. A failed background write is
 * reported by the next `put` or `flush`.
 *
 * @since 0.1.0
 * @category Constructors
 */
export const makeFile = (
  path: string
): Effect.Effect<LlmCache.Service, LlmCacheError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const memory = yield* Effect.flatMap(readFile(path), makeMemory)
    const version = yield* Ref.make(0)
    const written = yield* Ref.make(0)
    const failure = yield* Ref.make(Option.none<LlmCacheError>())
    const lock = yield* Effect.makeSemaphore(1)
    const write = lock
      .withPermits(1)(
        Effect.gen(function* () {
          const target = yield* Ref.get(version)
          if ((yield* Ref.get(written)) >= target) return
          yield* writeFile(path, yield* memory.entries)
          yield* Ref.set(written, target)
          yield* Ref.set(failure, Option.none())
        })
      )
      .pipe(
        Effect.tapError((error) => Ref.set(failure, Option.some(error))),
        Effect.provideService(FileSystem.FileSystem, fs),
        Effect.uninterruptible
      )
    const reportFailure = Effect.flatMap(Ref.get(failure), (error) =>
      Option.isSome(error) ? Effect.fail(error.value) : Effect.void
    )
    // Registered before the writer fiber, so it runs after the writer is stopped.
    yield* Effect.addFinalizer(() => Effect.ignoreLogged(write))
    const dirty = yield* Queue.sliding<void>(1)
    yield* Queue.take(dirty).pipe(Effect.zipRight(Effect.ignore(write)), Effect.forever, Effect.forkScoped)
    return {
      location: path,
      get: memory.get,
      put: (entry) =>
        reportFailure.pipe(
          Effect.zipRight(memory.put(entry)),
          Effect.zipRight(Ref.update(version, (n) => n + 1)),
          Effect.zipRight(Queue.offer(dirty, undefined)),
          Effect.asVoid
        ),
      entries: memory.entries,
      flush: Effect.zipRight(write, reportFailure)
    }
  })

/**
 * {@link makeFile} as a layer.
 *
 * @since 0.1.0
 * @category Layers
 */
export const layerFile = (path: string): Layer.Layer<LlmCache, LlmCacheError, FileSystem.FileSystem> =>
  Layer.scoped(LlmCache, makeFile(path))
