/**
 * @since 0.1.0
 */
export * as TraceEvent from "./TraceEvent.js"
