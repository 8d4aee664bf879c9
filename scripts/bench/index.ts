/**
 * Benchmarks: `pnpm bench <sandbox|subcalls|loop|pythonFresh|serve>`. Each prints `BENCH ...` lines
 * with figures measured in the same run.
 */
const which = process.argv[2]
const benches: Record<string, () => Promise<unknown>> = {
  sandbox: () => import("./sandbox.js"),
  subcalls: () => import("./subcalls.js"),
  loop: () => import("./loop.js"),
  pythonFresh: () => import("./pythonFresh.js"),
  serve: () => import("./serve.js")
}
const load = which ? benches[which] : undefined
if (!load) {
  console.error(`usage: pnpm bench <${Object.keys(benches).join("|")}>`)
  process.exit(2)
}
await load()
