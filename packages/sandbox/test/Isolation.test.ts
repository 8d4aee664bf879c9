/**
 * The OS wall (src/internal/isolation.ts), attacked from inside: a Node
 * program that stands for model code that escaped every in-interpreter wall
 * runs through the wall and tries to reach the host. The tests that need an OS
 * wall skip, with the reason printed, on a machine that gives none; CI
 * installs bubblewrap, so they run there.
 */
import { spawn, spawnSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { makeWall, probeWalls, probeWallsWith, resolveWall, treePids, type Wall } from "../src/internal/isolation.js"
import * as JavascriptSandbox from "../src/JavascriptSandbox.js"
import * as PythonSandbox from "../src/PythonSandbox.js"
import * as Sandbox from "../src/Sandbox.js"
import { processExists, recordingHost } from "./pythonTestkit.js"

const walls = probeWalls()
const noWall = walls.namespace === undefined ? `no OS wall on this machine (${walls.missing})` : undefined
if (noWall !== undefined) console.log(`Isolation.test.ts: tests of the OS wall skipped: ${noWall}`)
const bwrapWall = walls.namespace?.tool === "bwrap" ? walls.namespace : undefined
const unshareWall = probeWallsWith(["unshare"]).namespace

const fixture = path.join(import.meta.dirname, "fixtures", "escapedGuest.mjs")

/** Listeners on the host that must never see a connection. */
const listeners = () =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const dir = mkdtempSync(path.join(os.tmpdir(), "rlm-wall-"))
      const seen: Array<string> = []
      const record = (name: string) => (socket: net.Socket) => {
        seen.push(name)
        socket.destroy()
      }
      const tcp = net.createServer(record("tcp"))
      const unix = net.createServer(record("unix"))
      const abstract = net.createServer(record("abstract"))
      const abstractName = `rlm-wall-${process.pid}-${Date.now()}`
      const unixPath = path.join(dir, "host.sock")
      const listen = (server: net.Server, options: net.ListenOptions) =>
        new Promise<void>((resolve, reject) => {
          server.once("error", reject)
          server.listen(options, () => resolve())
        })
      await listen(tcp, { host: "127.0.0.1", port: 0 })
      await listen(unix, { path: unixPath })
      await listen(abstract, { path: `\0${abstractName}` })
      const secretFile = path.join(dir, "secret.txt")
      writeFileSync(secretFile, "SECRET")
      const tcpPort = (tcp.address() as net.AddressInfo).port
      return { dir, seen, servers: [tcp, unix, abstract], tcpPort, unixPath, abstractName, secretFile }
    }),
    (l) =>
      Effect.promise(async () => {
        await Promise.all(l.servers.map((s) => new Promise((resolve) => s.close(resolve))))
        rmSync(l.dir, { recursive: true, force: true })
      })
  )

/** Run the escaped guest through `wall`; its JSON report. */
const runEscaped = (wall: Wall, target: Record<string, unknown>, nodeFlags: ReadonlyArray<string> = []) =>
  Effect.promise(
    () =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const wrapped = wall.wrap({
          command: process.execPath,
          args: [...nodeFlags, fixture, JSON.stringify(target)],
          readable: [fixture],
          cwd: "/"
        })
        const child = spawn(wrapped.command, wrapped.args, { env: {}, cwd: "/", stdio: ["ignore", "pipe", "pipe"] })
        let out = ""
        let err = ""
        child.stdout.on("data", (c: Buffer) => {
          out += c.toString("utf8")
        })
        child.stderr.on("data", (c: Buffer) => {
          err += c.toString("utf8")
        })
        child.on("close", (code) => {
          try {
            resolve(JSON.parse(out))
          } catch {
            reject(new Error(`the escaped guest exited ${code}: ${err}`))
          }
        })
      })
  )

