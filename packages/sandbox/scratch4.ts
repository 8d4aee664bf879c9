import * as Q from "quickjs-emscripten"
const m1 = await Q.newQuickJSAsyncWASMModule()
const rt = m1.newRuntime()
const ctx = rt.newContext()
rt.setMaxStackSize(Number(process.env.SS ?? 131072))
const src = process.argv[2]!
const inst = ctx.unwrapResult(ctx.evalCode(src, "<prelude>", { type: "global", strict: true }))
const a = process.argv[3] ? [ctx.newString("hello"), ctx.undefined, ctx.newObject(), ctx.newNumber(100)] : []; const r0 = ctx.callFunction(inst, ctx.undefined, ...a)
console.log("called", r0.error ? ctx.dump(r0.error) : "ok")
if (process.env.RESET) rt.setMaxStackSize(Number(process.env.SS ?? 131072))
await new Promise(r => setImmediate(r))
Error.stackTraceLimit = Infinity
try { const r = await ctx.evalCodeAsync("var d=0; function r(n){d=n; return r(n+1)+1}; try { r(0) } catch(e) { String(e)+d }")
console.log(ctx.dump(r.value ?? r.error)) } catch (e) { console.log("HOST", (e as Error).message, (e as Error).stack!.split("\n").length, [...new Set((e as Error).stack!.split("\n").map(l => l.replace(/:0x[0-9a-f]+\)?$/, "")))].slice(0, 12).join(" / ")) }
