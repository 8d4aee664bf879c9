/**
 * Helpers shared by the JavaScript child's tests and their fixtures.
 */
import { readdirSync, readFileSync } from "node:fs"

/** The pids of this process's descendants whose command line names the JavaScript child. */
export const childPids = (): Array<number> => {
  const found: Array<number> = []
  const walk = (pid: number) => {
    let children: Array<number> = []
    try {
      for (const task of readdirSync(`/proc/${pid}/task`)) {
        const text = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim()
        if (text !== "") children = children.concat(text.split(/\s+/).map(Number))
      }
    } catch {
      return
    }
    for (const child of children) {
      try {
        if (readFileSync(`/proc/${child}/cmdline`, "utf8").includes("javascript-child.mjs")) found.push(child)
      } catch {
        // gone meanwhile
      }
      walk(child)
    }
  }
  walk(process.pid)
  return found
}

export const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"))
  } catch {
    return false
  }
}
