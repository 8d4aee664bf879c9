// The Node half of the Python child's realm wall (imported by python-child.mjs,
// applied once Pyodide has loaded). Node's permission model does not gate
// sockets, so a guest that ever reached arbitrary JavaScript in the child
// could otherwise open TCP/UDP/Unix sockets through Node's modules, or through
// the node:net/node:tls helpers Pyodide's own code imports. Every export of the
// modules below (and the methods of the classes they export) is replaced, in
// place, by a function that throws: `require`, `import()`, `createRequire`
// and `process.getBuiltinModule` all hand out these same objects afterwards.

/**
 * The modules emptied in the child once Pyodide has loaded: the ones that
 * reach sockets, processes, threads or the inspector's TCP server through
 * Node's native bindings. Loaded (if they are not yet) and emptied.
 */
export const CUT_MODULES = Object.freeze([
  "net",
  "tls",
  "_tls_wrap",
  "_tls_common",
  "dgram",
  "dns",
  "dns/promises",
  "child_process",
  "cluster",
  "worker_threads",
  "inspector",
  "inspector/promises"
])

/**
 * Modules that reach the network only through the ones above. Loading them
 * costs 10-15 ms each, so they are emptied only if something has loaded them
 * already: loaded later, they take the emptied `net`/`tls` functions.
 */
export const CUT_IF_LOADED = Object.freeze([
  "http",
  "https",
  "http2",
  "_http_agent",
  "_http_client",
  "_http_common",
  "_http_incoming",
  "_http_outgoing",
  "_http_server"
])

/** What every cut function throws. */
export const CUT_MESSAGE = "network, process and thread modules are not available in the sandbox"

const cut = function cut() {
  throw new Error(CUT_MESSAGE)
}
Object.freeze(cut)

/**
 * Classes whose prototype the child's own live objects share (its stdio
 * streams are `net.Socket`s, `MessagePort` is the runtime's own): only the
 * methods that open a connection go, or none.
 */
const sharedPrototypes = (require) => {
  const out = new Map()
  try {
    out.set(require("net").Socket, ["connect"])
  } catch {}
  try {
    const threads = require("worker_threads")
    for (const name of ["MessagePort", "MessageChannel", "BroadcastChannel"]) out.set(threads[name], [])
  } catch {}
  return out
}

/** Prototypes never touched: the language's own, and the stream and event classes everything shares. */
const protectedPrototypes = (require) => {
  const out = new Set([
    Object.prototype,
    Function.prototype,
    Array.prototype,
    Map.prototype,
    Set.prototype,
    Promise.prototype,
    Error.prototype
  ])
  try {
    out.add(require("events").EventEmitter.prototype)
    const stream = require("stream")
    for (const name of ["Stream", "Readable", "Writable", "Duplex", "Transform", "PassThrough"])
      out.add(stream[name].prototype)
  } catch {}
  return out
}

const replace = (object, key) => {
  try {
    Object.defineProperty(object, key, { value: cut, writable: false, configurable: false, enumerable: true })
  } catch {
    try {
      object[key] = cut
    } catch {}
  }
}

const cutPrototype = (proto, only, keep) => {
  if (proto === null || typeof proto !== "object" || keep.has(proto)) return
  for (const key of Reflect.ownKeys(proto)) {
    if (key === "constructor") continue
    if (only !== undefined && !only.includes(key)) continue
    const d = Object.getOwnPropertyDescriptor(proto, key)
    if (d !== undefined && typeof d.value === "function") replace(proto, key)
  }
}

const cutObject = (object, shared, keep, seen, depth) => {
  if (object === null || (typeof object !== "object" && typeof object !== "function") || seen.has(object)) return
  seen.add(object)
  for (const key of Reflect.ownKeys(object)) {
    const d = Object.getOwnPropertyDescriptor(object, key)
    if (d === undefined || key === "constructor" || key === "prototype") continue
    // An accessor (http.globalAgent): empty what it returns.
    const value =
      "value" in d
        ? d.value
        : (() => {
            try {
              return d.get?.call(object)
            } catch {
              return undefined
            }
          })()
    if (typeof value === "function") {
      if (value === cut) continue
      cutPrototype(value.prototype, shared.get(value), keep)
      if ("value" in d) replace(object, key)
    } else if (value !== null && typeof value === "object" && depth < 2) {
      if (Object.getPrototypeOf(value) !== null && typeof value.constructor === "function" && !("value" in d)) {
        // An instance (an Agent): its class's methods.
        cutPrototype(Object.getPrototypeOf(value), undefined, keep)
      }
      cutObject(value, shared, keep, seen, depth + 1)
    }
  }
}

