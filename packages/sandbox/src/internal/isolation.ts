// STUB: replaced by the lead's version at merge
import { readFileSync } from "node:fs"
import * as Effect from "effect/Effect"
import type { Isolation, IsolationMode, SandboxError } from "../Sandbox.js"

/** @internal */
export interface WrapSpec {
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly readable: ReadonlyArray<string>
  readonly cwd: string
  readonly memoryBytes?: number | undefined
}

/** @internal */
export interface Wall {
  readonly isolation: Isolation
  readonly tool: "bwrap" | "unshare" | "none"
  readonly wrap: (spec: WrapSpec) => { readonly command: string; readonly args: ReadonlyArray<string> }
}

/** @internal */
export const resolveWall = (_mode: IsolationMode): Effect.Effect<Wall, SandboxError> =>
  Effect.succeed({
    isolation: "process",
    tool: "none",
    wrap: (spec) => ({ command: spec.command, args: spec.args })
  })

/** @internal */
export const treePeakRssMb = (pid: number): number | undefined => {
  try {
    const match = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
    return match?.[1] === undefined ? undefined : Number(match[1]) / 1024
  } catch {
    return undefined
  }
}