describe("the OS wall", () => {
  it.effect("the probe finds the strongest wall; 'process' is always there", () =>
    Effect.gen(function* () {
      const processWall = yield* resolveWall("process")
      assert.strictEqual(processWall.isolation, "process")
      assert.strictEqual(processWall.tool, "none")
      const auto = yield* resolveWall("auto")
      assert.strictEqual(auto.isolation, walls.namespace === undefined ? "process" : "namespace")
      if (walls.namespace !== undefined && spawnSync("bwrap", ["--version"]).status === 0) {
        assert.strictEqual(auto.tool, "bwrap", "bwrap is installed and works here: it is preferred")
      }
    })
  )

  it.effect("with no tool at all, 'require-namespace' refuses to start and says how to get the wall", () =>
    Effect.sync(() => {
      const none = probeWallsWith(["bwrap", "unshare"], {
        bwrap: undefined,
        unshare: undefined,
        setpriv: undefined,
        prlimit: undefined
      })
      assert.isUndefined(none.namespace)
      assert.strictEqual(none.missing, "bwrap is not installed; unshare is not installed")
      // A tool that is there but cannot make namespaces (here: `false`) is not taken for a wall.
      const broken = probeWallsWith(["bwrap", "unshare"], {
        bwrap: "/bin/false",
        unshare: "/bin/false",
        setpriv: undefined,
        prlimit: undefined
      })
      assert.isUndefined(broken.namespace)
      assert.match(broken.missing ?? "", /bwrap \(\/bin\/false\) could not start Node in a network namespace/)
    })
  )

  it.effect.skipIf(noWall !== undefined)(
    "PythonSandbox and JavascriptSandbox say which wall they got; 'process' is honoured",
    () =>
      Effect.gen(function* () {
        const python = yield* PythonSandbox.make({ isolation: "require-namespace" })
        assert.strictEqual(python.isolation, "namespace")
        assert.strictEqual((yield* PythonSandbox.make()).isolation, "namespace")
        assert.strictEqual((yield* PythonSandbox.make({ isolation: "process" })).isolation, "process")
        const js = yield* JavascriptSandbox.make({ isolation: "require-namespace" })
        assert.strictEqual(js.isolation, "namespace")
        assert.strictEqual((yield* JavascriptSandbox.make({ isolation: "process" })).isolation, "process")
      })
  )

  for (const [name, wall] of [
    ["bubblewrap", bwrapWall],
    ["unshare", unshareWall]
  ] as const) {
    it.live.skipIf(wall === undefined)(
      `${name}: an escaped guest reaches no network, no host socket and no host process`,
      () =>
        Effect.gen(function* () {
          const l = yield* listeners()
          const report = yield* runEscaped(wall as Wall, {
            tcpPort: l.tcpPort,
            unixPath: l.unixPath,
            abstractName: l.abstractName,
            hostPid: process.pid,
            secretFile: l.secretFile
          })
          // bubblewrap brings the namespace's own loopback up (refused: nothing listens there); unshare leaves it down.
          assert.strictEqual(
            report.tcpLoopback,
            name === "bubblewrap" ? "ECONNREFUSED" : "ENETUNREACH",
            "the host's loopback is not the guest's"
          )
          assert.oneOf(report.tcpLoopback6, ["ECONNREFUSED", "EADDRNOTAVAIL", "ENETUNREACH"])
          assert.strictEqual(report.tcpOutside, "ENETUNREACH")
          assert.strictEqual(report.tcpPublic, "ENETUNREACH")
          assert.strictEqual(report.udp, "ENETUNREACH")
          assert.oneOf(report.unixAbstract, ["ECONNREFUSED"], "abstract sockets belong to the network namespace")
          // (os.networkInterfaces() lists interfaces with an address: unshare's loopback is down.)
          assert.deepStrictEqual(report.interfaces, name === "bubblewrap" ? ["lo"] : [])
          assert.strictEqual(report.signalHost, "ESRCH", "the host's pid does not exist in the guest's PID namespace")
          if (name === "bubblewrap") {
            // Only Node, its libraries and the guest's own file are in the view.
            assert.strictEqual(report.unixPath, "ENOENT")
            assert.strictEqual(report.secretFile, "ENOENT")
            assert.strictEqual(report.passwd, "ENOENT")
            assert.strictEqual(report.ppid, 1)
          }
          // unshare with its own mounts covers /tmp, /run, /home, /root... with
          // empty tmpfs; without them (no `sh` or mounts refused), a Unix socket
          // at a host path stays reachable (not promised there).
          // (unshare leaves a folder unhidden when the interpreter reads something in
          // it: the host's /tmp stays when this checkout, and so the fixture, is there.)
          const ownMounts =
            name === "bubblewrap" ||
            ((wall as Wall).wrap({ command: "node", args: [], readable: [], cwd: "/" }).args.includes("--mount") &&
              !fixture.startsWith(`${path.dirname(l.dir)}${path.sep}`))
          if (ownMounts) {
            assert.strictEqual(report.unixPath, "ENOENT")
            assert.strictEqual(report.secretFile, "ENOENT")
          }
          yield* Effect.sleep("200 millis")
          assert.deepStrictEqual(l.seen, ownMounts ? [] : ["unix"], "what the host's listeners saw")
        }).pipe(Effect.scoped),
      30_000
    )
  }

  it.live.skipIf(bwrapWall === undefined)(
    "bubblewrap: the view holds nothing of /home, /root, the project or the host's /tmp",
    () =>
      Effect.sync(() => {
        const script = [
          "const fs = require('fs')",
          "const tryList = (p) => { try { return fs.readdirSync(p) } catch (e) { return e.code } }",
          "process.stdout.write(JSON.stringify({ root: tryList('/').sort(), home: tryList('/home'), rootHome: tryList('/root'),",
          `  project: tryList(${JSON.stringify(path.resolve(import.meta.dirname, "../../.."))}), tmp: tryList('/tmp'),`,
          "  etc: tryList('/etc'), write: (() => { try { fs.writeFileSync('/usr/x', 'x'); return 'wrote' } catch (e) { return e.code } })() }))"
        ].join("\n")
        const wrapped = (bwrapWall as Wall).wrap({
          command: process.execPath,
          args: ["-e", script],
          readable: [],
          cwd: "/"
        })
        const result = spawnSync(wrapped.command, wrapped.args, { env: {}, encoding: "utf8" })
        assert.strictEqual(result.status, 0, result.stderr)
        const view = JSON.parse(result.stdout)
        assert.strictEqual(view.home, "ENOENT")
        assert.strictEqual(view.rootHome, "ENOENT")
        assert.strictEqual(view.project, "ENOENT")
        assert.deepStrictEqual(view.tmp, [], "a private, empty /tmp")
        assert.deepStrictEqual(view.etc, ["ld.so.cache"])
        assert.oneOf(view.write, ["EROFS", "EACCES", "EPERM", "ENOENT"])
        for (const entry of view.root)
          assert.include(["dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "tmp", "usr"], entry)
      })
  )

  it.live.skipIf(noWall !== undefined)(
    "the interpreter process runs inside the wall, with its writable memory capped",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* PythonSandbox.make({ memoryMb: 512, heapMb: 256 })
        const repl = yield* sandbox.open({ context: { text: "x" }, host: recordingHost().host })
        const result = yield* repl.exec(
          "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9))\nexcept Exception as e:\n    print(type(e).__name__)"
        )
        assert.isUndefined(result.error)
        assert.isAbove(result.stdout.length, 0)
        // The interpreter is a descendant of the spawned process; its RLIMIT_DATA is set.
        const pids = sandboxTree()
        assert.isAbove(pids.length, 1, "a launcher and the interpreter")
        const interpreter = pids.find((pid) =>
          readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith(process.execPath)
        )
        assert.isDefined(interpreter)
        const limits = readFileSync(`/proc/${interpreter}/limits`, "utf8")
        const data = /Max data size\s+(\d+)\s+(\d+)\s+bytes/.exec(limits)
        assert.isNotNull(data, limits)
        assert.strictEqual(Number(data?.[1]), (512 + 256 + 768) * 1024 * 1024)
        const netns = (pid: number | string) => readlinkOrUndefined(`/proc/${pid}/ns/net`)
        assert.notStrictEqual(netns(interpreter as number), netns("self"), "its own network namespace")
      }).pipe(Effect.scoped),
    60_000
  )

  it.live.skipIf(noWall !== undefined)(
    "an interpreter running C code that never polls dies within 1 s of its host's SIGKILL",
    () =>
      Effect.gen(function* () {
        const script = path.join(import.meta.dirname, "fixtures", "hostThatDies.ts")
        const root = path.resolve(import.meta.dirname, "../../..")
        const host = spawn(process.execPath, ["--import", "tsx", script, "nopoll"], {
          cwd: root,
          stdio: ["ignore", "pipe", "inherit"]
        })
        const pids = yield* Effect.async<ReadonlyArray<number>>((resume) => {
          let out = ""
          host.stdout?.on("data", (chunk: Buffer) => {
            out += chunk.toString("utf8")
            const match = /^TREE ([\d ]+)$/m.exec(out)
            if (match?.[1] !== undefined) resume(Effect.succeed(match[1].split(" ").map(Number)))
          })
        })
        assert.isAbove(pids.length, 1)
        yield* Effect.sleep("700 millis")
        for (const pid of pids) assert.isTrue(processExists(pid), `${pid} runs the block`)
        const killedAt = Date.now()
        host.kill("SIGKILL")
        // Running: the process exists and is not a zombie (a dead launcher
        // waits to be reaped by whoever inherits it, which is not ours to hurry).
        const running = (pid: number) => processExists(pid) && !isZombie(pid)
        const interpreter = pids[pids.length - 1] as number
        while (pids.some(running) && Date.now() - killedAt < 5_000) {
          yield* Effect.sleep("10 millis")
        }
        const took = Date.now() - killedAt
        assert.deepStrictEqual(pids.filter(running), [], "no process of the interpreter runs after its host died")
        assert.isBelow(took, 1_000, `stopped ${took} ms after the host`)
        // Reaping is up to whoever inherits the dead (this machine's PID 1 under unshare; seen taking 1-2 s).
        while (processExists(interpreter) && Date.now() - killedAt < 15_000) yield* Effect.sleep("50 millis")
        assert.isFalse(processExists(interpreter), "the interpreter itself is gone, reaped")
      }),
    60_000
  )

  it.effect("with 'process' the interpreter still dies with its host through setpriv, where present", () =>
    Effect.sync(() => {
      const wall = makeWall("none", {
        bwrap: undefined,
        unshare: undefined,
        setpriv: "/usr/bin/setpriv",
        prlimit: undefined
      })
      const wrapped = wall.wrap({ command: "/usr/bin/node", args: ["x.mjs"], readable: [], cwd: "/" })
      assert.strictEqual(wrapped.command, "/usr/bin/setpriv")
      assert.deepStrictEqual(wrapped.args, ["--pdeathsig", "KILL", "--no-new-privs", "--", "/usr/bin/node", "x.mjs"])
    })
  )

  it.effect("require-namespace as a layer option fails with StartFailed where there is no wall, else starts", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(PythonSandbox.make({ isolation: "require-namespace" }))
      if (noWall === undefined) {
        assert.isTrue(Exit.isSuccess(exit))
      } else {
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? exit.cause : undefined
        assert.match(String(error), /require-namespace[\s\S]*apt-get install bubblewrap/)
      }
      assert.isTrue(Sandbox.Isolation.literals.includes("namespace"))
    })
  )
})

