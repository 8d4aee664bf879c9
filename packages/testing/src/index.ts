/**
 * @since 0.2.0
 */
export * as Arbitraries from "./Arbitraries.js"
/**
 * @since 0.2.0
 */
export * as Laws from "./Laws.js"
/**
 * @since 0.2.0
 */
export * as RlmTest from "./RlmTest.js"
