// The sandbox child process (plain JavaScript, not compiled by tsc): runs
// Pyodide on its main thread, its only JavaScript thread. Started by the host
// (src/internal/pythonProcess.ts) as
//   node --disallow-code-generation-from-strings --experimental-permission
//        --allow-fs-read=<pyodide dir>/* --allow-fs-read=<runtime dir>/*
//        python-child.mjs <json config>
// with an empty environment and these descriptors:
//   0  host -> child  raw bytes: the context (and the snapshot, without a disk cache)
//   1  child -> host  the snapshot image, in snapshot mode only
//   3  host -> child  JSON lines, read asynchronously here (between blocks, on
//                     this thread's event loop): exec, context, getVar, listVars.
//                     Its end (EOF) means the host is gone: this process exits.
//   4  host -> child  JSON lines, read synchronously here: reply
//   5  child -> host  JSON lines, written synchronously here: ready, result,
//                     snapshot, call, crashed
// (No Node IPC channel: its parser would accumulate a message of any size on
// the host. The host reads fd 5 with a capped line reader and decodes every
// message by a Schema; nothing this process writes is trusted there.)
// While a block runs, this thread is busy: a host call writes its request on
// fd 5 and blocks reading fd 4 until the reply has arrived. The block's time
// limit is kept here too: Pyodide polls its "interrupt buffer" every few
// dozen bytecodes, and that buffer answers SIGINT once the request's deadline
// has passed (see `signalBuffer`), so no message from the
// host is needed to stop a runaway block. The host only kills the process if
// the block has not returned a grace period after its limit.
// Python reaches nothing of this realm except the one bridge function `call`
// handed to the REPL module; the realm is stripped of network, module loading
// and process access once Pyodide has loaded, in case Python ever finds a way
// into JavaScript.
import { isAscii } from "node:buffer"
import { closeSync, openSync, readFileSync, readSync, writeSync } from "node:fs"
import { Socket } from "node:net"
import { pathToFileURL } from "node:url"
import { assertLockedDown } from "./node-wall.mjs"
import { refuseArgs } from "./tool-args.mjs"
import { dirtyOutsideRuns, encode, readHead, restoreInto, scanImage, withRestoreHook } from "./snapshot-image.mjs"

const config = JSON.parse(process.argv[2] ?? "{}")
const { pyodideDir, memoryMb } = config
const mode = config.mode === "snapshot" ? "snapshot" : "repl"
const snapshotBytes = Number.isSafeInteger(config.snapshotBytes) && config.snapshotBytes > 0 ? config.snapshotBytes : 0
const snapshotFile = typeof config.snapshotFile === "string" ? config.snapshotFile : undefined

// --- Fail closed unless Node's permission model is active, with no child
// processes, no threads, no writes and no native addons.
assertLockedDown()

/** For short sleeps (Atomics.wait) while a descriptor is not ready. */
const nap = new Int32Array(new SharedArrayBuffer(4))
const sleep = (ms) => Atomics.wait(nap, 0, 0, ms)
/** Bytes of stdin read so far for the current context request (readInto). */
let contextRead = 0
/** Kept before the realm is stripped of process.kill (below). */
const killSelf = process.kill.bind(process, process.pid, "SIGKILL")

// Requests may arrive before the interpreter is ready (the host sends the
// context right after the spawn): they wait here, in order.
let onRequest
const early = []
const dispatch = (line) => {
  let message
  try {
    message = JSON.parse(line)
  } catch {
    return
  }
  if (message === null || typeof message !== "object" || Array.isArray(message)) return
  if (onRequest === undefined) early.push(message)
  else onRequest(message)
}
// Requests: JSON lines on fd 3, read on this thread's event loop, so only
// between blocks (a block holds the thread). The host is trusted; its lines
// are split as they come.
const requests = new Socket({ fd: 3, readable: true, writable: false })
let partial = []
requests.on("data", (chunk) => {
  let start = 0
  for (let newline = chunk.indexOf(10); newline !== -1; newline = chunk.indexOf(10, start)) {
    partial.push(chunk.subarray(start, newline))
    const line = Buffer.concat(partial).toString("utf8")
    partial = []
    start = newline + 1
    dispatch(line)
  }
  if (start < chunk.length) partial.push(Buffer.from(chunk.subarray(start)))
})
// The host went away (the request pipe's end, also when it went away before
// this listener existed): never outlive it. In the middle of a block the
// time-limit poll notices instead (see signalBuffer), and a wait on a reply
// sees fd 4 end.
requests.on("end", () => process.exit(0))
requests.on("error", () => process.exit(0))

