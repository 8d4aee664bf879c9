/**
 * @since 0.1.0
 */
export * as LlmAdapter from "./LlmAdapter.js"
