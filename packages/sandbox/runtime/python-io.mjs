// The I/O thread of the sandbox child (plain JavaScript, not compiled by tsc).
// The interpreter runs on the child's main thread (python-child.mjs), which is
// busy, or blocked on Atomics.wait, while a block runs. This thread reads what
// the host sends meanwhile, JSON lines on fd 4:
//   {"t":"reply","ok":bool,"value":string}  the answer to the pending host call:
//       posted on the main thread's port, which is then woken
//   {"t":"interrupt","id":n}  a request over its time limit: written into
//       Pyodide's interrupt buffer, if request n is the one running
// When fd 4 closes, the host is gone, and this thread kills the process.
// It never runs Python and holds nothing but these two channels.
import { writeSync } from "node:fs"
import { Socket } from "node:net"
import { workerData } from "node:worker_threads"
import { onJsonLines } from "./json-lines.mjs"

const { ctrl, intr, port } = workerData

// Without this thread a running block can be neither answered nor
// interrupted, and the main thread, busy with the block, would not learn of
// its death: end the whole process, saying why on stderr (the host shows it).
process.on("uncaughtException", (error) => {
  try {
    writeSync(2, `the sandbox I/O thread failed: ${String(error?.stack ?? error).slice(0, 1000)}\n`)
  } catch {}
  process.kill(process.pid, "SIGKILL")
})

/** A spin lock on ctrl[4], held for a few instructions at a time (see python-child.mjs). */
const lock = (words) => {
  while (Atomics.compareExchange(words, 4, 0, 1) !== 0) {}
}
const unlock = (words) => Atomics.store(words, 4, 0)

const handle = (message) => {
  if (message.t === "reply") {
    port.postMessage({ ok: message.ok === true, value: String(message.value) })
    Atomics.store(ctrl, 0, 1)
    Atomics.notify(ctrl, 0)
  } else if (message.t === "interrupt") {
    // Checked and set under the lock the main thread takes when it starts
    // and ends a request, so that a late interrupt never lands in the next one.
    lock(ctrl)
    if (message.id === Atomics.load(ctrl, 2)) intr[0] = 2
    unlock(ctrl)
  }
}

const input = new Socket({ fd: 4, readable: true, writable: false })
onJsonLines(input, handle)
// The host is gone (its end of fd 4 closed). The main thread would notice
// only between blocks, and a block may loop or wait on a reply forever: end
// the whole process now.
const hostGone = () => process.kill(process.pid, "SIGKILL")
input.on("end", hostGone)
input.on("close", hostGone)
input.on("error", hostGone)
// Listening: the main thread runs no block before this (ctrl[3]).
Atomics.store(ctrl, 3, 1)
Atomics.notify(ctrl, 3)