/** One JSON line on fd 5, written before this returns (the thread may block or exit next). */
const writeLine = (message) => {
  const bytes = Buffer.from(`${JSON.stringify(message)}\n`, "utf8")
  let offset = 0
  while (offset < bytes.length) {
    try {
      offset += writeSync(5, bytes, offset)
    } catch (error) {
      if (error?.code === "EAGAIN") {
        sleep(1)
        continue
      }
      // EPIPE: nobody reads this any more, the host is gone.
      killSelf()
    }
  }
}

const send = writeLine

// --- Time limits. `begin(id, ms)` gives the request now running `ms`
// milliseconds of its own time (time waiting on the host does not count, see
// `call`). Pyodide polls its interrupt buffer (reading index 0, then writing
// 0 there) every few dozen bytecodes of Python, also while Python sleeps or
// waits in a regex; reading 2 raises KeyboardInterrupt in the block,
// honouring the block's own SIGINT handler. Answered again
// every 250 ms while the request goes on regardless. The same poll notices a
// host that has died (this process is then re-parented) within 100 ms, even in
// the middle of an endless block.
const AGAIN_MS = 250
const HOST_CHECK_MS = 100
const hostPid = process.ppid
/** The id of the request running Python (0: none); a host call carries it. */
let currentId = 0
/** performance.now() at which the running request is interrupted. */
let deadline = Number.POSITIVE_INFINITY
/** Whether the running request has been interrupted for its time limit. */
let timedOut = false
let nextHostCheck = 0
/**
 * What a poll finds. Pyodide fetches the buffer up to three times per poll
 * (to test it, to read [0], to write 0 back), each time through the getter
 * below, so the alarm stays up until its [0] has been read: raised on any of
 * the three, it is delivered on the read.
 */
const QUIET = new Uint8Array(1)
let alarm = false
const ALARM = {
  get 0() {
    alarm = false
    timedOut = true
    deadline = performance.now() + AGAIN_MS
    return 2 // SIGINT
  },
  set 0(_) {}
}
/** Fetches since the clock was last read, and how many to let pass before reading it. */
let polls = 0
let stride = 1
let clockReadAt = 0
/** The interrupt buffer, as Module.Py_EmscriptenSignalBuffer (see the setup below). */
function signalBuffer() {
  if (alarm || aborted) return ALARM
  if (++polls < stride) return QUIET
  polls = 0
  const now = performance.now()
  // Pure Python polls every 0.3-3 µs, and reading the clock each time would
  // cost it 15-18% (every 8th fetch: 3-5%): while polls come that fast, the
  // clock is read at every 64th fetch. Python that polls rarely reads it at
  // each (the sliced time.sleep spins after each slice to make sure of one).
  stride = now - clockReadAt < 0.4 ? 64 : 1
  clockReadAt = now
  if (now >= nextHostCheck) {
    nextHostCheck = now + HOST_CHECK_MS
    if (process.ppid !== hostPid) killSelf()
  }
  if (now < deadline) return QUIET
  alarm = true
  return ALARM
}

function begin(id, ms) {
  currentId = Number.isSafeInteger(id) ? id : 0
  aborted = false
  timedOut = false
  alarm = false
  deadline = typeof ms === "number" && ms > 0 ? performance.now() + ms : Number.POSITIVE_INFINITY
}

function end() {
  currentId = 0
  aborted = false
  alarm = false
  deadline = Number.POSITIVE_INFINITY
}

/** Report why this process is ending, then end it (a crash of the interpreter). */
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

