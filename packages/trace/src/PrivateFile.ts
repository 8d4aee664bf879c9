/**
 * Files only their owner can read. A trace holds the whole context and every
 * prompt and reply, and an LLM cache holds the same, so every file this package
 * and the CLI write (trace `.json`, trace `.jsonl`, LLM cache files) is mode
 * `0600`, whatever the umask and whatever mode the file had before:
 *
 * - A whole file ({@link writeFileString}) is written to a fresh temporary file
 *   beside the target, created exclusively (`wx`, so a stale or planted file or
 *   link is never written through) with mode `0600` and `chmod`ed to `0600` (the
 *   umask can only take bits away, never give them, and a strict umask such as
 *   `0277` would leave it unwritable to us otherwise), then renamed over the
 *   target. The target ends up a new `0600` file, atomically: a reader sees the
 *   old content or the new, never half of it. An existing file's mode, links and
 *   owner are not kept. A target that exists and is not a regular file
 *   (`/dev/stdout`, a FIFO) is written in place, with its mode left alone.
 * - A file written as it grows ({@link open}, for JSONL traces) cannot be
 *   renamed into place: it is opened with mode `0600` and, when it is a regular
 *   file, `chmod`ed to `0600` before anything is written to it, which also
 *   takes the read bits off a file that existed before.
 *
 * @since 0.2.0
 */
import type { PlatformError } from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

/**
 * The mode of every file written here: read and write for the owner only.
 *
 * @since 0.2.0
 * @category Constants
 */
export const mode = 0o600

const notFound = (error: PlatformError) => error._tag === "SystemError" && error.reason === "NotFound"

/** The target's type, or `undefined` when it does not exist. */
const typeOf = (fs: FileSystem.FileSystem, path: string) =>
  fs.stat(path).pipe(
    Effect.map((info) => info.type),
    Effect.catchIf(notFound, () => Effect.succeed(undefined))
  )

/**
 * Write `text` to `path` as a file of mode `0600` (see the module description:
 * a temporary file renamed over the target).
 *
 * @since 0.2.0
 * @category Files
 */
export const writeFileString = (
  path: string,
  text: string
): Effect.Effect<void, PlatformError, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const type = yield* typeOf(fs, path)
    if (type !== undefined && type !== "File") return yield* fs.writeFileString(path, text)
    // Unique per write; `wx` fails rather than write through anything already there.
    const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`
    yield* Effect.gen(function* () {
      yield* fs.writeFileString(tmp, text, { flag: "wx", mode })
      yield* fs.chmod(tmp, mode)
      yield* fs.rename(tmp, path)
    }).pipe(Effect.onError(() => Effect.ignore(fs.remove(tmp))))
  })

/**
 * Open `path` for writing as a file of mode `0600` (see the module
 * description); `append` keeps what it holds, else it is truncated. Closed
 * with the scope.
 *
 * @since 0.2.0
 * @category Files
 */
export const open = (
  path: string,
  options?: { readonly append?: boolean | undefined }
): Effect.Effect<FileSystem.File, PlatformError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const file = yield* fs.open(path, { flag: options?.append === true ? "a" : "w", mode })
    const info = yield* file.stat
    if (info.type === "File") yield* fs.chmod(path, mode)
    return file
  })
