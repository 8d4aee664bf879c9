/**
 * The start-up memory snapshot of the Python sandbox: a memory image of
 * Pyodide taken right after `loadPyodide` and the build of the REPL module,
 * in a locked-down child that has run no session code, loaded no context,
 * given Python no JavaScript object and not yet been hardened (the hardening
 * runs in every interpreter restored from it). Restoring it skips
 * CPython's initialisation: about 0.5 s instead of 4 s.
 *
 * It is built once per host process (in memory, shared by every layer with
 * the same Node and Pyodide) and optionally cached on disk in a folder the
 * user owns. It is never fetched from the network. A child receives it as the
 * path of the cached file (it may read that one file, nothing else of the
 * folder), or, without a disk cache, as bytes on its stdin.
 */
import type { ChildProcess } from "node:child_process"
import { createHash } from "node:crypto"
import {
  chmodSync,
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync
} from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { Readable } from "node:stream"
import { fileURLToPath } from "node:url"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberId from "effect/FiberId"
import { onJsonLines } from "./jsonLines.js"
import { decode, SnapshotAnnounce } from "./pythonMessages.js"
import { type ProcessOptions, type Snapshot, type SnapshotSource, spawnChild } from "./pythonProcess.js"

type State =
  | { readonly _tag: "Idle" }
  | { readonly _tag: "Building"; readonly done: Deferred.Deferred<Snapshot | undefined> }
  | { readonly _tag: "Ready"; readonly snapshot: Snapshot | undefined }

/** One entry per (Node, Pyodide, runtime) combination, for the life of the host process. */
const states = new Map<string, State>()

/** The default cache folder: `$XDG_CACHE_HOME/rlm-runtime`, else `~/.cache/rlm-runtime`. */
export const defaultSnapshotDir = (): string | undefined => {
  const xdg = process.env.XDG_CACHE_HOME
  if (xdg !== undefined && path.isAbsolute(xdg)) return path.join(xdg, "rlm-runtime")
  try {
    const home = os.homedir()
    return home ? path.join(home, ".cache", "rlm-runtime") : undefined
  } catch {
    return undefined
  }
}

/**
 * What the snapshot depends on: the Node binary, the Pyodide files and the
 * child's load options (its source). Pyodide itself refuses a snapshot of
 * another build.
 */