// --- No sockets: Emscripten's socket layer would speak WebSocket to the host,
// and Pyodide ships a socket layer over node:net/node:tls (useNodeSockFS,
// API.initializeNodeSockFS, Module._nodeSock): all of it refuses or is gone.
// `wasm` is the Emscripten module, kept here only: the API object loses its
// reference below.
const wasm = py._module
const refuse = () => {
  throw new wasm.FS.ErrnoError(111 /* ECONNREFUSED */)
}
const denied = () => {
  throw new Error("not available in the sandbox")
}
try {
  wasm.SOCKFS.websocket_sock_ops.createPeer = refuse
  wasm.SOCKFS.websocket_sock_ops.connect = refuse
  wasm.SOCKFS.websocket_sock_ops.listen = refuse
} catch {}
try {
  delete py._api.initializeNodeSockFS
  delete wasm._nodeSock
  delete wasm.FS.filesystems.NODESOCKFS
} catch {}
// No host file system either: NODEFS (and the other mountable kinds) refuse.
for (const kind of ["NODEFS", "PROXYFS", "WORKERFS", "IDBFS"]) {
  try {
    if (wasm[kind] !== undefined) wasm[kind].mount = denied
    delete wasm.FS.filesystems[kind]
  } catch {}
}

// Pyodide reads `Module.Py_EmscriptenSignalBuffer[0]` at every poll: that
// property becomes a getter answering from this thread's own clock: a plain
// buffer of zeros, except at the deadline. (An object with an indexed getter
// for [0] at every poll cost CPU-bound Python 20-30%.)
py.setInterruptBuffer(QUIET)
Object.defineProperty(py._module, "Py_EmscriptenSignalBuffer", { get: signalBuffer, set() {}, configurable: false })

// --- The bridge: the only JavaScript function Python is given. It validates
// its arguments, writes the call, and blocks until the reply has arrived; the
// request's time limit stands still meanwhile. One entry for every host tool:
// the tool's name and its arguments as JSON (an object by parameter name).
/** The session's tool names (set with the context): a call of another name is refused here. */
let toolNames = new Set()
/** The running request's caps (its `maxPromptChars`, `maxAnswerChars`), set by each exec. */
let promptCap = Number.POSITIVE_INFINITY
let answerCap = Number.POSITIVE_INFINITY
const capOf = (value) => (Number.isSafeInteger(value) && value >= 0 ? value : Number.POSITIVE_INFINITY)
/** Characters as Python counts them (code points), when `text` may be over `max`; else its length. */
const charCount = (text, max) => {
  if (text.length <= max) return text.length
  let n = 0
  for (const _ of text) n++
  return n
}
/** Set when the host aborted the running block (a budget spent): no more calls, and it is interrupted at every poll. */
let aborted = false
const call = (name, payload) => {
  if (typeof name !== "string" || !toolNames.has(name) || typeof payload !== "string") {
    return "0invalid host call"
  }
  if (aborted) return "0the block was aborted by the host"
  let args
  try {
    args = JSON.parse(payload)
  } catch {
    return "0invalid host call"
  }
  const refused = refuseArgs(args, promptCap, charCount)
  if (refused !== undefined) return refused === "invalid host call" ? `0${refused}` : `0${name}: ${refused}`
  const left = deadline - performance.now()
  deadline = Number.POSITIVE_INFINITY
  try {
    writeLine({ t: "call", id: currentId, name, args })
    const reply = readReply()
    if (reply.abort === true) aborted = true
    return (reply.ok === true ? "1" : "0") + String(reply.value)
  } finally {
    if (currentId !== 0 && left !== Number.POSITIVE_INFINITY) deadline = performance.now() + Math.max(0, left)
  }
}

