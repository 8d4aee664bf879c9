/**
 * Helpers shared by the JavaScript child's tests and their fixtures.
 */
import { readdirSync, readFileSync } from "node:fs"

const childrenOf = (pid: number): Array<number> => {
  let children: Array<number> = []
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim()
      if (text !== "") children = children.concat(text.split(/\s+/).map(Number))
    }
  } catch {
    // gone meanwhile
  }
  return children
}

const runsChild = (pid: number): boolean => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("javascript-child.mjs")
  } catch {
    return false
  }
}

/**
 * The interpreter processes this process spawned (the outermost process whose
 * command line names the JavaScript child: node itself, or the OS wall's
 * bwrap around it).
 */
export const childPids = (): Array<number> => {
  const found: Array<number> = []
  const walk = (pid: number) => {
    for (const child of childrenOf(pid)) {
      if (runsChild(child)) found.push(child)
      else walk(child)
    }
  }
  walk(process.pid)
  return found
}

/** `pid` and all its descendants. */
export const processTree = (pid: number): Array<number> => [pid, ...childrenOf(pid).flatMap(processTree)]

export const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"))
  } catch {
    return false
  }
}
