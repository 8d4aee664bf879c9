import * as Q from "quickjs-emscripten"
import { PRELUDE } from "./src/internal/javascriptPrelude.js"
const m1 = await Q.newQuickJSAsyncWASMModule()
const rt = m1.newRuntime()
const ctx = rt.newContext()
const steps = process.argv.slice(2)
if (steps.includes("mem")) rt.setMemoryLimit(64 * 1024 * 1024)
rt.setMaxStackSize(131072)
if (steps.includes("ih")) rt.setInterruptHandler(() => false)
if (steps.includes("prelude")) {
  const inst = ctx.unwrapResult(ctx.evalCode(PRELUDE, "<prelude>", { type: "global", strict: true }))
  const raw = ctx.newObject()
  if (steps.includes("call")) { const p = ctx.newString("hello"); const lim = ctx.newNumber(100); const r = ctx.callFunction(inst, ctx.undefined, p, ctx.undefined, raw, lim); console.log("installed", !!r.value) }
}
if (steps.includes("strictEval")) ctx.unwrapResult(ctx.evalCode("(function(){ 'use strict'; return 1 })", "<x>", { type: "global", strict: true }))
await new Promise(r => setImmediate(r))
try { const r = await ctx.evalCodeAsync("var d=0; function r(n){d=n; return r(n+1)+1}; try { r(0) } catch(e) { String(e)+d }")
console.log(steps.join(","), ctx.dump(r.value ?? r.error)) } catch (e) { console.log(steps.join(","), "HOST", (e as Error).message) }
