// The interpreter worker (plain JavaScript, not compiled by tsc): runs Pyodide
// inside the sandbox child process (python-child.mjs). Python reaches nothing
// of this realm except the one bridge function `call` handed to the REPL
// module; the realm is stripped of network, module loading and process access
// once Pyodide has loaded, in case Python ever finds a way into JavaScript.
import { isAscii } from "node:buffer"
import { closeSync, openSync, readFileSync, readSync } from "node:fs"
import { pathToFileURL } from "node:url"
import { parentPort, receiveMessageOnPort, workerData } from "node:worker_threads"
import { dirtyOutsideRuns, encode, readHead, restoreInto, scanImage, withRestoreHook } from "./snapshot-image.mjs"

const { ctrl, intr, port, pyodideDir, runtimeDir, memoryMb, mode, snapshotBytes, snapshotFile } = workerData

// --- Fail closed unless Node's permission model is active in THIS thread, with
// no child processes, no writes and no native addons.
const permission = process.permission
if (
  permission === undefined ||
  permission.has("child") ||
  permission.has("fs.write") ||
  permission.has("fs.read", "/etc/passwd")
) {
  throw new Error("the sandbox worker is not running under Node's permission model; refusing to start")
}

// --- Memory cap: worker resourceLimits do not cover the WebAssembly heap. ----
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
// sys.modules until the worker takes it (and hands it the bridge). In the
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
  // The child writes it to its stdout and exits; this worker never runs model code.
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
  parentPort.postMessage({ t: "snapshot", bytes }, [bytes.buffer])
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
// its arguments, posts the call, and blocks until the child posts the reply.
const KINDS = new Set(["llm", "llm_batched", "rlm", "rlm_batched"])
const call = (kind, payload) => {
  if (typeof kind !== "string" || !KINDS.has(kind) || typeof payload !== "string") {
    return "0invalid host call"
  }
  Atomics.store(ctrl, 0, 0)
  parentPort.postMessage({ t: "call", kind, payload })
  Atomics.wait(ctrl, 0, 0)
  const reply = receiveMessageOnPort(port)?.message
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
void runtimeDir

// --- Requests from the child main thread. A fatal interpreter error ends the
// worker, which the host reports as a crash.
// Anything other than a Python exception escaping the REPL (a fatal
// interpreter error: WebAssembly stack overflow, os._exit, a trap) leaves the
// interpreter in an unknown state: end the worker so the host replaces it.
const fatal = (error) => {
  if (error?.constructor?.name !== "PythonError" || error?.pyodide_fatal_error) {
    parentPort.postMessage({ t: "fatal", message: String(error?.message ?? error).slice(0, 300) })
    process.exit(70)
  }
}

parentPort.on("message", (message) => {
  switch (message.t) {
    case "exec": {
      intr[0] = 0
      let out
      try {
        const json = execBlock(message.code, message.limit)
        if (typeof json !== "string") throw new Error("the interpreter returned no result")
        out = JSON.parse(json)
      } catch (error) {
        fatal(error)
        out = { stdout: "", stderr: "", stdoutTotal: 0, stderrTotal: 0, error: lastLine(error) }
      }
      intr[0] = 0
      parentPort.postMessage({ t: "result", id: message.id, ...out })
      return
    }
    case "context": {
      try {
        const sizes = [message.textBytes, ...(Array.isArray(message.docBytes) ? message.docBytes : [])]
        const args = sizes.map(readSegment)
        const [text, ...docs] = args
        loadContext(text, Array.isArray(message.docBytes) ? docs : undefined)
        parentPort.postMessage({ t: "result", id: message.id, ok: true })
      } catch (error) {
        fatal(error)
        parentPort.postMessage({ t: "result", id: message.id, ok: false, error: lastLine(error) })
      }
      return
    }
    case "getVar": {
      try {
        parentPort.postMessage({ t: "result", id: message.id, value: JSON.parse(getVar(message.name)) })
      } catch (error) {
        fatal(error)
        parentPort.postMessage({ t: "result", id: message.id, error: lastLine(error) })
      }
      return
    }
    case "listVars": {
      try {
        parentPort.postMessage({ t: "result", id: message.id, value: JSON.parse(listVars()) })
      } catch (error) {
        fatal(error)
        parentPort.postMessage({ t: "result", id: message.id, error: lastLine(error) })
      }
      return
    }
  }
})

// --- The context: `n` bytes of UTF-8 on stdin (fd 0 of the child process),
// written by the host right after the request. They are read straight into a
// fresh Python str of n characters (one copy, no intermediate buffers); when
// they turn out not to be pure ASCII, that placeholder is dropped unused and
// Python decodes a copy of the bytes instead.
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

parentPort.postMessage({ t: "ready", snapshot: snapshotStatus })
