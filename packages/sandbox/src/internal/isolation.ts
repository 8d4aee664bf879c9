/**
 * The OS wall under every interpreter process (Linux): the command that starts
 * the interpreter, wrapped so that it runs
 *
 * - inside **bubblewrap** (`bwrap`): its own network namespace (nothing but its
 *   own loopback), PID, IPC, UTS and cgroup namespaces, killed with its host
 *   (`--die-with-parent`), no new privileges, every capability dropped, a new
 *   terminal session, and a file system view holding only Node, its shared
 *   libraries and the files the interpreter reads, all read-only, with a
 *   private `/tmp`, a minimal `/dev` and its own `/proc`;
 * - else inside **unshare** (util-linux): network, PID, IPC and UTS namespaces
 *   (the file system is the host's, read access still limited by Node's
 *   permission model), killed with its host through `setpriv --pdeathsig`;
 * - else as a plain process (`setpriv --pdeathsig` where present).
 *
 * Which one a machine gives is found once per host process, by starting Node
 * through each wall and checking that it sees no network interface but its
 * loopback. Where `prlimit` exists, the process's writable memory is capped
 * (`RLIMIT_DATA`; `RLIMIT_AS` would refuse WebAssembly's address-space
 * reservations, so it is not usable for Node).
 */
import { spawnSync } from "node:child_process"
import {
  accessSync,
  constants,
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync
} from "node:fs"
import * as path from "node:path"
import * as Effect from "effect/Effect"
import { type Isolation, type IsolationMode, SandboxError } from "../Sandbox.js"

/** @internal */
export interface WrapSpec {
  /** The Node executable. */
  readonly command: string
  /** Node's flags, the script and its arguments. */
  readonly args: ReadonlyArray<string>
  /** Files and folders the process reads (bound read-only into its view, at the same paths). */
  readonly readable: ReadonlyArray<string>
  /** Working directory; must be inside `readable`. */
  readonly cwd: string
  /** Cap on the process's writable memory (`RLIMIT_DATA`), in bytes. */
  readonly memoryBytes?: number | undefined
}

/** @internal */
export type WallTool = "bwrap" | "unshare" | "none"

/** @internal */
export interface Wall {
  readonly isolation: Isolation
  readonly tool: WallTool
  readonly wrap: (spec: WrapSpec) => { readonly command: string; readonly args: ReadonlyArray<string> }
}

