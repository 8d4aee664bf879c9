// The sandbox child process (plain JavaScript, not compiled by tsc): runs
// Pyodide on its main thread. Started by the host
// (src/internal/pythonProcess.ts) as
//   node --disallow-code-generation-from-strings --experimental-permission
//        --allow-fs-read=<pyodide dir>/* --allow-fs-read=<runtime dir>/* --allow-worker
//        python-child.mjs <json config>
// with an empty environment and these descriptors:
//   0  host -> child  raw bytes: the context (and the snapshot, without a disk cache)
//   1  child -> host  the snapshot image, in snapshot mode only
//   3  IPC, JSON      host -> child: exec, context, getVar, listVars
//                     child -> host: ready, result, snapshot
//   4  host -> child  JSON lines read by the I/O thread (python-io.mjs): reply, interrupt
//   5  child -> host  JSON lines written synchronously here: call, crashed
// While a block runs, this thread is busy: a host call writes its request on
// fd 5 and blocks on Atomics.wait until the I/O thread has posted the reply
// and woken it; an interrupt from the host is written by the I/O thread into
// Pyodide's interrupt buffer. Python reaches nothing of this realm except the
// one bridge function `call` handed to the REPL module; the realm is stripped
// of network, module loading and process access once Pyodide has loaded, in
// case Python ever finds a way into JavaScript.
import { isAscii } from "node:buffer"
import { closeSync, openSync, readFileSync, readSync, writeSync } from "node:fs"
import { pathToFileURL } from "node:url"
import { MessageChannel, receiveMessageOnPort, Worker } from "node:worker_threads"
import { dirtyOutsideRuns, encode, readHead, restoreInto, scanImage, withRestoreHook } from "./snapshot-image.mjs"

const config = JSON.parse(process.argv[2] ?? "{}")
const { pyodideDir, memoryMb } = config
const mode = config.mode === "snapshot" ? "snapshot" : "repl"
const snapshotBytes = Number.isSafeInteger(config.snapshotBytes) && config.snapshotBytes > 0 ? config.snapshotBytes : 0
const snapshotFile = typeof config.snapshotFile === "string" ? config.snapshotFile : undefined

// --- Fail closed unless Node's permission model is active in THIS thread, with
// no child processes, no writes and no native addons.
const permission = process.permission
if (
  permission === undefined ||
  permission.has("child") ||
  permission.has("fs.write") ||
  permission.has("fs.read", "/etc/passwd")
) {
  throw new Error("the sandbox process is not running under Node's permission model; refusing to start")
}

// ctrl[0]: 0 = waiting for a reply, 1 = reply posted; ctrl[1]: for short
// sleeps; ctrl[2]: the id of the request running Python (interrupts for
// others are ignored); ctrl[3]: 1 once the I/O thread is listening; ctrl[4]:
// the lock under which ctrl[2] and the interrupt buffer change together.
const ctrl = new Int32Array(new SharedArrayBuffer(20))
/** Bytes of stdin read so far for the current context request (readInto). */
let contextRead = 0
// Pyodide's interrupt buffer: 2 = SIGINT
const intr = new Uint8Array(new SharedArrayBuffer(1))

// The host went away: never outlive it.
process.on("disconnect", () => process.exit(0))
// ...including when it went away before this listener existed ("disconnect"
// is emitted once; a host dying right after the spawn would otherwise leave
// this process running forever).
if (!process.connected) process.exit(0)

// Requests may arrive before the interpreter is ready (the host sends the
// context right after the spawn): they wait here, in order.
let onRequest
const early = []
process.on("message", (message) => {
  if (message === null || typeof message !== "object") return
  if (onRequest === undefined) early.push(message)
  else onRequest(message)
})

const send = (message) => {
  if (process.connected) process.send(message)
}

/** One JSON line on fd 5, written before this returns (the thread may block or exit next). */
const writeLine = (message) => {
  const bytes = Buffer.from(`${JSON.stringify(message)}\n`, "utf8")
  let offset = 0
  while (offset < bytes.length) {
    try {
      offset += writeSync(5, bytes, offset)
    } catch (error) {
      if (error?.code !== "EAGAIN") throw error
      Atomics.wait(ctrl, 1, 0, 1)
    }
  }
}

