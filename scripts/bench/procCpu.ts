/**
 * CPU time of processes, read from Linux's `/proc` (the benches' helpers):
 * elsewhere every figure reads 0 and no process has descendants.
 */
import { readdirSync, readFileSync } from "node:fs"

/** Nanoseconds of CPU of every thread of `pid` (Linux), 0 where unreadable. */
export const cpuNs = (pid: number | "self"): number => {
  try {
    return readdirSync(`/proc/${pid}/task`).reduce(
      (sum, tid) => sum + Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]),
      0
    )
  } catch {
    return 0
  }
}

/** The pids under `root` (Linux), from each process's parent in `/proc/<pid>/stat`. */
export const descendants = (root: number): Array<number> => {
  const children = new Map<number, Array<number>>()
  let entries: Array<string> = []
  try {
    entries = readdirSync("/proc").filter((name) => /^\d+$/.test(name))
  } catch {
    return []
  }
  for (const name of entries) {
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8")
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
      children.set(parent, [...(children.get(parent) ?? []), Number(name)])
    } catch {}
  }
  const out: Array<number> = []
  const walk = (pid: number): void => {
    for (const child of children.get(pid) ?? []) {
      out.push(child)
      walk(child)
    }
  }
  walk(root)
  return out
}