const isZombie = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")
  } catch {
    return false
  }
}

const readlinkOrUndefined = (file: string) => {
  try {
    return readlinkSync(file)
  } catch {
    return undefined
  }
}

/** The processes of this test process's sandboxes: each launcher and its descendants. */
const sandboxTree = (): ReadonlyArray<number> => {
  const out: Array<number> = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
      if (ppid !== process.pid) continue
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes("python-child.mjs"))
        out.push(...treePids(Number(entry)))
    } catch {}
  }
  return out
}

describe("the OS wall's memory cap", () => {
  const attempts = {
    buffers:
      "const a = []; for (let i = 0; i < 16; i++) { a.push(new ArrayBuffer(64 * 1024 * 1024)); new Uint8Array(a[i]).fill(1) }",
    wasm: "const m = new WebAssembly.Memory({ initial: 256, maximum: 32768 }); for (let i = 0; i < 16; i++) { m.grow(1024); new Uint8Array(m.buffer).fill(1) }"
  }
  for (const [name, code] of Object.entries(attempts)) {
    it.live.skipIf(process.platform !== "linux")(
      `an escaped guest cannot take 1 GiB past a 512 MiB cap (${name}): it fails, or its own process dies`,
      () =>
        Effect.sync(() => {
          const wall = probeWalls().namespace ?? probeWalls().process
          const script = `try { ${code}; process.stdout.write("allocated") } catch (e) { process.stdout.write("refused: " + e.message) }`
          const wrapped = wall.wrap({
            command: process.execPath,
            args: ["-e", script],
            readable: [],
            cwd: "/",
            memoryBytes: 512 * 1024 * 1024
          })
          const result = spawnSync(wrapped.command, wrapped.args, { env: {}, encoding: "utf8" })
          if (result.status === 0) {
            assert.match(
              result.stdout,
              /^refused: (Array buffer allocation failed|WebAssembly\.Memory\.grow\(\): Unable to grow instance memory)/
            )
          } else {
            // V8 itself could not allocate any more: the guest's own process aborted.
            assert.notInclude(result.stdout, "allocated")
            assert.match(result.stderr, /OOM|out of memory|allocation failed/i)
          }
        })
    )
  }
})