/** Bytes read from fd 4 past the last line (normally none: one reply per call). */
let pending = Buffer.alloc(0)
/** The next JSON line from the host on fd 4, waiting for it; the host gone (EOF): end this process. */
function readReply() {
  const chunks = pending.length > 0 ? [pending] : []
  let newline = pending.indexOf(10)
  let size = pending.length
  while (newline === -1) {
    const chunk = Buffer.allocUnsafe(65536)
    let got
    try {
      got = readSync(4, chunk, 0, chunk.length, null)
    } catch (error) {
      if (error?.code === "EAGAIN") {
        sleep(1)
        continue
      }
      throw error
    }
    if (got === 0) killSelf()
    const at = chunk.subarray(0, got).indexOf(10)
    if (at !== -1) newline = size + at
    chunks.push(chunk.subarray(0, got))
    size += got
  }
  const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)
  pending = Buffer.from(all.subarray(newline + 1))
  let message
  try {
    message = JSON.parse(all.toString("utf8", 0, newline))
  } catch {}
  return message !== null && typeof message === "object" && message.t === "reply"
    ? message
    : { ok: false, value: "malformed reply from host" }
}

// Take the REPL module out of sys.modules (model code finds it only through
// its helpers' globals, as before) and hand it the bridge.
const setup = py.runPython(`import sys\nsys.modules.pop("_rlm_repl")`)
// What Python holds of the bridge: nothing of JavaScript. A JsProxy of any
// JavaScript value leads, through Pyodide's FFI, to the realm's constructors
// (`.constructor`, `.new()`, the JsException a failed call raises: a JsProxy
// of a TypeError, then Error, Object, Function), so the bridge is a character
// device of the in-memory file system instead, /dev/host (`_bridge_call` in
// python_repl.py). Python writes a request: a flag ("8" UTF-8, "6" UTF-16-LE
// for strings with lone surrogates), the tool's name, a newline and the payload (its arguments as JSON), in
// one write; then it reads the reply: the same flag and the body's length in
// 15 digits, then the body ("1"/"0" and the text of `call`). Nothing here
// throws into the interpreter but an errno (a JavaScript error thrown from a
// file system operation would end the interpreter), and nothing of JavaScript
// reaches Python but bytes.
const BRIDGE_PATH = "/dev/host"
const EMPTY = Buffer.alloc(0)
const decodeText = (flag, bytes, start) =>
  flag === 0x38 ? bytes.toString("utf8", start) : flag === 0x36 ? bytes.toString("utf16le", start) : undefined
const encodeReply = (text) => {
  const wellFormed = text.isWellFormed()
  const body = Buffer.from(text, wellFormed ? "utf8" : "utf16le")
  const head = Buffer.from(`${wellFormed ? "8" : "6"}${String(body.length).padStart(15, "0")}`, "latin1")
  return Buffer.concat([head, body])
}
const bridgeRequest = (bytes) => {
  const newline = bytes.indexOf(10)
  if (newline < 1) return "0invalid host call"
  const payload = decodeText(bytes[0], bytes, newline + 1)
  if (payload === undefined) return "0invalid host call"
  return call(bytes.toString("latin1", 1, newline), payload)
}
{
  const FS = wasm.FS
  // A device number no other device uses (Emscripten's own start at 64).
  const device = FS.makedev(211, 0)
  FS.registerDevice(device, {
    open(stream) {
      stream.seekable = false
      stream.reply = EMPTY
      stream.replyAt = 0
    },
    close(stream) {
      stream.reply = EMPTY
    },
    read(stream, heap, offset, length) {
      const reply = stream.reply ?? EMPTY
      const at = stream.replyAt ?? 0
      const n = Math.max(0, Math.min(length, reply.length - at))
      if (n > 0) new Uint8Array(heap.buffer, heap.byteOffset + offset, n).set(reply.subarray(at, at + n))
      stream.replyAt = at + n
      return n
    },
    write(stream, heap, offset, length) {
      let reply
      try {
        reply = bridgeRequest(Buffer.from(heap.buffer, heap.byteOffset + offset, length))
      } catch {
        reply = "0the host call failed"
      }
      stream.reply = encodeReply(typeof reply === "string" ? reply : "0the host call failed")
      stream.replyAt = 0
      return length
    }
  })
  FS.mkdev(BRIDGE_PATH, 0o600, device)
}
setup.install_bridge(BRIDGE_PATH)
const execBlock = setup.exec_block
const installTools = setup.install_tools
const loadContext = setup.load_context
const asciiSlot = setup.ascii_slot
const dropSlot = setup.drop_slot
const getVar = setup.get_var
const listVars = setup.list_vars

