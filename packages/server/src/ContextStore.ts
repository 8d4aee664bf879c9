/**
 * Uploaded contexts: each request body is streamed to a file in a directory
 * (never held whole in memory while it arrives), counted against a size
 * limit, and named by a random id (`ctx_` + 32 hex digits) that requests pass
 * as `context_id` instead of sending the context again. Files are mode `0600`
 * (a context may be private); ids survive a restart of the server on the same
 * directory.
 *
 * @since 0.1.0
 */
import { createHash, randomBytes } from "node:crypto"
import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"

/**
 * @since 0.1.0
 * @category Models
 */
export interface Options {
  /** Where the files go; created (mode 0700) if missing. */
  readonly dir: string
  /** The largest context, in bytes. */
  readonly maxBytes: number
}

/**
 * What an upload made.
 *
 * @since 0.1.0
 * @category Models
 */
export interface ContextInfo {
  readonly id: string
  readonly bytes: number
  readonly sha256: string
  /** Unix seconds. */
  readonly createdAt: number
}

/**
 * @since 0.1.0
 * @category Errors
 */
export class ContextError extends Data.TaggedError("ContextError")<{
  readonly reason: "NotFound" | "TooLarge" | "Io" | "Upload" | "NotText"
  readonly message: string
}> {}

/**
 * @since 0.1.0
 * @category Models
 */
export interface ContextStore {
  readonly dir: string
  readonly maxBytes: number
  /** Stream a body to a new context; fails "TooLarge" past `maxBytes` (the partial file is removed). */
  readonly put: <E>(body: Stream.Stream<Uint8Array, E>) => Effect.Effect<ContextInfo, ContextError>
  /** The context's text (UTF-8). */
  readonly get: (id: string) => Effect.Effect<string, ContextError>
  readonly info: (id: string) => Effect.Effect<ContextInfo, ContextError>
  readonly remove: (id: string) => Effect.Effect<void, ContextError>
}

/** Bytes past the limit still read (and dropped) so that the client gets its 413. */
const discardSlack = 16 * 1024 * 1024

const idPattern = /^ctx_[0-9a-f]{32}$/

/**
 * Whether `id` is one this store could have made (no other name is ever
 * looked up on disk).
 *
 * @since 0.1.0
 * @category Guards
 */
export const isId = (id: string): boolean => idPattern.test(id)

const io = (what: string) => (e: unknown) =>
  new ContextError({ reason: "Io", message: `${what}: ${e instanceof Error ? e.message : String(e)}` })

const notFound = (id: string) =>
  new ContextError({
    reason: "NotFound",
    message: `no context ${JSON.stringify(id)}: upload one with POST /v1/contexts and pass the id it returns.`
  })

/**
 * @since 0.1.0
 * @category Constructors
 */