const snapshotKey = (options: ProcessOptions): string => {
  const hash = createHash("sha256")
  hash.update(`${options.nodePath}\0${process.version}\0${options.pyodideDir}\0`)
  for (const file of ["pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "package.json"]) {
    try {
      const stat = statSync(path.join(options.pyodideDir, file))
      hash.update(`${file}:${stat.size}:${stat.mtimeMs}\0`)
    } catch {
      hash.update(`${file}:missing\0`)
    }
  }
  for (const file of ["python-child.mjs", "snapshot-image.mjs", "python_repl.py"]) {
    try {
      hash.update(readFileSync(fileURLToPath(new URL(`../../runtime/${file}`, import.meta.url))))
    } catch {
      hash.update(`${file}:missing`)
    }
  }
  return hash.digest("hex").slice(0, 32)
}

/** The magic number of rlm-runtime's snapshot format (`runtime/snapshot-image.mjs`). */
const MAGIC = "RLMSNAP1"

/** A cheap sanity check; the child checks the tables, and Pyodide the build id, when restoring. */
const looksLikeSnapshot = (bytes: Uint8Array): boolean =>
  bytes.length > 1024 && Buffer.from(bytes.buffer, bytes.byteOffset, MAGIC.length).toString("latin1") === MAGIC

/** A cached file is handed to the child by path (it reads it itself, straight into the interpreter's memory). */
const readCached = (file: string): Snapshot | undefined => {
  let fd: number | undefined
  try {
    if (!statSync(file).isFile()) return undefined
    fd = openSync(file, "r")
    const head = new Uint8Array(1025)
    if (readSync(fd, head, 0, head.length, 0) !== head.length || !looksLikeSnapshot(head)) return undefined
    // Its modification time says when it was last used (see writeCached).
    try {
      const now = new Date()
      utimesSync(file, now, now)
    } catch {
      // A read-only cache is still a cache.
    }
    return { file }
  } catch {
    return undefined
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

const SNAPSHOT_FILE = /^pyodide-snapshot-[0-9a-f]{32}\.bin$/

/** How many snapshots of other versions a cache folder keeps beside the current one. */
const KEEP_OTHERS = 3

const writeCached = (dir: string, file: string, bytes: Uint8Array): boolean => {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const temp = `${file}.${process.pid}.tmp`
    writeFileSync(temp, bytes, { mode: 0o600 })
    chmodSync(temp, 0o600)
    renameSync(temp, file)
    // Snapshots of other Pyodide/Node/runtime versions (other installs sharing
    // this folder) are ~15 MB each: keep the most recently used few of them.
    const others = readdirSync(dir)
      .filter((name) => SNAPSHOT_FILE.test(name) && path.join(dir, name) !== file)
      .map((name) => ({ path: path.join(dir, name), used: statSync(path.join(dir, name)).mtimeMs }))
      .sort((a, b) => b.used - a.used)
    for (const old of others.slice(KEEP_OTHERS)) unlinkSync(old.path)
    return true
  } catch {
    // A cache that cannot be written only costs the next process a rebuild.
    return false
  }
}

/**
 * Run a child in snapshot mode: it loads Pyodide with `_makeSnapshot`, writes
 * the image to its stdout and exits. Scoped: the child is killed and reaped
 * if the build is interrupted or fails.
 */
const build = (options: ProcessOptions): Effect.Effect<Uint8Array | undefined> =>
  Effect.acquireRelease(
    Effect.sync(() => spawnChild(options, { mode: "snapshot" })),
    (child) => killAndWait(child)
  ).pipe(
    Effect.flatMap((child) =>
      Effect.async<Uint8Array | undefined>((resume) => {
        const chunks: Array<Buffer> = []
        let expected = -1
        child.stdin?.on("error", () => {})
        child.stderr?.resume()
        child.stdout?.on("data", (chunk: Buffer) => chunks.push(chunk))
        // The size announced on fd 5 (a JSON line, decoded like every message from a child).
        const announce = decode(SnapshotAnnounce)
        const fromChild = (child.stdio as ReadonlyArray<unknown>)[5] as Readable | null | undefined
        fromChild?.on("error", () => {})
        if (fromChild) {
          onJsonLines(fromChild, (message) => {
            const decoded = announce(message)
            if (Either.isRight(decoded)) expected = decoded.right.bytes
          })
        }
        child.on("error", () => resume(Effect.succeed(undefined)))
        child.on("close", (code) => {
          const bytes = Buffer.concat(chunks)
          resume(
            Effect.succeed(
              code === 0 && bytes.length === expected && looksLikeSnapshot(bytes)
                ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length)
                : undefined
            )
          )
        })
      })
    ),
    Effect.timeout(options.startTimeout),
    Effect.orElseSucceed(() => undefined),
    Effect.scoped
  )

const killAndWait = (child: ChildProcess): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    child.kill("SIGKILL")
  }).pipe(Effect.timeout(Duration.seconds(5)), Effect.ignore)

/**
 * The snapshot source for `options`. `dir`: the disk cache folder, or
 * `undefined` for in-memory only.
 *
 * @internal
 */
export const snapshotSource = (options: ProcessOptions, dir: string | undefined): SnapshotSource => {
  const key = snapshotKey(options)
  const file = dir === undefined ? undefined : path.join(dir, `pyodide-snapshot-${key}.bin`)
  const stateKey = `${key}\0${file ?? ""}`

  const load: Effect.Effect<Snapshot | undefined> = Effect.suspend(() => {
    const cached = file === undefined ? undefined : readCached(file)
    if (cached !== undefined) return Effect.succeed(cached)
    return build(options).pipe(
      Effect.map((bytes): Snapshot | undefined => {
        if (bytes === undefined) return undefined
        if (dir !== undefined && file !== undefined && writeCached(dir, file, bytes)) return { file }
        return { bytes }
      })
    )
  })

  const get: Effect.Effect<Snapshot | undefined> = Effect.suspend(() => {
    const state = states.get(stateKey) ?? { _tag: "Idle" }
    switch (state._tag) {
      case "Ready":
        return Effect.succeed(state.snapshot)
      case "Building":
        return Deferred.await(state.done)
      case "Idle": {
        // This fiber builds; others wait on the Deferred. The build is not
        // interruptible (it is bounded by startTimeout and owns its child).
        const done = Deferred.unsafeMake<Snapshot | undefined>(FiberId.none)
        states.set(stateKey, { _tag: "Building", done })
        return Effect.uninterruptible(
          load.pipe(
            Effect.tap((snapshot) =>
              Effect.sync(() => {
                states.set(stateKey, { _tag: "Ready", snapshot })
              })
            ),
            Effect.tap((snapshot) => Deferred.succeed(done, snapshot))
          )
        )
      }
    }
  })

  return {
    get,
    // A snapshot that did not restore (the child fell back to a plain load) is
    // dropped, here and on disk; this process then starts interpreters plainly.
    failed: () => {
      states.set(stateKey, { _tag: "Ready", snapshot: undefined })
      if (file !== undefined) {
        try {
          unlinkSync(file)
        } catch {}
      }
    }
  }
}