/** An executable's absolute path, found on the host's `PATH` (never the child's). */
const which = (name: string): string | undefined => {
  for (const dir of (process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin").split(path.delimiter)) {
    if (dir === "") continue
    const candidate = path.join(dir, name)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {}
  }
  return undefined
}

/** The shared libraries mapped into this (Node) process: the ones a Node child needs too. */
const mappedLibraryDirs = (): ReadonlyArray<string> => {
  try {
    const dirs = new Set<string>()
    for (const line of readFileSync("/proc/self/maps", "utf8").split("\n")) {
      const file = line.split(/\s+/)[5]
      if (file !== undefined && file.startsWith("/") && /\.so(\.|$)/.test(path.basename(file))) {
        dirs.add(path.dirname(file))
      }
    }
    return [...dirs]
  } catch {
    return []
  }
}

/**
 * Where a Node executable's libraries live: for the host's own executable,
 * the folders of the libraries this process has mapped; for another, the
 * usual library folders.
 */
const libraryPaths = (node: string): ReadonlyArray<string> => {
  const common = ["/etc/ld.so.cache", "/usr/lib64"]
  const own = (() => {
    try {
      return realpathSync(node) === realpathSync(process.execPath)
    } catch {
      return false
    }
  })()
  const mapped = own ? mappedLibraryDirs() : []
  return [...common, ...(mapped.length > 0 ? mapped : ["/lib", "/usr/lib", "/usr/local/lib"])]
}

/**
 * bubblewrap arguments making `target` reachable in the view at the same
 * path: every symbolic link on the way is recreated (as on merged-/usr
 * systems, `/lib -> usr/lib`), and the real file or folder is bound read-only.
 */
const viewOf = (targets: ReadonlyArray<string>): Array<string> => {
  const links = new Map<string, string>()
  const binds = new Set<string>()
  const reach = (target: string, depth: number): void => {
    if (depth > 16) return
    const parts = path
      .resolve(target)
      .split(path.sep)
      .filter((part) => part !== "")
    let current = ""
    for (const [i, part] of parts.entries()) {
      current = `${current}/${part}`
      let stat: ReturnType<typeof lstatSync>
      try {
        stat = lstatSync(current)
      } catch {
        return
      }
      if (stat.isSymbolicLink()) {
        const link = readlinkSync(current)
        links.set(current, link)
        const rest = parts.slice(i + 1).join("/")
        reach(path.resolve(path.dirname(current), link, rest), depth + 1)
        return
      }
    }
    binds.add(current === "" ? "/" : current)
  }
  for (const target of targets) if (existsSync(target)) reach(target, 0)
  // The top-level library links of merged-/usr systems (`/lib -> usr/lib`):
  // the dynamic loader's own path and the libraries' paths go through them.
  for (const top of ["/lib", "/lib64", "/lib32", "/libx32"]) {
    try {
      if (lstatSync(top).isSymbolicLink()) links.set(top, readlinkSync(top))
    } catch {}
  }
  // Shorter paths first, so that a folder bound inside another stays visible.
  const sorted = [...binds].sort((a, b) => a.length - b.length || a.localeCompare(b))
  return [
    ...sorted.flatMap((bind) => ["--ro-bind", bind, bind]),
    ...[...links].flatMap(([at, link]) => (binds.has(at) ? [] : ["--symlink", link, at]))
  ]
}

const bwrapArgs = (bwrap: string, spec: WrapSpec): Array<string> => [
  bwrap,
  "--unshare-all",
  "--die-with-parent",
  "--new-session",
  "--cap-drop",
  "ALL",
  "--hostname",
  "sandbox",
  // The private mounts first: a readable path under /tmp is then bound on top.
  "--proc",
  "/proc",
  "--dev",
  "/dev",
  "--tmpfs",
  "/tmp",
  ...viewOf([spec.command, ...libraryPaths(spec.command), ...spec.readable]),
  // The view's own root (where bwrap made the mount points) read-only too.
  "--remount-ro",
  "/",
  "--chdir",
  spec.cwd,
  "--",
  spec.command,
  ...spec.args
]

/** Host folders an `unshare` wall covers with an empty tmpfs (where they hold nothing the interpreter reads). */
const HIDDEN = ["/tmp", "/var/tmp", "/run", "/dev/shm", "/home", "/root", "/mnt", "/media", "/srv"]

/**
 * The shell step inside `unshare --mount`: an empty tmpfs over each folder
 * given (Unix sockets and users' files live there), the namespace's own
 * `/proc`, then the interpreter. Any failure ends it (the probe then tries
 * the next wall).
 */
const UNSHARE_SCRIPT =
  'set -e; n=$1; shift; while [ "$n" -gt 0 ]; do mount -t tmpfs -o mode=0755,size=1m rlm-hidden "$1"; shift; n=$((n - 1)); done; mount -t proc proc /proc; exec "$@"'

const hiddenFor = (spec: WrapSpec): Array<string> => {
  const needed = [spec.command, spec.cwd, ...spec.readable].map((p) => path.resolve(p))
  const inside = (dir: string, p: string) => p === dir || p.startsWith(`${dir}/`)
  return HIDDEN.filter((dir) => {
    try {
      if (!lstatSync(dir).isDirectory()) return false
    } catch {
      return false
    }
    const real = realpathSync(dir)
    return !needed.some((p) => inside(dir, p) || inside(real, p) || inside(p, dir))
  })
}

/** The `unshare` wall, as root or through a user namespace, with or without its own mounts. */
const unshareArgs = (unshare: string, asRoot: boolean, mounts: boolean, sh: string | undefined, spec: WrapSpec) => {
  const hidden = mounts ? hiddenFor(spec) : []
  return [
    unshare,
    ...(asRoot ? [] : ["--user", "--map-root-user"]),
    ...(mounts ? ["--mount", "--propagation", "private"] : []),
    "--net",
    "--pid",
    "--ipc",
    "--uts",
    "--kill-child=SIGKILL",
    "--",
    ...(mounts && sh !== undefined ? [sh, "-c", UNSHARE_SCRIPT, "sh", String(hidden.length), ...hidden] : []),
    spec.command,
    ...spec.args
  ]
}

interface Tools {
  readonly bwrap: string | undefined
  readonly unshare: string | undefined
  readonly setpriv: string | undefined
  readonly prlimit: string | undefined
  readonly sh?: string | undefined
}

const findTools = (): Tools => ({
  bwrap: which("bwrap"),
  unshare: which("unshare"),
  setpriv: which("setpriv"),
  prlimit: which("prlimit"),
  sh: which("sh")
})

const withPrefixes = (tools: Tools, spec: WrapSpec, inner: Array<string>, pdeathsig: boolean) => {
  const prefix: Array<string> = []
  if (tools.prlimit !== undefined && spec.memoryBytes !== undefined && spec.memoryBytes > 0) {
    const bytes = Math.floor(spec.memoryBytes)
    prefix.push(tools.prlimit, `--data=${bytes}:${bytes}`, "--")
  }
  if (pdeathsig && tools.setpriv !== undefined)
    prefix.push(tools.setpriv, "--pdeathsig", "KILL", "--no-new-privs", "--")
  const all = [...prefix, ...inner]
  return { command: all[0] as string, args: all.slice(1) }
}

/** @internal */
export const makeWall = (
  tool: WallTool,
  tools: Tools,
  unshare: { readonly asRoot: boolean; readonly mounts: boolean } = { asRoot: true, mounts: true }
): Wall => ({
  isolation: tool === "none" ? "process" : "namespace",
  tool,
  wrap: (spec) => {
    switch (tool) {
      case "bwrap":
        // bwrap itself dies with its parent (--die-with-parent); no setpriv.
        return withPrefixes(tools, spec, bwrapArgs(tools.bwrap as string, spec), false)
      case "unshare":
        return withPrefixes(
          tools,
          spec,
          unshareArgs(
            tools.unshare as string,
            unshare.asRoot,
            unshare.mounts && tools.sh !== undefined,
            tools.sh,
            spec
          ),
          true
        )
      case "none":
        return withPrefixes(tools, spec, [spec.command, ...spec.args], true)
    }
  }
})

/**
 * The probe: Node started through the wall must run, and see no network
 * interface but its own loopback.
 */
const PROBE =
  'const n=Object.keys(require("os").networkInterfaces()).filter(k=>k!=="lo");process.stdout.write(n.length===0?"walled":"net:"+n.join(","))'

const probe = (wall: Wall): boolean => {
  const node = process.execPath
  const { args, command } = wall.wrap({
    command: node,
    args: ["-e", PROBE],
    readable: [],
    cwd: "/"
  })
  try {
    const result = spawnSync(command, args, {
      env: {},
      cwd: "/",
      timeout: 15_000,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"]
    })
    return result.status === 0 && result.stdout === "walled"
  } catch {
    return false
  }
}

/** @internal */
export interface Probed {
  readonly namespace: Wall | undefined
  readonly process: Wall
  /** Why no OS wall is available, when none is. */
  readonly missing: string | undefined
}

/**
 * Find the strongest wall this machine gives, in the order given (once per
 * host process for the default order; see {@link probeWalls}).
 *
 * @internal
 */
export const probeWallsWith = (order: ReadonlyArray<"bwrap" | "unshare">, tools: Tools = findTools()): Probed => {
  const processWall = makeWall("none", tools)
  if (process.platform !== "linux") {
    return {
      namespace: undefined,
      process: processWall,
      missing: `the OS wall needs Linux (this is ${process.platform})`
    }
  }
  const tried: Array<string> = []
  for (const tool of order) {
    if (tool === "bwrap") {
      if (tools.bwrap === undefined) {
        tried.push("bwrap is not installed")
        continue
      }
      const wall = makeWall("bwrap", tools)
      if (probe(wall)) return { namespace: wall, process: processWall, missing: undefined }
      tried.push(`bwrap (${tools.bwrap}) could not start Node in a network namespace`)
    } else {
      if (tools.unshare === undefined) {
        tried.push("unshare is not installed")
        continue
      }
      // Best first: with its own mounts (host sockets and home folders hidden), as root or in a user namespace.
      const variants = [
        { asRoot: true, mounts: true },
        { asRoot: false, mounts: true },
        { asRoot: true, mounts: false },
        { asRoot: false, mounts: false }
      ]
      for (const variant of variants) {
        const wall = makeWall("unshare", tools, variant)
        if (probe(wall)) return { namespace: wall, process: processWall, missing: undefined }
      }
      tried.push(`unshare (${tools.unshare}) could not start Node in new namespaces`)
    }
  }
  return { namespace: undefined, process: processWall, missing: tried.join("; ") }
}

let probed: Probed | undefined

/**
 * The machine's walls, probed once per host process (about 50-100 ms).
 *
 * @internal
 */
export const probeWalls = (): Probed => {
  if (probed === undefined) probed = probeWallsWith(["bwrap", "unshare"])
  return probed
}

/**
 * The wall for a sandbox asking for `mode`.
 *
 * @internal
 */
export const resolveWall = (mode: IsolationMode): Effect.Effect<Wall, SandboxError> =>
  Effect.suspend(() => {
    if (mode === "process") return Effect.succeed(probed?.process ?? makeWall("none", findTools()))
    const walls = probeWalls()
    if (walls.namespace !== undefined) return Effect.succeed(walls.namespace)
    if (mode === "auto") return Effect.succeed(walls.process)
    return Effect.fail(
      new SandboxError({
        reason: "StartFailed",
        message: `isolation "require-namespace": this machine gives no OS wall (${walls.missing}). Install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap), or allow the "process" wall.`
      })
    )
  })

/**
 * Peak resident set size (`VmHWM`) in MB of the process tree under `pid`,
 * the largest of its members (the spawned process may be a wall's launcher;
 * the interpreter is then one of its descendants).
 *
 * @internal
 */
export const treePeakRssMb = (pid: number): number | undefined => {
  let best: number | undefined
  const visit = (at: number, depth: number) => {
    if (depth > 6) return
    try {
      const status = readFileSync(`/proc/${at}/status`, "utf8")
      const match = /VmHWM:\s+(\d+)/.exec(status)
      if (match?.[1] !== undefined) best = Math.max(best ?? 0, Number(match[1]) / 1024)
    } catch {
      return
    }
    for (const child of childPids(at)) visit(child, depth + 1)
  }
  visit(pid, 0)
  return best
}

/**
 * The pids of the process tree under `pid` (itself included), where `/proc`
 * tells.
 *
 * @internal
 */
export const treePids = (pid: number): ReadonlyArray<number> => {
  const out: Array<number> = []
  const visit = (at: number, depth: number) => {
    if (depth > 6 || !existsSync(`/proc/${at}`)) return
    out.push(at)
    for (const child of childPids(at)) visit(child, depth + 1)
  }
  visit(pid, 0)
  return out
}

const childPids = (pid: number): ReadonlyArray<number> => {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((task) => {
      try {
        return readFileSync(`/proc/${pid}/task/${task}/children`, "utf8")
          .trim()
          .split(/\s+/)
          .filter((s) => s !== "")
          .map(Number)
      } catch {
        return []
      }
    })
  } catch {
    return []
  }
}