// Python must not reach the Pyodide API object (pyodide_js) or the JS globals.
// Nor any JavaScript error: Pyodide turns a JavaScript error thrown into
// Python (a failed JsProxy call or attribute read) into a JsException, a
// JsProxy of that error (then its prototype chain, Error, Object...). Here it
// becomes a RuntimeError carrying only a message: Python errors on their way
// back keep Pyodide's own handling. And `JsException(name, message)` would
// make a JavaScript Error from Python: it fails (through the same path).
{
  const api = py._api
  const PythonError = api.PythonError
  const Propagate = wasm._PropagatePythonError
  const original = wasm.handle_js_error
  const runtimeError = wasm.HEAPU32[wasm._PyExc_RuntimeError >>> 2]
  const messageOf = (error) => {
    try {
      const text = error instanceof Error ? `${error.name}: ${error.message}` : typeof error
      return `JavaScript error: ${String(text).slice(0, 300)}`
    } catch {
      return "JavaScript error"
    }
  }
  wasm.handle_js_error = (error) => {
    if (error?.pyodide_fatal_error || error instanceof Propagate || error instanceof PythonError) {
      return original(error)
    }
    const message = wasm.stringToNewUTF8(messageOf(error))
    wasm._PyErr_SetString(runtimeError, message)
    wasm._free(message)
  }
  api.deserializeError = () => {
    throw new TypeError("JavaScript errors cannot be created in the sandbox")
  }
}
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
// Then no JavaScript value can be created from Python any more (the REPL
// module's harden: no ctypes, no to_js/create_proxy), and the API object keeps
// nothing a JavaScript escape could use: not `_module`, `_api`, `FS`, the
// mount functions, the interrupt-buffer setter, runPython...
setup.harden()
for (const name of Object.getOwnPropertyNames(py)) {
  if (name === "length" || name === "name" || name === "prototype") continue
  try {
    delete py[name]
  } catch {}
}

