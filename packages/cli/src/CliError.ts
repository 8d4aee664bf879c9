/**
 * Why `rlm` stopped without an answer. Each reason has its own process exit
 * code, so scripts can tell a usage mistake from a budget hit.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"

/**
 * - `Usage`: a flag is missing, unknown or out of range (exit 2).
 * - `Input`: `--context`, `--fake` or `--prices` could not be read or decoded (exit 2).
 * - `Budget`: a policy limit was hit (exit 3).
 * - `Model`: the model provider failed (exit 1).
 * - `Sandbox`: the REPL failed (exit 1).
 * - `Isolation`: `--isolation strict` and the machine cannot give the OS wall
 *   (bubblewrap or unshare) the sandbox needs for it (exit 4).
 * - `Trace`: the `--trace` file could not be written (exit 1).
 * - `Replay`: `rlm replay` left the recorded run (a `ReplayDivergence`) or the
 *   trace was changed after it was recorded (`TraceTampered`) (exit 5).
 * - `Internal`: a bug (exit 70).
 *
 * @since 0.1.0
 * @category Models
 */
export type Reason = "Usage" | "Input" | "Budget" | "Model" | "Sandbox" | "Isolation" | "Trace" | "Replay" | "Internal"

/**
 * The exit code of each reason.
 *
 * @since 0.1.0
 * @category Constants
 */
export const exitCodes: Readonly<Record<Reason, number>> = {
  Usage: 2,
  Input: 2,
  Budget: 3,
  Model: 1,
  Sandbox: 1,
  Isolation: 4,
  Trace: 1,
  Replay: 5,
  Internal: 70
}

/**
 * The exit code of an interrupted run (Ctrl-C), as shells report SIGINT.
 *
 * @since 0.1.0
 * @category Constants
 */
export const interruptedExitCode = 130

/**
 * A failed `rlm` command. `message` is one line a user can act on; it is
 * printed to stderr as `rlm: <message>`.
 *
 * @since 0.1.0
 * @category Errors
 */
export class CliError extends Data.TaggedError("CliError")<{
  readonly reason: Reason
  readonly message: string
}> {
  /**
   * @since 0.1.0
   */
  get exitCode(): number {
    return exitCodes[this.reason]
  }
}