/**
 * SIGKILL a spawned interpreter and every process under it at once (under an
 * OS wall the spawned process is the wall's launcher: killing only it would
 * leave the interpreter to die a moment later, through the parent-death
 * signal). Returns the pids killed below the spawned one. Never throws.
 *
 * @internal
 */
export const killTree = (child: {
  readonly pid?: number | undefined
  readonly kill: (signal: NodeJS.Signals) => boolean
}): ReadonlyArray<number> => {
  const below = child.pid === undefined ? [] : treePids(child.pid).slice(1)
  try {
    child.kill("SIGKILL")
  } catch {}
  for (const pid of below) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {}
  }
  return below
}

/** Whether `pid` still runs: it exists and is not a zombie. */
const running = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    return !stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")
  } catch {
    return false
  }
}

/**
 * Wait until none of `pids` runs any more (gone, or a zombie its own parent
 * reaps), checking every 5 ms, for at most `timeoutMs`.
 *
 * @internal
 */
export const awaitStopped = (pids: ReadonlyArray<number>, timeoutMs: number): Effect.Effect<void> =>
  // Real timers, not Effect's Clock: a scope closing under a TestClock must not hang here.
  Effect.async<void>((resume) => {
    const until = Date.now() + timeoutMs
    let timer: ReturnType<typeof setTimeout> | undefined
    const check = () => {
      if (!pids.some(running) || Date.now() > until) resume(Effect.void)
      else timer = setTimeout(check, 5)
    }
    check()
    return Effect.sync(() => {
      if (timer !== undefined) clearTimeout(timer)
    })
  })

/**
 * The end of a spawned interpreter: `kill` (SIGKILL of its tree), then wait
 * until the spawned process has exited (`exited`, `onExit` registering a
 * waiter and returning its removal), for at most `waitMs`, and until nothing
 * under it (`below`, read once the kill is done) runs any more.
 *
 * @internal
 */
export const terminateSpawned = (options: {
  readonly kill: () => void
  readonly exited: () => boolean
  readonly onExit: (waiter: () => void) => () => void
  readonly below: ReadonlyArray<number>
  readonly waitMs: number
}): Effect.Effect<void> =>
  Effect.suspend(() => {
    options.kill()
    const exit = options.exited()
      ? Effect.void
      : Effect.async<void>((resume) => {
          if (options.exited()) return resume(Effect.void)
          const remove = options.onExit(() => resume(Effect.void))
          return Effect.sync(remove)
        }).pipe(Effect.timeout(options.waitMs), Effect.ignore)
    // And what ran under the spawned process (the interpreter, under an OS wall's launcher).
    return Effect.zipRight(
      exit,
      Effect.suspend(() => awaitStopped(options.below, options.waitMs))
    )
  })