export const make = (options: Options): Effect.Effect<ContextStore, ContextError> =>
  Effect.gen(function* () {
    const dir = NodePath.resolve(options.dir)
    yield* Effect.tryPromise({
      try: () => NodeFs.promises.mkdir(dir, { recursive: true, mode: 0o700 }),
      catch: io(`could not create the contexts directory ${dir}`)
    })
    const file = (id: string) => NodePath.join(dir, `${id}.txt`)

    const put = <E>(body: Stream.Stream<Uint8Array, E>): Effect.Effect<ContextInfo, ContextError> =>
      Effect.gen(function* () {
        const id = `ctx_${randomBytes(16).toString("hex")}`
        const part = NodePath.join(dir, `${id}.part`)
        const handle = yield* Effect.acquireRelease(
          Effect.tryPromise({ try: () => NodeFs.promises.open(part, "wx", 0o600), catch: io("could not store") }),
          (h) => Effect.promise(() => h.close())
        )
        const hash = createHash("sha256")
        const decoder = new TextDecoder("utf-8", { fatal: true })
        // `text: false` once a chunk is not UTF-8: the rest is read and dropped (failing the body stream would
        // destroy the request, and its socket, before the 400 is sent).
        const counted = { bytes: 0, text: true }
        const tooLarge = new ContextError({
          reason: "TooLarge",
          message: `the context is larger than this server's limit of ${options.maxBytes} bytes.`
        })
        const written = body.pipe(
          Stream.mapError(
            (e) =>
              new ContextError({
                reason: "Upload",
                message: `the upload broke off: ${e instanceof Error ? e.message : String(e)}`
              })
          ),
          Stream.runForEach((chunk) =>
            Effect.gen(function* () {
              counted.bytes += chunk.byteLength
              if (counted.bytes > options.maxBytes) {
                // Read on (and drop) what the client still sends, so that it gets the 413 rather than a reset
                // connection; a body far past the limit is cut off.
                if (counted.bytes > 2 * options.maxBytes + discardSlack) return yield* tooLarge
                return
              }
              if (!counted.text) return
              try {
                decoder.decode(chunk, { stream: true })
              } catch {
                counted.text = false
                return
              }
              hash.update(chunk)
              yield* Effect.tryPromise({ try: () => handle.write(chunk), catch: io("could not store") })
            })
          ),
          Effect.zipRight(
            Effect.suspend(() =>
              counted.bytes > options.maxBytes
                ? Effect.fail(tooLarge)
                : !counted.text
                  ? Effect.fail(new ContextError({ reason: "NotText", message: "the context is not UTF-8 text." }))
                  : Effect.try({
                      try: () => decoder.decode(),
                      catch: () => new ContextError({ reason: "NotText", message: "the context is not UTF-8 text." })
                    })
            )
          )
        )
        yield* written.pipe(Effect.onError(() => Effect.promise(() => NodeFs.promises.rm(part, { force: true }))))
        yield* Effect.tryPromise({
          try: () => NodeFs.promises.rename(part, file(id)),
          catch: io("could not store")
        })
        const info: ContextInfo = {
          id,
          bytes: counted.bytes,
          sha256: hash.digest("hex"),
          createdAt: Math.floor(Date.now() / 1000)
        }
        yield* Effect.tryPromise({
          try: () => NodeFs.promises.writeFile(NodePath.join(dir, `${id}.json`), JSON.stringify(info), { mode: 0o600 }),
          catch: io("could not store")
        })
        return info
      }).pipe(Effect.scoped)

    const exists = (id: string) =>
      isId(id)
        ? Effect.tryPromise({ try: () => NodeFs.promises.stat(file(id)), catch: () => notFound(id) })
        : Effect.fail(notFound(id))

    const info = (id: string) =>
      Effect.zipRight(
        exists(id),
        Effect.tryPromise({
          try: async () => JSON.parse(await NodeFs.promises.readFile(NodePath.join(dir, `${id}.json`), "utf8")),
          catch: io(`could not read the context ${id}`)
        })
      ) as Effect.Effect<ContextInfo, ContextError>

    const get = (id: string) =>
      Effect.flatMap(exists(id), (stat) =>
        // V8's longest string is ~2^29 UTF-16 units: a bigger file cannot become one context string.
        stat.size > 512 * 1024 * 1024
          ? Effect.fail(
              new ContextError({
                reason: "TooLarge",
                message: `the context ${id} holds ${stat.size} bytes; a run can load at most 536870912 (512 MiB) as one string.`
              })
            )
          : Effect.tryPromise({
              try: () => NodeFs.promises.readFile(file(id), "utf8"),
              catch: io(`could not read the context ${id}`)
            })
      )

    const remove = (id: string) =>
      Effect.zipRight(
        exists(id),
        Effect.tryPromise({
          try: async () => {
            await NodeFs.promises.rm(file(id), { force: true })
            await NodeFs.promises.rm(NodePath.join(dir, `${id}.json`), { force: true })
          },
          catch: io(`could not remove the context ${id}`)
        })
      )

    return { dir, maxBytes: options.maxBytes, put, get, info, remove }
  })
