// The sandbox child process (plain JavaScript, not compiled by tsc).
//
// Started by the host (src/internal/pythonProcess.ts) as
//   node --disallow-code-generation-from-strings --experimental-permission
//        --allow-fs-read=<pyodide dir>/* --allow-fs-read=<runtime dir>/* --allow-worker
//        python-child.mjs <json config>
// with an empty environment, an IPC channel for control messages and stdin as
// a raw byte pipe for the context. It holds one worker thread running Pyodide
// (python-worker.mjs) and forwards between the host and that worker:
//   host -> child (IPC): exec, getVar, listVars, context, reply, interrupt
//   child -> host (IPC): ready, result, call, crashed
// The worker blocks on Atomics.wait while a host call is outstanding; the reply
// is posted on a MessagePort and the worker is woken with Atomics.notify, then
// reads it with receiveMessageOnPort.
import { MessageChannel, Worker } from "node:worker_threads"

const config = JSON.parse(process.argv[2] ?? "{}")

// ctrl[0]: 0 = waiting, 1 = reply posted
const ctrl = new Int32Array(new SharedArrayBuffer(8))
// Pyodide's interrupt buffer: 2 = SIGINT
const intr = new Uint8Array(new SharedArrayBuffer(1))
const { port1, port2 } = new MessageChannel()

let currentId = undefined
let exiting = false

const send = (message) => {
  if (process.connected) process.send(message)
}

const die = (message) => {
  if (exiting) return
  exiting = true
  send({ t: "crashed", message })
  // Let the IPC message flush, then exit.
  setTimeout(() => process.exit(1), 50).unref()
}

// The host went away: never outlive it.
process.on("disconnect", () => process.exit(0))

const worker = new Worker(new URL("./python-worker.mjs", import.meta.url), {
  env: {},
  argv: [],
  execArgv: [],
  workerData: {
    ctrl,
    intr,
    port: port2,
    pyodideDir: config.pyodideDir,
    runtimeDir: config.runtimeDir,
    memoryMb: config.memoryMb
  },
  transferList: [port2],
  resourceLimits: { maxOldGenerationSizeMb: config.heapMb ?? 512 },
  stdout: true,
  stderr: true
})
// Anything Pyodide itself prints outside of a block is dropped (bounded).
worker.stdout.resume()
worker.stderr.on("data", (chunk) => process.stderr.write(chunk.subarray(0, 4096)))

worker.on("error", (error) => die(`interpreter worker failed: ${error?.code ?? ""} ${error?.message ?? error}`))
worker.on("exit", (code) => die(`interpreter worker exited with code ${code}`))
worker.on("message", (message) => {
  if (message.t === "call") {
    send({ t: "call", id: currentId, kind: message.kind, payload: message.payload })
    return
  }
  if (message.t === "result") currentId = undefined
  send(message)
})

// ---------------------------------------------------------------------------
// Raw bytes from stdin (the context). The host announces the byte count over
// IPC, then writes exactly that many bytes on stdin.
const queue = []
let queued = 0
let pending = undefined // { target: Uint8Array, offset: number, done: () => void }

const pump = () => {
  while (pending !== undefined && queue.length > 0) {
    const chunk = queue[0]
    const need = pending.target.length - pending.offset
    if (chunk.length <= need) {
      pending.target.set(chunk, pending.offset)
      pending.offset += chunk.length
      queue.shift()
      queued -= chunk.length
    } else {
      pending.target.set(chunk.subarray(0, need), pending.offset)
      pending.offset += need
      queue[0] = chunk.subarray(need)
      queued -= need
    }
    if (pending.offset === pending.target.length) {
      const done = pending.done
      pending = undefined
      done()
    }
  }
}
process.stdin.on("data", (chunk) => {
  queue.push(chunk)
  queued += chunk.length
  pump()
})
process.stdin.on("error", () => {})

const readBytes = (n) =>
  new Promise((resolve) => {
    const target = new Uint8Array(new SharedArrayBuffer(Math.max(n, 1)), 0, n)
    pending = { target, offset: 0, done: () => resolve(target) }
    if (n === 0) {
      pending = undefined
      resolve(target)
    } else {
      pump()
    }
  })

// ---------------------------------------------------------------------------
process.on("message", async (message) => {
  switch (message.t) {
    case "context": {
      const bytes = await readBytes(message.bytes)
      worker.postMessage({ t: "context", id: message.id, bytes, textBytes: message.textBytes, docBytes: message.docBytes })
      return
    }
    case "exec": {
      currentId = message.id
      worker.postMessage(message)
      return
    }
    case "getVar":
    case "listVars": {
      worker.postMessage(message)
      return
    }
    case "reply": {
      port1.postMessage({ ok: message.ok, value: message.value })
      Atomics.store(ctrl, 0, 1)
      Atomics.notify(ctrl, 0)
      return
    }
    case "interrupt": {
      if (message.id === currentId) intr[0] = 2
      return
    }
  }
})
