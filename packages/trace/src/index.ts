/**
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as CachedAdapter from "./CachedAdapter.js"
/**
 * @since 0.1.0
 */
export * as Hash from "./Hash.js"
/**
 * @since 0.1.0
 */
export * as LlmCache from "./LlmCache.js"
/**
 * @since 0.2.0
 */
export * as PrivateFile from "./PrivateFile.js"
/**
 * @since 0.2.0
 */
export * as Replay from "./Replay.js"
/**
 * @since 0.1.0
 */
export * as Trace from "./Trace.js"
/**
 * @since 0.1.0
 */
export * as TraceEvent from "./TraceEvent.js"
/**
 * @since 0.1.0
 */
export * as TraceRecorder from "./TraceRecorder.js"
/**
 * @since 0.2.0
 */
export * as TraceView from "./TraceView.js"
