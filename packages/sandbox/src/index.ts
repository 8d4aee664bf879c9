/**
 * @since 0.1.0
 */
export * as JavascriptSandbox from "./JavascriptSandbox.js"
/**
 * @since 0.1.0
 */
export * as Output from "./Output.js"
/**
 * @since 0.1.0
 */
export * as PythonSandbox from "./PythonSandbox.js"
/**
 * @since 0.1.0
 */
export * as Sandbox from "./Sandbox.js"
