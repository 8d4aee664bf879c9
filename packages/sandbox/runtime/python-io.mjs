// The I/O thread of the sandbox child (plain JavaScript, not compiled by tsc).
// The interpreter runs on the child's main thread (python-child.mjs), which is
// busy, or blocked on Atomics.wait, while a block runs. This thread reads what
// the host sends meanwhile, JSON lines on fd 4:
//   {"t":"reply","ok":bool,"value":string}  the answer to the pending host call:
//       posted on the main thread's port, which is then woken
//   {"t":"interrupt","id":n}  a block over its time limit: written into
//       Pyodide's interrupt buffer, if block n is the one running
// It never runs Python and holds nothing but these two channels.
import { Socket } from "node:net"
import { workerData } from "node:worker_threads"

const { ctrl, intr, port } = workerData

const handle = (line) => {
  let message
  try {
    message = JSON.parse(line)
  } catch {
    return
  }
  if (message === null || typeof message !== "object") return
  if (message.t === "reply") {
    port.postMessage({ ok: message.ok === true, value: String(message.value) })
    Atomics.store(ctrl, 0, 1)
    Atomics.notify(ctrl, 0)
  } else if (message.t === "interrupt") {
    if (message.id === Atomics.load(ctrl, 2)) intr[0] = 2
  }
}

const input = new Socket({ fd: 4, readable: true, writable: false })
input.setEncoding("utf8")
let partial = []
input.on("data", (chunk) => {
  let start = 0
  for (let newline = chunk.indexOf("\n"); newline !== -1; newline = chunk.indexOf("\n", start)) {
    partial.push(chunk.slice(start, newline))
    handle(partial.join(""))
    partial = []
    start = newline + 1
  }
  if (start < chunk.length) partial.push(chunk.slice(start))
})
// The host closing its end ends the child through the IPC channel; nothing to do here.
input.on("error", () => {})
// Listening: the main thread runs no block before this (ctrl[3]).
Atomics.store(ctrl, 3, 1)
Atomics.notify(ctrl, 3)