/**
 * Empty CUT_MODULES, through `require` (a CommonJS require of this realm), and
 * refresh their ES module namespaces (`syncBuiltinESMExports`). `handles` are
 * live libuv handles of the process (its IPC channel, its stdio pipes): the
 * connect/bind/listen methods of their native classes go too, so that a new
 * Pipe cannot be pointed at a Unix socket.
 */
export function cutNodeNetwork(require, syncBuiltinESMExports, handles) {
  const seen = new Set()
  const shared = sharedPrototypes(require)
  const keep = protectedPrototypes(require)
  const loaded = new Set(process.moduleLoadList)
  const names = [...CUT_MODULES, ...CUT_IF_LOADED.filter((name) => loaded.has(`NativeModule ${name}`))]
  for (const name of names) {
    let exports
    try {
      exports = require(name)
    } catch {
      continue
    }
    cutObject(exports, shared, keep, seen, 0)
  }
  for (const handle of handles) {
    if (handle === null || typeof handle !== "object") continue
    const proto = Object.getPrototypeOf(handle)
    cutPrototype(proto, ["connect", "connect6", "bind", "bind6", "listen"], keep)
  }
  try {
    syncBuiltinESMExports()
  } catch {}
}

/**
 * The intrinsics a JavaScript escape would start from: the prototypes every
 * object, function, array, error and promise inherits from, and the
 * constructors that define properties (`Object.defineProperty` on
 * `Object.prototype`: a getter every object then runs, `Error.prepareStackTrace`:
 * a function Node calls with every stack).
 */
const intrinsics = () => {
  const errors = [Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError, AggregateError]
  return [
    Object,
    Object.prototype,
    Function,
    Function.prototype,
    Array,
    Array.prototype,
    Promise,
    Promise.prototype,
    Reflect,
    JSON,
    ...errors,
    ...errors.map((error) => error.prototype)
  ]
}

/** Properties the child's own libraries assign at run time (Pyodide's PythonError sets Error.stackTraceLimit). */
const assignable = new Map([[Error, new Set(["stackTraceLimit"])]])

/**
 * Freeze the intrinsics (`intrinsics` above), without the "override
 * mistake": a writable data property becomes an accessor whose setter, on an
 * object inheriting it (`error.name = ...`, `object.toString = ...`), defines
 * an own property of that object as an assignment would, and on the
 * intrinsic itself throws. Then no property of them can be added, deleted,
 * redefined or assigned (but those in `assignable`, which stay plain
 * writable data properties).
 */
export function lockIntrinsics() {
  for (const object of intrinsics()) {
    const keep = assignable.get(object)
    for (const key of Reflect.ownKeys(object)) {
      const d = Object.getOwnPropertyDescriptor(object, key)
      if (d === undefined || !d.configurable) continue
      if ("value" in d && d.writable && keep?.has(key) !== true) {
        const value = d.value
        Object.defineProperty(object, key, {
          get() {
            return value
          },
          set(next) {
            if (this === object) throw new TypeError(`${String(key)} of a sandbox intrinsic cannot be changed`)
            Object.defineProperty(this, key, { value: next, writable: true, enumerable: true, configurable: true })
          },
          enumerable: d.enumerable,
          configurable: false
        })
      } else {
        Object.defineProperty(object, key, { configurable: false })
      }
    }
    Object.preventExtensions(object)
  }
}

/**
 * The realm's own ways out, gone: `fetch` and the other network globals and
 * `require` are deleted; `process.getBuiltinModule`, `binding`, `dlopen`,
 * `_linkedBinding`, `kill`, `chdir`, `setuid` and `setgid` throw.
 */
export function stripProcess() {
  for (const name of [
    "fetch",
    "WebSocket",
    "EventSource",
    "XMLHttpRequest",
    "Request",
    "Response",
    "Headers",
    "require"
  ]) {
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
}

/**
 * Throw unless this process runs under Node's permission model with no child
 * processes, no threads, no writes and no reads outside what it was given:
 * a sandbox child refuses to start otherwise.
 */
export function assertLockedDown() {
  const permission = process.permission
  if (
    permission === undefined ||
    permission.has("child") ||
    permission.has("worker") ||
    permission.has("fs.write") ||
    permission.has("fs.read", "/etc/passwd")
  ) {
    throw new Error("the sandbox process is not running under Node's permission model; refusing to start")
  }
}
