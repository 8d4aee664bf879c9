/**
 * Newline-delimited JSON on a byte stream: the sandbox children's pipes carry
 * one JSON object per line. This is the host's reader; everything on it comes
 * from the guest side, so nothing of it is trusted: a line is never
 * accumulated past `maxLineBytes` (the rest of it is dropped unread and
 * reported), and a line that is not a JSON object is reported, not thrown.
 */
import type { Readable } from "node:stream"

import { DEFAULT_MAX_LINE_BYTES } from "../Sandbox.js"

/** @internal */
export interface JsonLinesOptions {
  /** Longest line accepted, in bytes (newline excluded). Default {@link DEFAULT_MAX_LINE_BYTES}. */
  readonly maxLineBytes?: number | undefined
  /** A line longer than the cap was dropped; `bytes` counts what was seen of it. */
  readonly onOversize?: ((bytes: number) => void) | undefined
  /** A line that is not a JSON object was dropped. */
  readonly onMalformed?: ((excerpt: string) => void) | undefined
}

/**
 * Call `onMessage` with each JSON object read from `stream`, in order.
 *
 * @internal
 */
export const onJsonLines = (
  stream: Readable,
  onMessage: (message: Record<string, unknown>) => void,
  options: JsonLinesOptions = {}
): void => {
  const max = Math.max(1, Math.floor(options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES))
  let parts: Array<Buffer> = []
  let size = 0
  /** Bytes of the current line dropped so far (past the cap); -1 while not dropping. */
  let dropped = -1
  const handle = (line: Buffer) => {
    let message: unknown
    try {
      message = JSON.parse(line.toString("utf8"))
    } catch {
      options.onMalformed?.(line.subarray(0, 80).toString("utf8"))
      return
    }
    if (message !== null && typeof message === "object" && !Array.isArray(message)) {
      onMessage(message as Record<string, unknown>)
    } else {
      options.onMalformed?.(line.subarray(0, 80).toString("utf8"))
    }
  }
  const take = (piece: Buffer) => {
    if (dropped >= 0) {
      dropped += piece.length
      return
    }
    if (size + piece.length > max) {
      dropped = size + piece.length
      parts = []
      size = 0
      return
    }
    parts.push(piece)
    size += piece.length
  }
  const endLine = () => {
    if (dropped >= 0) {
      const bytes = dropped
      dropped = -1
      options.onOversize?.(bytes)
      return
    }
    const line = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, size)
    parts = []
    size = 0
    handle(line)
  }
  stream.on("data", (chunk: Buffer | string) => {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : chunk
    let start = 0
    for (let newline = bytes.indexOf(10); newline !== -1; newline = bytes.indexOf(10, start)) {
      take(bytes.subarray(start, newline))
      endLine()
      start = newline + 1
    }
    if (start < bytes.length) take(bytes.subarray(start))
  })
}
