const t0 = performance.now()
await import("effect/Effect"); await import("effect/Schema"); await import("@effect/cli/Command")
const t1 = performance.now()
const which = process.argv[2]
if (which === "ctx") await import("@effect/platform-node/NodeContext")
else { await import("@effect/platform-node/NodeFileSystem"); await import("@effect/platform-node/NodePath"); await import("@effect/platform-node/NodeTerminal") }
console.log(which, "base", (t1-t0).toFixed(0), "extra", (performance.now()-t1).toFixed(0))
