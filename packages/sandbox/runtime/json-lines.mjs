// Newline-delimited JSON on a byte stream (plain JavaScript, not compiled by
// tsc): the sandbox child's pipes fd 4 and fd 5 carry one JSON object per
// line. Used on both ends: the child's I/O thread (python-io.mjs) and the
// host (src/internal/pythonProcess.ts).

/**
 * Call `onMessage` with each JSON object read from `stream`, in order. Lines
 * that are not JSON objects are skipped.
 */
export const onJsonLines = (stream, onMessage) => {
  const handle = (line) => {
    let message
    try {
      message = JSON.parse(line)
    } catch {
      return
    }
    if (message !== null && typeof message === "object") onMessage(message)
  }
  stream.setEncoding("utf8")
  let partial = []
  stream.on("data", (chunk) => {
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
