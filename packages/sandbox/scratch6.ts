import * as Q from "quickjs-emscripten"
import { createRequire } from "node:module"
import { readFile } from "node:fs/promises"
import * as v8 from "node:v8"
const require = createRequire(import.meta.url)
const core = require.resolve("quickjs-emscripten")
const wasmPath = createRequire(core).resolve("@jitl/quickjs-wasmfile-release-asyncify/wasm")
const bytes = await readFile(wasmPath)
let t = performance.now()
if (process.argv[2] === "turbo") v8.setFlagsFromString("--no-liftoff"), v8.setFlagsFromString("--no-wasm-lazy-compilation")
const wasm = await WebAssembly.compile(bytes)
if (process.argv[2] === "turbo") v8.setFlagsFromString("--liftoff"), v8.setFlagsFromString("--wasm-lazy-compilation")
console.log("compile ms", (performance.now() - t).toFixed(0))
for (let k = 0; k < 3; k++) {
t = performance.now()
const m1 = await Q.newQuickJSAsyncWASMModuleFromVariant(Q.newVariant(Q.RELEASE_ASYNC, { wasmModule: wasm }))
const rt = m1.newRuntime()
const ctx = rt.newContext()
rt.setMaxStackSize(Number(process.env.SS ?? 131072))
console.log("instance+ctx ms", (performance.now() - t).toFixed(1))
const L = Array.from({ length: 100 }, (_, i) => `const v${i} = ${i};`).join("")
const inst = ctx.unwrapResult(ctx.evalCode(`(function(){ "use strict"; return 0; ${L} })`))
ctx.callFunction(inst, ctx.undefined)
await new Promise(r => setImmediate(r))
try { const r = await ctx.evalCodeAsync("var d=0; function r(n){d=n; return r(n+1)+1}; try { r(0) } catch(e) { String(e)+d }")
console.log(ctx.dump(r.value ?? r.error)) } catch (e) { console.log("HOST", (e as Error).message) }
}
