/**
 * @since 0.1.0
 */
export * as Method from "./Method.js"
/**
 * @since 0.1.0
 */
export * as Random from "./Random.js"
/**
 * @since 0.1.0
 */
export * as Report from "./Report.js"
/**
 * @since 0.1.0
 */
export * as Result from "./Result.js"
/**
 * @since 0.1.0
 */
export * as Runner from "./Runner.js"
/**
 * @since 0.1.0
 */
export * as Task from "./Task.js"
/**
 * @since 0.1.0
 */
export * as Tasks from "./Tasks.js"
/**
 * @since 0.1.0
 */
export * as CodeQa from "./tasks/CodeQa.js"
/**
 * @since 0.1.0
 */
export * as Multidoc from "./tasks/Multidoc.js"
/**
 * @since 0.1.0
 */
export * as Oolong from "./tasks/Oolong.js"
/**
 * @since 0.1.0
 */
export * as Pairs from "./tasks/Pairs.js"
/**
 * @since 0.1.0
 */
export * as Sniah from "./tasks/Sniah.js"
