/**
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as Cli from "./Cli.js"

/**
 * @since 0.1.0
 */
export * as CliError from "./CliError.js"

/**
 * @since 0.1.0
 */
export * as Progress from "./Progress.js"

/**
 * @since 0.2.0
 */
export * as TerminalText from "./TerminalText.js"

/**
 * @since 0.2.0
 */
export * as TraceViewCommand from "./TraceViewCommand.js"

/**
 * @since 0.3.0
 */
export * as EvalCommand from "./EvalCommand.js"

/**
 * @since 0.3.0
 */
export * as ServeCommand from "./ServeCommand.js"
