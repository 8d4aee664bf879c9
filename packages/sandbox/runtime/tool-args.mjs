// @ts-check
/**
 * The check both interpreter children make on a host tool call's arguments
 * before they cross to the host (the host checks them again with the tool's
 * Schema): a JSON object keyed by parameter name, no string longer than the
 * prompt cap, nested at most `MAX_ARGS_DEPTH` deep.
 */

/** How deep a call's arguments may nest (the host refuses deeper ones too). */
export const MAX_ARGS_DEPTH = 64

/** What a call whose arguments are not an object is told. */
export const INVALID_CALL = "invalid host call"

/**
 * Why a call's arguments are refused, or undefined.
 *
 * @param {unknown} args the decoded JSON arguments
 * @param {number} cap the longest string allowed, in the guest's characters
 * @param {(text: string, cap: number) => number} count the guest's length of a string
 * @returns {string | undefined}
 */
export const refuseArgs = (args, cap, count = (text) => text.length) => {
  if (args === null || typeof args !== "object" || Array.isArray(args)) return INVALID_CALL
  /** @type {Array<[unknown, number, string, number]>} */
  const stack = Object.keys(args).map((key) => [/** @type {Record<string, unknown>} */ (args)[key], 1, key, -1])
  while (stack.length > 0) {
    const [value, depth, key, index] = /** @type {[unknown, number, string, number]} */ (stack.pop())
    if (typeof value === "string") {
      const n = count(value, cap)
      if (n <= cap) continue
      const what =
        depth === 1 ? `the ${key}` : depth === 2 && index >= 0 ? `item ${index} of ${key}` : `a string in ${key}`
      return `${what} has ${n} characters; the limit is ${cap}`
    }
    if (value === null || typeof value !== "object") continue
    if (depth >= MAX_ARGS_DEPTH) return `the arguments are nested more than ${MAX_ARGS_DEPTH} deep`
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) stack.push([value[i], depth + 1, key, i])
    } else {
      const object = /** @type {Record<string, unknown>} */ (value)
      for (const k of Object.keys(object)) stack.push([object[k], depth + 1, key, -1])
    }
  }
  return undefined
}
