/**
 * @since 0.1.0
 */
export * as Admission from "./Admission.js"

/**
 * @since 0.1.0
 */
export * as ApiError from "./ApiError.js"

/**
 * @since 0.1.0
 */
export * as ContextStore from "./ContextStore.js"

/**
 * @since 0.1.0
 */
export * as LazySandbox from "./LazySandbox.js"

/**
 * @since 0.1.0
 */
export * as OpenAiChat from "./OpenAiChat.js"

/**
 * @since 0.1.0
 */
export * as RunRegistry from "./RunRegistry.js"

/**
 * @since 0.1.0
 */
export * as Sessions from "./Sessions.js"

/**
 * @since 0.1.0
 */
export * as Server from "./Server.js"

/**
 * @since 0.1.0
 */
export * as ServerApi from "./ServerApi.js"
