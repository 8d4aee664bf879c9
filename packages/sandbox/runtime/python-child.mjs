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

let currentId
let exiting = false
let fatalMessage

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
// ...including when it went away before this listener existed ("disconnect"
// is emitted once; a host dying right after the spawn would otherwise leave
// this process running forever).
if (!process.connected) process.exit(0)

const worker = new Worker(new URL("./python-worker.mjs", import.meta.url), {
  env: {},
  argv: [],
  // NOTE: no `execArgv` here. On Node 20 a Worker given its own execArgv runs
  // WITHOUT the permission model (child_process then works from the worker).
  workerData: {
    ctrl,
    intr,
    port: port2,
    pyodideDir: config.pyodideDir,
    runtimeDir: config.runtimeDir,
    memoryMb: config.memoryMb,
    mode: config.mode === "snapshot" ? "snapshot" : "repl",
    snapshotBytes: Number.isSafeInteger(config.snapshotBytes) && config.snapshotBytes > 0 ? config.snapshotBytes : 0,
    snapshotFile: typeof config.snapshotFile === "string" ? config.snapshotFile : undefined
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
worker.on("exit", (code) =>
  die(
    fatalMessage !== undefined
      ? `fatal interpreter error: ${fatalMessage}`
      : `interpreter worker exited with code ${code}`
  )
)
worker.on("message", (message) => {
  if (message.t === "call") {
    send({ t: "call", id: currentId, kind: message.kind, payload: message.payload })
    return
  }
  if (message.t === "snapshot" && config.mode === "snapshot") {
    // Snapshot mode: announce the size over IPC, write the image to stdout, exit.
    exiting = true
    const bytes = Buffer.from(message.bytes.buffer, message.bytes.byteOffset, message.bytes.byteLength)
    send({ t: "snapshot", bytes: bytes.length })
    process.stdout.write(bytes, () => process.exit(0))
    return
  }
  if (message.t === "fatal") {
    fatalMessage = message.message
    return
  }
  if (message.t === "result") currentId = undefined
  send(message)
})

// ---------------------------------------------------------------------------
process.on("message", (message) => {
  switch (message.t) {
    case "context": {
      // The context bytes follow on stdin; the worker reads them itself,
      // straight into the interpreter's memory.
      worker.postMessage(message)
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