// The I/O thread, started first so that it boots while Pyodide loads. It
// needs no permission beyond this process's own descriptors.
const { port1: replies, port2: ioPort } = new MessageChannel()
if (mode === "repl") {
  const io = new Worker(new URL("./python-io.mjs", import.meta.url), {
    env: {},
    argv: [],
    // NOTE: no `execArgv` here. On Node 20 a Worker given its own execArgv runs
    // WITHOUT the permission model (child_process then works from the worker).
    workerData: { ctrl, intr, port: ioPort },
    transferList: [ioPort],
    // Room for a large reply in transit (it is held about three times while it is parsed and posted).
    resourceLimits: { maxOldGenerationSizeMb: 256 },
    stdout: true,
    stderr: true
  })
  io.stdout.resume()
  io.stderr.resume()
  io.on("error", (error) => crash(`the sandbox I/O thread failed: ${error?.message ?? error}`))
  io.on("exit", (code) => crash(`the sandbox I/O thread exited with code ${code}`))
  io.unref()
}

/**
 * Mark request `id` as the one running Python (0: none), with a clear
 * interrupt buffer; under the lock the I/O thread takes to deliver an interrupt.
 */
function running(id) {
  while (Atomics.compareExchange(ctrl, 4, 0, 1) !== 0) {}
  Atomics.store(ctrl, 2, Number.isSafeInteger(id) ? id : 0)
  intr[0] = 0
  Atomics.store(ctrl, 4, 0)
}

/**
 * Wait (once, normally not at all) until the I/O thread listens, so that a
 * block never runs without a way to reach it with a reply or an interrupt.
 */
function ioListening() {
  if (Atomics.load(ctrl, 3) === 1) return
  const deadline = Date.now() + 30_000
  while (Atomics.load(ctrl, 3) !== 1) {
    if (Date.now() > deadline) crash("the sandbox I/O thread did not start within 30 s")
    Atomics.wait(ctrl, 3, 0, 100)
  }
}

/** Report why this process is ending, then end it (a crash of the interpreter or its I/O). */
function crash(message) {
  try {
    writeLine({ t: "crashed", message: String(message).slice(0, 1000) })
  } catch {}
  process.exit(70)
}

// --- Memory cap: V8's heap limits do not cover the WebAssembly heap. --------
const capBytes = Math.max(64, memoryMb ?? 2048) * 1024 * 1024
const grow = WebAssembly.Memory.prototype.grow
Object.defineProperty(WebAssembly.Memory.prototype, "grow", {
  value: function (delta) {
    if (this.buffer.byteLength + delta * 65536 > capBytes) {
      throw new RangeError(`sandbox memory limit of ${memoryMb} MB reached`)
    }
    return grow.call(this, delta)
  },
  writable: false,
  configurable: false
})

// --- Node's permission model denies process.binding; Pyodide only needs the
// constants while loading.
const constants = {
  fs: (await import("node:fs")).constants,
  os: (await import("node:os")).constants
}
process.binding = (name) => {
  if (name === "constants") return constants
  throw new Error("process.binding is not available in the sandbox")
}

const repl_source = readFileSync(new URL("./python_repl.py", import.meta.url), "utf8")
const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href)

const discard = () => {}
// The same options for building the snapshot, restoring it and a plain load:
// a snapshot is a memory image of exactly this configuration.
const loadOptions = () => ({
  indexURL: `${pyodideDir}/`,
  env: { HOME: "/home/pyodide" },
  jsglobals: Object.create(null),
  stdin: () => null,
  stdout: discard,
  stderr: discard,
  checkAPIVersion: true
})

// The REPL module (python_repl.py), built in pure Python and parked in
// sys.modules until the setup below takes it (and hands it the bridge). In the
// snapshot it is built once, before the image is taken.
const buildRepl = (py) => {
  py.globals.set("_RLM_SOURCE", repl_source)
  py.runPython(`
import sys, types
_m = types.ModuleType("_rlm_repl")
_m.__file__ = "<sandbox>"
exec(compile(_RLM_SOURCE, "<sandbox>", "exec"), _m.__dict__)
sys.modules["_rlm_repl"] = _m
del _RLM_SOURCE, _m
`)
}

if (mode === "snapshot") {
  // Snapshot mode: a memory image of Pyodide right after loading and building
  // the REPL module, before the bridge, any context or any session code exist,
  // and before Python holds any JavaScript object. It is restored
  // once here, to learn which pages a fresh instance has written where the
  // image is zero (every restore clears them) and to check that it restores.
  // It is written to stdout and the process exits; it never runs model code.
  const fresh = await loadPyodide({ ...loadOptions(), _makeSnapshot: true })
  buildRepl(fresh)
  const scanned = scanImage(fresh.makeMemorySnapshot())
  const read = bufferReader(encode(scanned))
  const head = readHead(read)
  let zeros = []
  const trial = await withRestoreHook(
    head,
    (target) => {
      zeros = dirtyOutsideRuns(head.runs, target, head.imageLength)
      restoreInto({ ...head, zeros }, target, read)
    },
    () => loadPyodide({ ...loadOptions(), _loadSnapshot: head.full })
  )
  if (trial.runPython(`import sys\n6 * 7 if "_rlm_repl" in sys.modules else 0`) !== 42) {
    throw new Error("the snapshot does not restore")
  }
  const bytes = encode(scanned, zeros)
  // Announce the size over IPC, write the image to stdout, exit.
  send({ t: "snapshot", bytes: bytes.length })
  process.stdout.write(bytes, () => process.exit(0))
  await new Promise(() => {})
}

