// Types of json-lines.mjs (plain JavaScript shared by the sandbox child and the host).
import type { Readable } from "node:stream"
export declare const onJsonLines: (stream: Readable, onMessage: (message: Record<string, any>) => void) => void
