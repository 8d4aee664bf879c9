/**
 * @since 0.1.0
 */

/**
 * @since 0.2.0
 */
export * as AttemptObserver from "./AttemptObserver.js"
/**
 * @since 0.2.0
 */
export * as CallSite from "./CallSite.js"

/**
 * @since 0.1.0
 */
export * as EffectAiAdapter from "./EffectAiAdapter.js"
/**
 * @since 0.1.0
 */
export * as FakeAdapter from "./FakeAdapter.js"

/**
 * @since 0.1.0
 */
export * as GenericChatAdapter from "./GenericChatAdapter.js"
/**
 * @since 0.1.0
 */
export * as LlmAdapter from "./LlmAdapter.js"
/**
 * @since 0.1.0
 */
export * as OpenAICompatAdapter from "./OpenAICompatAdapter.js"