// A snapshot, if the host sent one: the path of the cached file, or its bytes
// first on stdin. Its image is read straight into the interpreter's memory
// (snapshot-image.mjs). If it does not restore, fall back to a plain load (the
// host then stops sending it).
let snapshotStatus = "none"
let py
if (typeof snapshotFile === "string" || snapshotBytes > 0) {
  let fd
  try {
    let read
    if (typeof snapshotFile === "string") {
      fd = openSync(snapshotFile, "r")
      read = fdReader(fd)
    } else {
      const bytes = new Uint8Array(snapshotBytes)
      readInto(bytes)
      read = bufferReader(bytes)
    }
    const head = readHead(read)
    py = await withRestoreHook(
      head,
      (target) => restoreInto(head, target, read),
      () => loadPyodide({ ...loadOptions(), _loadSnapshot: head.full })
    )
    snapshotStatus = "restored"
  } catch (error) {
    snapshotStatus = `failed: ${String(error?.message ?? error).slice(0, 300)}`
    py = undefined
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}
if (py === undefined) {
  py = await loadPyodide(loadOptions())
  buildRepl(py)
}

// --- No sockets: Emscripten's socket layer would speak WebSocket to the host.
const refuse = () => {
  throw new py._module.FS.ErrnoError(111 /* ECONNREFUSED */)
}
try {
  py._module.SOCKFS.websocket_sock_ops.createPeer = refuse
  py._module.SOCKFS.websocket_sock_ops.connect = refuse
  py._module.SOCKFS.websocket_sock_ops.listen = refuse
} catch {}

py.setInterruptBuffer(intr)

// --- The bridge: the only JavaScript function Python is given. It validates
// its arguments, writes the call, and blocks until the I/O thread has the reply.
const KINDS = new Set(["llm", "llm_batched", "rlm", "rlm_batched"])
const call = (kind, payload) => {
  if (typeof kind !== "string" || !KINDS.has(kind) || typeof payload !== "string") {
    return "0invalid host call"
  }
  Atomics.store(ctrl, 0, 0)
  writeLine({ t: "call", id: Atomics.load(ctrl, 2), kind, payload })
  Atomics.wait(ctrl, 0, 0)
  const reply = receiveMessageOnPort(replies)?.message
  if (reply === undefined) return "0no reply from host"
  return (reply.ok ? "1" : "0") + String(reply.value)
}

// Take the REPL module out of sys.modules (model code finds it only through
// its helpers' globals, as before) and hand it the bridge.
const setup = py.runPython(`import sys\nsys.modules.pop("_rlm_repl")`)
setup.install_bridge(call)
const execBlock = setup.exec_block
const loadContext = setup.load_context
const asciiSlot = setup.ascii_slot
const dropSlot = setup.drop_slot
const getVar = setup.get_var
const listVars = setup.list_vars

// Python must not reach the Pyodide API object (pyodide_js) or the JS globals.
try {
  py.unregisterJsModule("pyodide_js")
} catch {}
try {
  py.unregisterJsModule("js")
} catch {}
py.runPython(`
import sys
for _name in [n for n in sys.modules if n == "js" or n.startswith("js.") or n.startswith("pyodide_js")]:
    del sys.modules[_name]
import pyodide._package_loader
pyodide._package_loader.loadedPackages = None
del _name
`)
for (const name of ["mountNodeFS", "mountNativeFS", "loadPackage", "loadPackagesFromImports", "registerJsModule"]) {
  try {
    delete py[name]
  } catch {}
}

// --- Strip the realm: no network, no module loading, no process access.
for (const name of ["fetch", "WebSocket", "EventSource", "XMLHttpRequest", "Request", "Response", "Headers"]) {
  try {
    delete globalThis[name]
  } catch {}
}
const deny = () => {
  throw new Error("not available in the sandbox")
}
for (const name of ["getBuiltinModule", "dlopen", "_linkedBinding", "kill", "chdir", "setuid", "setgid"]) {
  try {
    if (name in process) process[name] = deny
  } catch {}
}
process.binding = deny

// --- Requests from the host. Anything other than a Python exception escaping
// the REPL (a fatal interpreter error: WebAssembly stack overflow, os._exit, a
// trap) leaves the interpreter in an unknown state: end the process, which the
// host reports as a crash and replaces.
const fatal = (error) => {
  if (error?.constructor?.name !== "PythonError" || error?.pyodide_fatal_error) {
    crash(`fatal interpreter error: ${String(error?.message ?? error).slice(0, 300)}`)
  }
}

const handleRequest = (message) => {
  switch (message.t) {
    case "exec": {
      running(message.id)
      // (An interrupt for this block that arrives meanwhile still counts.)
      ioListening()
      let out
      try {
        const json = execBlock(message.code, message.limit)
        if (typeof json !== "string") throw new Error("the interpreter returned no result")
        out = JSON.parse(json)
      } catch (error) {
        fatal(error)
        out = { stdout: "", stderr: "", stdoutTotal: 0, stderrTotal: 0, error: lastLine(error) }
      }
      running(0)
      send({ t: "result", id: message.id, ...out })
      return
    }
    case "context": {
      contextRead = 0
      try {
        const sizes = [message.textBytes, ...(Array.isArray(message.docBytes) ? message.docBytes : [])]
        const args = sizes.map(readSegment)
        const [text, ...docs] = args
        loadContext(text, Array.isArray(message.docBytes) ? docs : undefined)
        send({ t: "result", id: message.id, ok: true })
      } catch (error) {
        fatal(error)
        // (A Python error, such as MemoryError for a context past the memory
        // limit.) The host is still writing the bytes: read the rest, so that
        // it finishes and stdin stays in step.
        const rest = Number.isSafeInteger(message.bytes) ? message.bytes - contextRead : 0
        if (rest > 0) drain(rest)
        send({ t: "result", id: message.id, ok: false, error: lastLine(error) })
      }
      return
    }
    case "getVar":
    case "listVars": {
      // Python runs here too (a variable's __str__): interruptible like a block.
      running(message.id)
      ioListening()
      try {
        const json = message.t === "getVar" ? getVar(message.name) : listVars()
        send({ t: "result", id: message.id, value: JSON.parse(json) })
      } catch (error) {
        fatal(error)
        send({ t: "result", id: message.id, error: lastLine(error) })
      } finally {
        running(0)
      }
      return
    }
  }
}

// --- The context: `n` bytes of UTF-8 on stdin (fd 0),
// written by the host right after the request. They are read straight into a
// fresh Python str of n characters (one copy, no intermediate buffers); when
// they turn out not to be pure ASCII, that placeholder is dropped unused and
// Python decodes a copy of the bytes instead.
/** Read and drop `n` bytes of stdin. */
function drain(n) {
  const scratch = new Uint8Array(Math.min(n, 1 << 20))
  let left = n
  while (left > 0) {
    const part = scratch.subarray(0, Math.min(left, scratch.length))
    readInto(part)
    left -= part.length
  }
}

function readInto(target) {
  let offset = 0
  while (offset < target.length) {
    let got
    try {
      got = readSync(0, target, offset, Math.min(target.length - offset, 1 << 24), null)
    } catch (error) {
      if (error?.code === "EAGAIN") {
        Atomics.wait(ctrl, 1, 0, 1)
        continue
      }
      throw error
    }
    if (got === 0) throw new Error("the context stream ended early")
    offset += got
    contextRead += got
  }
}

/** Sequential reads from a file descriptor, filling each target completely. */
function fdReader(fd) {
  return (target) => {
    let offset = 0
    while (offset < target.length) {
      const got = readSync(fd, target, offset, target.length - offset, null)
      if (got === 0) throw new Error("the snapshot file ended early")
      offset += got
    }
  }
}

/** Sequential reads from bytes in memory. */
function bufferReader(bytes) {
  let at = 0
  return (target) => {
    if (at + target.length > bytes.length) throw new Error("the snapshot ended early")
    target.set(bytes.subarray(at, at + target.length))
    at += target.length
  }
}

function readSegment(n) {
  if (n < 2) {
    const small = new Uint8Array(n)
    readInto(small)
    return small
  }
  const address = asciiSlot(n)
  const view = py._module.HEAPU8.subarray(address, address + n)
  readInto(view)
  if (isAscii(view)) return undefined
  const bytes = view.slice()
  dropSlot()
  return bytes
}

function lastLine(error) {
  const text = String(error?.message ?? error).trim()
  return text.split("\n").slice(-3).join("\n")
}

send({ t: "ready", snapshot: snapshotStatus })
onRequest = handleRequest
for (const message of early.splice(0)) handleRequest(message)
