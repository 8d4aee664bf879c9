/**
 * `rlm trace view TRACE [--out FILE]`: a trace (JSON or JSONL) as one
 * self-contained HTML page (`@rlm-runtime/trace/TraceView`).
 *
 * @since 0.2.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as PrivateFile from "@rlm-runtime/trace/PrivateFile"
import * as Trace from "@rlm-runtime/trace/Trace"
import * as TraceView from "@rlm-runtime/trace/TraceView"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { CliError } from "./CliError.js"

/**
 * The arguments of `rlm trace view`.
 *
 * @since 0.2.0
 * @category Models
 */
export interface ViewFlags {
  /** The trace file: a JSON document (`rlm run --trace`) or JSONL events. */
  readonly trace: string
  /** Where to write the HTML page. */
  readonly out: string
  readonly quiet: boolean
}

/**
 * The default `--out` of `rlm trace view`.
 *
 * @since 0.2.0
 * @category Constants
 */
export const defaultOut = "trace.html"

/**
 * Read the trace, render it and write the page (mode 0600, as it holds the
 * trace's text). A file that cannot be read or is not a trace fails with a
 * `CliError` "Input" (exit 2), a page that cannot be written with "Trace"
 * (exit 1).
 *
 * @since 0.2.0
 * @category Running
 */
export const view = Effect.fn("TraceViewCommand.view")(function* (flags: ViewFlags) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const text = yield* fs.readFileString(flags.trace).pipe(
    Effect.mapError(
      (e) =>
        new CliError({
          reason: "Input",
          message: `could not read the trace ${JSON.stringify(flags.trace)}: ${e.message}`
        })
    )
  )
  const trace = yield* Trace.decodeText(text).pipe(
    Effect.mapError(
      (e) =>
        new CliError({
          reason: "Input",
          message: `${JSON.stringify(flags.trace)} is not a readable trace (${e.reason}${
            e.line !== undefined ? `, line ${e.line}` : ""
          }): ${e.message}`
        })
    )
  )
  const dir = path.dirname(path.resolve(flags.out))
  if (!(yield* fs.exists(dir).pipe(Effect.orElseSucceed(() => false)))) {
    return yield* new CliError({
      reason: "Input",
      message: `the --out directory ${JSON.stringify(dir)} does not exist; create it or pick another path.`
    })
  }
  const html = TraceView.render(trace)
  yield* PrivateFile.writeFileString(flags.out, html).pipe(
    Effect.provideService(FileSystem.FileSystem, fs),
    Effect.mapError(
      (e) => new CliError({ reason: "Trace", message: `could not write ${JSON.stringify(flags.out)}: ${e.message}` })
    )
  )
  if (!flags.quiet) {
    const runs = Trace.runs(trace).length
    yield* Console.error(
      `rlm: trace view written to ${flags.out} (${runs} run${runs === 1 ? "" : "s"}, ${trace.events.length} events)`
    )
  }
})

/**
 * `rlm trace` with its `view` subcommand.
 *
 * @since 0.2.0
 * @category Commands
 */
export const command = Command.make("trace", {}, () =>
  Effect.fail(new CliError({ reason: "Usage", message: "missing command: try `rlm trace view --help`." }))
).pipe(
  Command.withDescription("Work with trace files written by `rlm run --trace`."),
  Command.withSubcommands([
    Command.make(
      "view",
      {
        trace: Args.text({ name: "TRACE" }).pipe(
          Args.withDescription("The trace file: JSON (`rlm run --trace`) or JSONL (one event per line).")
        ),
        out: Options.text("out").pipe(
          Options.withAlias("o"),
          Options.withDefault(defaultOut),
          Options.withDescription("Where to write the HTML page (one self-contained file, no network).")
        ),
        quiet: Options.boolean("quiet").pipe(Options.withDescription("No line on stderr."))
      },
      view
    ).pipe(
      Command.withDescription(
        "Write the trace as one self-contained HTML page: the run tree, each step's reply, code and output, the sub-calls, a timeline and the totals."
      )
    )
  ])
)
