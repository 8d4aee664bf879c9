/**
 * Writing strings to a stream as UTF-8 without ever holding their whole
 * encoding: a 100 MB context would otherwise be copied into a fresh 100 MB
 * Buffer first (on a VM where every first touch of a page is a page fault,
 * that alone took 660 ms). Two reused scratch buffers, and the stream's
 * backpressure respected.
 */
import type { Writable } from "node:stream"
import * as Effect from "effect/Effect"

/** UTF-16 code units encoded per chunk. */
const CHUNK_UNITS = 1 << 20

const isHighSurrogate = (code: number) => code >= 0xd800 && code <= 0xdbff

/**
 * The [start, end) code-unit ranges `text` is encoded in: at most `units`
 * each, never splitting a surrogate pair, so that the chunks' encodings
 * concatenate to `Buffer.from(text, "utf8")` (a lone surrogate becomes
 * U+FFFD in both).
 *
 * @internal
 */
export const chunkRanges = (text: string, units: number = CHUNK_UNITS): Array<readonly [number, number]> => {
  const ranges: Array<readonly [number, number]> = []
  let start = 0
  while (start < text.length) {
    let end = Math.min(start + Math.max(2, units), text.length)
    if (end < text.length && isHighSurrogate(text.charCodeAt(end - 1))) end--
    ranges.push([start, end])
    start = end
  }
  return ranges
}

/**
 * Write the UTF-8 encoding of `texts`, one after the other, to `output`.
 * Completes once every chunk has been handed to the OS, or at once when
 * `stopped()` turns true (the reader died; its death is reported elsewhere).
 *
 * @internal
 */
export const writeUtf8 = (
  output: Writable,
  texts: ReadonlyArray<string>,
  stopped: () => boolean,
  units: number = CHUNK_UNITS
): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    // A UTF-16 code unit takes at most 3 bytes of UTF-8.
    const scratch = [Buffer.allocUnsafe(3 * units), Buffer.allocUnsafe(3 * units)]
    const queue = texts.flatMap((text) => chunkRanges(text, units).map(([start, end]) => ({ text, start, end })))
    let next = 0
    let inFlight = 0
    let which = 0
    let done = false
    const finish = () => {
      if (done) return
      done = true
      output.off("close", finish)
      resume(Effect.void)
    }
    const pump = () => {
      while (!done) {
        if (stopped() || output.destroyed) return finish()
        if (next >= queue.length) return inFlight === 0 ? finish() : undefined
        // A scratch buffer is reused only once the write that used it has completed.
        if (inFlight >= scratch.length) return
        const { end, start, text } = queue[next++] as { text: string; start: number; end: number }
        const buffer = scratch[which] as Buffer
        which = (which + 1) % scratch.length
        const length = buffer.write(text.slice(start, end), 0, "utf8")
        inFlight++
        output.write(buffer.subarray(0, length), () => {
          inFlight--
          pump()
        })
      }
    }
    output.once("close", finish)
    pump()
    return Effect.sync(() => {
      done = true
      output.off("close", finish)
    })
  })
