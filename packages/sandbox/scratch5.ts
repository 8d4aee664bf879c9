import * as Q from "quickjs-emscripten"
import { PRELUDE } from "./src/internal/javascriptPrelude.js"
const cut = Number(process.argv[2])
const lines = PRELUDE.split("\n")
const src = [...lines.slice(0, cut), "return 0;", ...lines.slice(cut)].join("\n")
const m1 = await Q.newQuickJSAsyncWASMModule()
const rt = m1.newRuntime()
const ctx = rt.newContext()
rt.setMaxStackSize(131072)
const inst = ctx.unwrapResult(ctx.evalCode(src, "<prelude>", { type: "global", strict: true }))
const p = ctx.newString("hello"); const lim = ctx.newNumber(100); const raw = ctx.newObject()
const r0 = ctx.callFunction(inst, ctx.undefined, p, ctx.undefined, raw, lim)
await new Promise(r => setImmediate(r))
try { const r = await ctx.evalCodeAsync("var d=0; function r(n){d=n; return r(n+1)+1}; try { r(0) } catch(e) { String(e)+d }")
console.log(cut, lines[cut-1]?.slice(0,80), "=>", ctx.dump(r.value ?? r.error)) } catch (e) { console.log(cut, lines[cut-1]?.slice(0, 80), "HOST", (e as Error).message) }
