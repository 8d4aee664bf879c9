import * as Q from "quickjs-emscripten"
import { createRequire } from "node:module"
import { readFile } from "node:fs/promises"
const mode = process.argv[2]
let m1
if (mode === "variant") {
  const require = createRequire(import.meta.url)
  const core = require.resolve("quickjs-emscripten")
  const wasmPath = createRequire(core).resolve("@jitl/quickjs-wasmfile-release-asyncify/wasm")
  const wasm = await WebAssembly.compile(await readFile(wasmPath))
  m1 = await Q.newQuickJSAsyncWASMModuleFromVariant(Q.newVariant(Q.RELEASE_ASYNC, { wasmModule: wasm }))
} else m1 = await Q.newQuickJSAsyncWASMModule()
const rt = m1.newRuntime()
const ctx = rt.newContext()
rt.setMaxStackSize(131072)
await new Promise(r => setImmediate(r))
try { const r = await ctx.evalCodeAsync("var d=0; function r(n){d=n; return r(n+1)+1}; try { r(0) } catch(e) { String(e)+d }", "x", mode === "global" ? { type: "global" } : undefined)
console.log(mode, ctx.dump(r.value ?? r.error)) } catch (e) { console.log(mode, "HOST", (e as Error).message) }
