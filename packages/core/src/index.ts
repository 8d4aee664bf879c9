/**
 * @since 0.1.0
 */
export * as Budget from "./Budget.js"
/**
 * @since 0.2.0
 */
export * as HostTools from "./HostTools.js"
/**
 * @since 0.2.0
 */
export * as ModelCall from "./ModelCall.js"
/**
 * @since 0.1.0
 */
export * as Policy from "./Policy.js"
/**
 * @since 0.1.0
 */
export * as Prompts from "./Prompts.js"
/**
 * @since 0.1.0
 */
export * as Protocol from "./Protocol.js"
/**
 * @since 0.1.0
 */
export * as Rlm from "./Rlm.js"
/**
 * @since 0.1.0
 */
export * as RlmContext from "./RlmContext.js"
/**
 * @since 0.1.0
 */
export * as RlmError from "./RlmError.js"
/**
 * @since 0.2.0
 */
export * as RlmLanguageModel from "./RlmLanguageModel.js"
/**
 * @since 0.2.0
 */
export * as RunEvent from "./RunEvent.js"
/**
 * @since 0.3.0
 */
export * as Session from "./Session.js"
/**
 * @since 0.2.0
 */
export * as Step from "./Step.js"
/**
 * @since 0.2.0
 */
export * as ToolProtocol from "./ToolProtocol.js"
/**
 * @since 0.2.0
 */
export * as Tracing from "./Tracing.js"