// --- Strip the realm: no network, no module loading, no process access.
// Node's socket, TLS, UDP, DNS, inspector, worker and child-process modules
// are emptied (node-wall.mjs): a JavaScript escape finds no socket API.
{
  const { createRequire, syncBuiltinESMExports } = await import("node:module")
  const { cutNodeNetwork, lockIntrinsics, stripProcess } = await import("./node-wall.mjs")
  stripProcess()
  cutNodeNetwork(createRequire(import.meta.url), syncBuiltinESMExports, [
    requests._handle,
    process.stdout?._handle,
    process.stderr?._handle
  ])
  // And the intrinsics an escape would start from (Object.prototype,
  // Function.prototype, Error and its prototype, Object, Reflect...) are
  // frozen: nothing can be defined or replaced on them.
  lockIntrinsics()
}

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
      begin(message.id, message.timeoutMs)
      promptCap = capOf(message.maxPromptChars)
      answerCap = capOf(message.maxAnswerChars)
      const limit = capOf(message.limit)
      let out
      try {
        const json = execBlock(
          message.code,
          limit === Number.POSITIVE_INFINITY ? 20_000 : limit,
          answerCap === Number.POSITIVE_INFINITY ? -1 : answerCap,
          promptCap === Number.POSITIVE_INFINITY ? -1 : promptCap
        )
        if (typeof json !== "string") throw new Error("the interpreter returned no result")
        out = JSON.parse(json)
      } catch (error) {
        fatal(error)
        out = { stdout: "", stderr: "", stdoutTotal: 0, stderrTotal: 0, error: lastLine(error) }
      }
      end()
      send({ t: "result", id: message.id, ...shrink(out, limit), timedOut })
      return
    }
    case "context": {
      contextRead = 0
      try {
        if (Array.isArray(message.tools)) {
          installTools(JSON.stringify(message.tools))
          toolNames = new Set(message.tools.map((tool) => String(tool?.name)))
        }
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
      // Python runs here too (a variable's __str__): a time limit like a block's.
      begin(message.id, message.timeoutMs)
      try {
        const json =
          message.t === "getVar"
            ? getVar(message.name, Number.isSafeInteger(message.maxChars) ? message.maxChars : -1)
            : listVars()
        send({ t: "result", id: message.id, value: JSON.parse(json) })
      } catch (error) {
        fatal(error)
        send({ t: "result", id: message.id, error: lastLine(error) })
      } finally {
        end()
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
        sleep(1)
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
  const view = wasm.HEAPU8.subarray(address, address + n)
  readInto(view)
  if (isAscii(view)) return undefined
  const bytes = view.slice()
  dropSlot()
  return bytes
}

/**
 * An exec result cut to what the host will show, so that no more than that
 * crosses (the host cuts again, whatever this sends; the totals are kept), a final answer past the
 * answer cap replaced by an error. Only saves bytes: the walls are the host's.
 * stdout, stderr at `limit`, the error at max(`limit`, 20,000) characters.
 */
function shrink(out, limit) {
  if (out === null || typeof out !== "object") {
    return { stdout: "", stderr: "", error: "the interpreter returned no result" }
  }
  // (Python counts code points: `limit` of them are at most 2 * limit UTF-16 units.)
  const cut = (text) => (typeof text === "string" && text.length > 2 * limit ? text.slice(0, 2 * limit) : text)
  const result = { ...out, stdout: cut(out.stdout), stderr: cut(out.stderr) }
  // A traceback is shown up to the larger of the output limit and 20,000.
  const errorLimit = Math.max(limit, 20_000)
  if (typeof out.error === "string" && out.error.length > errorLimit) {
    result.error = out.error.slice(0, errorLimit)
    result.errorTotal = out.error.length
  }
  const value = out.final?.value
  const n = typeof value === "string" ? charCount(value, answerCap) : 0
  if (n > answerCap) {
    delete result.final
    result.error = `${result.error ?? ""}ValueError: the final answer has ${n} characters; the limit is ${answerCap}\n`
  }
  return result
}

function lastLine(error) {
  const text = String(error?.message ?? error).trim()
  return text.split("\n").slice(-3).join("\n")
}

// --- Warm-up (an interpreter started ahead of use: the pool's, config
// `warmUp`). V8 compiles Pyodide's WebAssembly functions with its baseline
// compiler first and tiers the hot ones up to TurboFan once they have run
// enough; a fresh interpreter's first few hundred blocks pay for that. A pooled
// interpreter pays while it waits instead: once ready, it runs a session's
// path (tools, a context, blocks through execBlock, reads of variables) in
// slices between which the event loop reads requests. The first request
// stops it for good, and before that request runs, forget_warm_up leaves
// nothing of it: no variable, no output, no final answer, P and context empty
// (python_repl.py). A request that comes first just finds a less warm interpreter.
const WARM_ROUNDS = 40
let warming = false
const warmUp = () => {
  warming = true
  const blocks = JSON.parse(setup.warm_up_blocks())
  let round = 0
  const step = () => {
    if (!warming) return
    if (round === 0) {
      installTools("[]")
      asciiSlot(8)
      loadContext(undefined, undefined)
    }
    for (const code of blocks) {
      begin(0, 0)
      try {
        shrink(JSON.parse(execBlock(code, 20_000, -1, -1)), 20_000)
      } catch (error) {
        fatal(error)
      }
      end()
    }
    JSON.parse(listVars())
    JSON.parse(getVar("x", -1))
    round++
    if (round < WARM_ROUNDS) setImmediate(step)
    else stopWarmUp()
  }
  setImmediate(step)
}
const stopWarmUp = () => {
  if (!warming) return
  warming = false
  setup.forget_warm_up()
  timedOut = false
}

send({ t: "ready", snapshot: snapshotStatus })
onRequest = (message) => {
  stopWarmUp()
  handleRequest(message)
}
const queued = early.splice(0)
for (const message of queued) onRequest(message)
// (Not when a session's requests came first: it has the interpreter already.)
if (config.warmUp === true && mode === "repl" && queued.length === 0) warmUp()
