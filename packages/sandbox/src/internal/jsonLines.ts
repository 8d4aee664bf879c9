/**
 * Newline-delimited JSON on a byte stream: the sandbox child's pipes fd 4 and
 * fd 5 carry one JSON object per line (the child reads and writes them
 * synchronously, in runtime/python-child.mjs; this is the host's reader).
 */
import type { Readable } from "node:stream"

/**
 * Call `onMessage` with each JSON object read from `stream`, in order. Lines
 * that are not JSON objects are skipped.
 *
 * @internal
 */
export const onJsonLines = (stream: Readable, onMessage: (message: Record<string, any>) => void): void => {
  const handle = (line: string) => {
    let message: unknown
    try {
      message = JSON.parse(line)
    } catch {
      return
    }
    if (message !== null && typeof message === "object") onMessage(message as Record<string, any>)
  }
  stream.setEncoding("utf8")
  let partial: Array<string> = []
  stream.on("data", (chunk: string) => {
    let start = 0
    for (let newline = chunk.indexOf("\n"); newline !== -1; newline = chunk.indexOf("\n", start)) {
      partial.push(chunk.slice(start, newline))
      handle(partial.join(""))
      partial = []
      start = newline + 1
    }
    if (start < chunk.length) partial.push(chunk.slice(start))
  })
}
