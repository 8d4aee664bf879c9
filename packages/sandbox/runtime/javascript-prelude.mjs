// The guest side of the JavaScript REPL (plain JavaScript, read by
// runtime/javascript-child.mjs), evaluated once per session inside QuickJS.
/**
 * It is a function expression called with the prompt, the documents, the raw
 * host functions, the output limit and the answer and prompt caps; it installs the helpers on the
 * global object as non-configurable accessors (read-only for model code) and
 * returns a control object the host uses between blocks. The raw host
 * functions stay in this closure; they never appear on the global object.
 *
 * Every intrinsic the helpers use is captured before model code runs, so model
 * code that pollutes prototypes (`String.prototype.indexOf = ...`) does not
 * change what the helpers return.
 */

export const PRELUDE = String.raw`(function (P, documents, raw, outputLimit, maxAnswerChars, maxPromptChars, toolsJson) {
  "use strict";
  const G = globalThis;
  const apply = Reflect.apply;
  const defineProperty = Object.defineProperty;
  const getOwnPropertyNames = Object.getOwnPropertyNames;
  const getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
  const getPrototypeOf = Object.getPrototypeOf;
  const freeze = Object.freeze;
  const create = Object.create;
  const keysOf = Object.keys;
  const isArray = Array.isArray;
  const StringC = String;
  const NumberC = Number;
  const F64 = Float64Array;
  const TypeErrorC = TypeError;
  const RangeErrorC = RangeError;
  const ReferenceErrorC = ReferenceError;
  const ErrorC = Error;
  const MapC = Map;
  const SetC = Set;
  const DateC = Date;
  const RegExpC = RegExp;
  const PromiseC = Promise;
  const isView = ArrayBuffer.isView;
  const sIndexOf = String.prototype.indexOf;
  const sSlice = String.prototype.slice;
  const aJoin = Array.prototype.join;
  const aSlice = Array.prototype.slice;
  const symToString = Symbol.prototype.toString;
  const dateToISO = Date.prototype.toISOString;
  const reToString = RegExp.prototype.toString;
  const mapForEach = Map.prototype.forEach;
  const setForEach = Set.prototype.forEach;
  const mapSize = getOwnPropertyDescriptor(Map.prototype, "size").get;
  const setSize = getOwnPropertyDescriptor(Set.prototype, "size").get;
  const jsonStringify = JSON.stringify;
  const jsonParse = JSON.parse;
  const globalEval = G.eval;
  const MathMin = Math.min;
  const MathMax = Math.max;
  const MathFloor = Math.floor;
  const hostQuery = raw.query;
  const hostFind = raw.find;
  const IDENT = /^[A-Za-z_$][\w$]*$/;
  const reTest = RegExp.prototype.test;
  const hasOwn = Object.prototype.hasOwnProperty;
  // Guest objects are read through own data properties (an inherited getter could loop).
  const own = (o, k) => apply(hasOwn, o, [k]);

  const push = (array, value) => {
    defineProperty(array, array.length, { __proto__: null, value, writable: true, enumerable: true, configurable: true });
  };
  const isIdent = (name) => apply(reTest, IDENT, [name]);

  // --- output capture: keep a prefix up to the limit, count the rest --------
  const limit = outputLimit;
  const newStream = () => ({ __proto__: null, parts: [], used: 0, omitted: 0 });
  let out = newStream();
  let err = newStream();
  const write = (stream, s) => {
    const room = limit - stream.used;
    if (s.length <= room) {
      push(stream.parts, s);
      stream.used += s.length;
    } else {
      if (room > 0) push(stream.parts, apply(sSlice, s, [0, room]));
      stream.used = limit;
      stream.omitted += s.length - MathMax(room, 0);
    }
  };
  const joinParts = (parts) => apply(aJoin, parts, [""]);

  // --- formatting -----------------------------------------------------------
  const MAX_ITEMS = 1000;
  const MAX_NESTED_STRING = 10000;
  const MAX_DEPTH = 6;
  const quote = (s) => s.length > MAX_NESTED_STRING
    ? jsonStringify(apply(sSlice, s, [0, MAX_NESTED_STRING])) + "... " + (s.length - MAX_NESTED_STRING) + " more characters"
    : jsonStringify(s);
  const keyRepr = (k) => isIdent(k) ? k : jsonStringify(k);
  const typeName = (v) => {
    if (v === null) return "null";
    if (isArray(v)) return "array";
    const t = typeof v;
    if (t !== "object") return t;
    try {
      const proto = getPrototypeOf(v);
      if (proto === null) return "object";
      const ctor = getOwnPropertyDescriptor(proto, "constructor");
      const name = ctor && own(ctor, "value") && typeof ctor.value === "function" ? ctor.value.name : "";
      return typeof name === "string" && name !== "" && name !== "Object" ? name : "object";
    } catch (e) {
      return "object";
    }
  };
  const inspect = (v, depth, seen, nested) => {
    switch (typeof v) {
      case "string": return nested ? quote(v) : v;
      case "number": case "boolean": case "undefined": return StringC(v);
      case "bigint": return StringC(v) + "n";
      case "symbol": return apply(symToString, v, []);
      case "function": return "[Function: " + (v.name || "anonymous") + "]";
    }
    if (v === null) return "null";
    for (let i = 0; i < seen.length; i++) if (seen[i] === v) return "[Circular]";
    if (depth > MAX_DEPTH) return isArray(v) ? "[Array]" : "[Object]";
    const inner = [];
    push(seen, v);
    try {
      if (v instanceof ErrorC) return StringC(v.name) + ": " + StringC(v.message);
      if (v instanceof DateC) { try { return apply(dateToISO, v, []); } catch (e) { return "Invalid Date"; } }
      if (v instanceof RegExpC) return apply(reToString, v, []);
      if (v instanceof PromiseC) return "Promise {}";
      if (v instanceof MapC) {
        let count = 0;
        apply(mapForEach, v, [(value, key) => {
          if (count++ < MAX_ITEMS) push(inner, inspect(key, depth + 1, seen, true) + " => " + inspect(value, depth + 1, seen, true));
        }]);
        if (count > MAX_ITEMS) push(inner, "... " + (count - MAX_ITEMS) + " more items");
        return "Map(" + apply(mapSize, v, []) + ") {" + apply(aJoin, inner, [", "]) + "}";
      }
      if (v instanceof SetC) {
        let count = 0;
        apply(setForEach, v, [(value) => {
          if (count++ < MAX_ITEMS) push(inner, inspect(value, depth + 1, seen, true));
        }]);
        if (count > MAX_ITEMS) push(inner, "... " + (count - MAX_ITEMS) + " more items");
        return "Set(" + apply(setSize, v, []) + ") {" + apply(aJoin, inner, [", "]) + "}";
      }
      if (isArray(v) || isView(v)) {
        const n = v.length;
        for (let i = 0; i < n && i < MAX_ITEMS; i++) push(inner, inspect(v[i], depth + 1, seen, true));
        if (n > MAX_ITEMS) push(inner, "... " + (n - MAX_ITEMS) + " more items");
        const body = "[" + apply(aJoin, inner, [", "]) + "]";
        return isArray(v) ? body : typeName(v) + "(" + n + ") " + body;
      }
      const keys = keysOf(v);
      for (let i = 0; i < keys.length && i < MAX_ITEMS; i++) {
        push(inner, keyRepr(keys[i]) + ": " + inspect(v[keys[i]], depth + 1, seen, true));
      }
      if (keys.length > MAX_ITEMS) push(inner, "... " + (keys.length - MAX_ITEMS) + " more keys");
      const name = typeName(v);
      const body = inner.length === 0 ? "{}" : "{ " + apply(aJoin, inner, [", "]) + " }";
      return name === "object" ? body : name + " " + body;
    } finally {
      seen.length = seen.length - 1;
    }
  };
  const show = (v) => inspect(v, 0, [], false);
  const emit = (stream, args) => {
    if (stream.used >= limit) {
      // Already full: only count what would have been printed.
      let n = args.length;
      for (let i = 0; i < args.length; i++) {
        const a = args[i];
        n += typeof a === "string" ? a.length : show(a).length;
      }
      stream.omitted += n === 0 ? 1 : n;
      return;
    }
    let line = "";
    for (let i = 0; i < args.length; i++) {
      if (i > 0) line += " ";
      const a = args[i];
      line += typeof a === "string" ? a : show(a);
    }
    write(stream, line + "\n");
  };
  const consoleObject = () => {
    const logOut = function log() { emit(out, arguments); };
    const logErr = function error() { emit(err, arguments); };
    return freeze({ log: logOut, info: logOut, debug: logOut, trace: logOut, dir: logOut, warn: logErr, error: logErr });
  };

  // --- helpers --------------------------------------------------------------
  const toInt = (v, name, fallback) => {
    if (v === undefined) return fallback;
    const n = NumberC(v);
    if (n !== n) throw new TypeErrorC(name + " must be a number, got " + show(v));
    return MathFloor(n);
  };
  const text = P;
  const len = text.length;
  const peek = function peek(n) { return apply(sSlice, text, [0, MathMax(0, toInt(n, "n", 2000))]); };
  const tail = function tail(n) {
    const k = MathMax(0, toInt(n, "n", 2000));
    return k === 0 ? "" : apply(sSlice, text, [MathMax(0, len - k)]);
  };
  const lenP = function lenP() { return len; };
  const slice = function slice(start, end) {
    return apply(sSlice, text, [toInt(start, "start", 0), toInt(end, "end", len)]);
  };
  const find = function find(needle, start) {
    if (typeof needle !== "string") throw new TypeErrorC("find(needle, start = 0): needle must be a string, got " + show(needle));
    const from = MathMax(0, toInt(start, "start", 0));
    if (needle.length === 0) return [];
    if (apply(sIndexOf, needle, ["\u0000"]) !== -1) {
      // The host bridge passes C strings; search NUL-containing needles here.
      const hits = [];
      for (let i = apply(sIndexOf, text, [needle, from]); i !== -1; i = apply(sIndexOf, text, [needle, i + 1])) push(hits, i);
      return hits;
    }
    // slice over a typed array builds a plain array natively (2x faster than Array.from here).
    return apply(aSlice, new F64(hostFind(needle, from)), []);
  };
  const chunk = function chunk(size, overlap) {
    const s = toInt(size, "size", undefined);
    const o = toInt(overlap, "overlap", 0);
    if (s === undefined || s < 1) throw new RangeErrorC("chunk(size, overlap = 0): size must be >= 1, got " + show(size));
    if (o < 0 || o >= s) throw new RangeErrorC("chunk(size, overlap = 0): overlap must satisfy 0 <= overlap < size, got " + show(overlap));
    const result = [];
    const step = s - o;
    for (let i = 0; i < len; i += step) push(result, apply(sSlice, text, [i, i + s]));
    return result;
  };
  // --- host tools: one stub per tool of the session, each calling the one
  // bridge entry with its name and its arguments (an object by parameter
  // name) as JSON; the reply is JSON too (C strings would stop at a NUL).
  // String caps are checked here for a clear error; the child and the host
  // check every string again.
  const stringArg = (tool, param, value) => {
    const s = StringC(value);
    if (s.length > maxPromptChars) {
      throw new RangeErrorC(tool + ": the " + param + " has " + s.length + " characters, more than the limit of " + maxPromptChars);
    }
    return s;
  };
  const stringsArg = (tool, param, value) => {
    if (!isArray(value)) throw new TypeErrorC(tool + "(" + param + "): " + param + " must be an array of strings, got " + show(value));
    const list = [];
    for (let i = 0; i < value.length; i++) {
      const s = StringC(value[i]);
      if (s.length > maxPromptChars) {
        throw new RangeErrorC(tool + ": item " + i + " of " + param + " has " + s.length + " characters, more than the limit of " + maxPromptChars);
      }
      push(list, s);
    }
    return list;
  };
  // Arguments are serialized by hand: JSON.stringify of objects builds
  // internal arrays (model code may have planted getters on Array.prototype)
  // and consults a model-defined toJSON.
  const MAX_ARGS_DEPTH = 64;
  const toJson = (tool, v, depth) => {
    switch (typeof v) {
      case "string": return jsonStringify(v);
      case "boolean": return v ? "true" : "false";
      case "number":
        if (v !== v || v === 1 / 0 || v === -1 / 0) throw new TypeErrorC(tool + ": the arguments must be JSON values, got " + StringC(v));
        return jsonStringify(v);
    }
    if (v === null) return "null";
    if (typeof v !== "object") throw new TypeErrorC(tool + ": the arguments must be JSON values, got " + typeName(v));
    if (depth >= MAX_ARGS_DEPTH) throw new RangeErrorC(tool + ": the arguments are nested more than " + MAX_ARGS_DEPTH + " deep");
    const parts = [];
    if (isArray(v)) {
      const n = v.length;
      for (let i = 0; i < n; i++) push(parts, v[i] === undefined ? "null" : toJson(tool, v[i], depth + 1));
      return "[" + apply(aJoin, parts, [","]) + "]";
    }
    const keys = keysOf(v);
    for (let i = 0; i < keys.length; i++) {
      const value = v[keys[i]];
      if (value !== undefined) push(parts, jsonStringify(keys[i]) + ":" + toJson(tool, value, depth + 1));
    }
    return "{" + apply(aJoin, parts, [","]) + "}";
  };
  const makeTool = (spec) => {
    const name = StringC(spec.name);
    const required = [];
    const optional = [];
    for (let i = 0; i < spec.parameters.length; i++) {
      const p = spec.parameters[i];
      const param = { __proto__: null, name: StringC(p.name), kind: StringC(p.kind), optional: p.optional === true };
      push(param.optional ? optional : required, param);
    }
    const ordered = [];
    for (let i = 0; i < required.length; i++) push(ordered, required[i]);
    for (let i = 0; i < optional.length; i++) push(ordered, optional[i]);
    const n = ordered.length;
    const stub = function () {
      const parts = [];
      for (let i = 0; i < n; i++) {
        const p = ordered[i];
        const value = arguments[i];
        if (value === undefined) {
          if (!p.optional) throw new TypeErrorC(name + ": the argument '" + p.name + "' is missing");
          continue;
        }
        const arg = p.kind === "string" ? stringArg(name, p.name, value) : p.kind === "strings" ? stringsArg(name, p.name, value) : value;
        push(parts, jsonStringify(p.name) + ":" + toJson(name, arg, 1));
      }
      return jsonParse(hostQuery(name, "{" + apply(aJoin, parts, [","]) + "}"));
    };
    const names = [];
    for (let i = 0; i < n; i++) push(names, ordered[i].optional ? ordered[i].name + " = undefined" : ordered[i].name);
    const signature = name + "(" + apply(aJoin, names, [", "]) + ")";
    const description = StringC(spec.description);
    const shown = "function " + signature + " { [host tool] }" + (description === "" ? "" : "\n// " + description);
    defineProperty(stub, "name", { __proto__: null, value: name });
    defineProperty(stub, "length", { __proto__: null, value: required.length });
    defineProperty(stub, "description", { __proto__: null, value: description });
    defineProperty(stub, "toString", { __proto__: null, value: freeze(function toString() { return shown; }) });
    return stub;
  };
  const tools = create(null);
  const toolSpecs = jsonParse(toolsJson);
  for (let i = 0; i < toolSpecs.length; i++) tools[StringC(toolSpecs[i].name)] = makeTool(toolSpecs[i]);

  let finalAnswer = undefined;
  const answerString = (name, v) => {
    const s = typeof v === "string" ? v : show(v);
    if (s.length > maxAnswerChars) {
      throw new RangeErrorC(name + ": the answer has " + s.length + " characters, more than the limit of " + maxAnswerChars + "; answer with a shorter value");
    }
    return s;
  };
  const FINAL = function FINAL(value) {
    finalAnswer = { __proto__: null, source: "FINAL", value: answerString("FINAL", value) };
  };

  // Reserved names, plus the other names the REPL defines, are not user variables.
  const hidden = create(null);
  const baseline = getOwnPropertyNames(G);
  for (let i = 0; i < baseline.length; i++) hidden[baseline[i]] = true;
  hidden.console = true;
  hidden.print = true;

  const lookup = (name) => {
    if (typeof name !== "string" || hidden[name] === true) return { __proto__: null, found: false };
    const d = getOwnPropertyDescriptor(G, name);
    if (d !== undefined) return { __proto__: null, found: true, value: own(d, "value") ? d.value : G[name] };
    if (!isIdent(name)) return { __proto__: null, found: false };
    try {
      return { __proto__: null, found: true, value: globalEval(name) };
    } catch (e) {
      if (e instanceof ReferenceErrorC) return { __proto__: null, found: false };
      throw e;
    }
  };
  const FINAL_VAR = function FINAL_VAR(name) {
    if (typeof name !== "string") throw new TypeErrorC("FINAL_VAR(name): name must be a string (the variable's name), got " + show(name));
    const r = lookup(name);
    if (!r.found) throw new ReferenceErrorC("FINAL_VAR: variable '" + name + "' does not exist; define it first, e.g. const " + (isIdent(name) ? name : "answer") + " = ...");
    finalAnswer = { __proto__: null, source: "FINAL_VAR", name, value: answerString("FINAL_VAR", r.value) };
  };
  const userVars = () => {
    const names = getOwnPropertyNames(G);
    const result = [];
    for (let i = 0; i < names.length; i++) {
      const name = names[i];
      if (hidden[name] === true) continue;
      const d = getOwnPropertyDescriptor(G, name);
      push(result, { __proto__: null, name, type: d && own(d, "value") ? typeName(d.value) : "accessor" });
    }
    return result;
  };
  let lastShown = undefined;
  const SHOW_VARS = function SHOW_VARS() {
    const vars = userVars();
    const shown = create(null);
    if (vars.length === 0) write(out, "(no user variables)\n");
    for (let i = 0; i < vars.length; i++) {
      write(out, vars[i].name + ": " + vars[i].type + "\n");
      shown[vars[i].name] = vars[i].type;
    }
    lastShown = shown;
    return shown;
  };

  const contextValue = documents === undefined ? text : freeze(documents);
  const helpers = { P: text, context: contextValue, peek, tail, lenP, slice, find, chunk, FINAL, FINAL_VAR, SHOW_VARS };
  const toolNames = keysOf(tools);
  for (let i = 0; i < toolNames.length; i++) {
    if (own(helpers, toolNames[i])) throw new TypeErrorC("the tool name '" + toolNames[i] + "' is taken");
    helpers[toolNames[i]] = tools[toolNames[i]];
  }
  const names = keysOf(helpers);
  for (let i = 0; i < names.length; i++) {
    const name = names[i];
    const value = helpers[name];
    if (typeof value === "function") freeze(value);
    hidden[name] = true;
    defineProperty(G, name, {
      __proto__: null,
      get: freeze(function () { return value; }),
      set: freeze(function () {
        throw new TypeErrorC("'" + name + "' is reserved by the REPL and cannot be reassigned; use another name");
      }),
      enumerable: false,
      configurable: false
    });
  }
  const restoreGlobals = () => {
    // Fails only if model code froze the global object; then its own console stays.
    try {
      defineProperty(G, "console", { __proto__: null, value: consoleObject(), writable: true, enumerable: false, configurable: true });
    } catch (e) {}
    try {
      defineProperty(G, "print", { __proto__: null, value: consoleObject().log, writable: true, enumerable: false, configurable: true });
    } catch (e) {}
  };
  restoreGlobals();

  return freeze({
    begin: () => {
      out = newStream();
      err = newStream();
      finalAnswer = undefined;
      lastShown = undefined;
      restoreGlobals();
    },
    echo: (value) => {
      if (value === undefined || value === lastShown) return;
      write(out, (typeof value === "string" ? jsonStringify(value) : show(value)) + "\n");
    },
    end: () => {
      restoreGlobals();
      // Serialized by hand: JSON.stringify of objects would consult a
      // model-defined Object.prototype.toJSON and let it forge the result.
      let final = "null";
      if (finalAnswer !== undefined) {
        final = "{\"source\":" + jsonStringify(finalAnswer.source) + ",\"value\":" + jsonStringify(finalAnswer.value) +
          (finalAnswer.name === undefined ? "" : ",\"name\":" + jsonStringify(finalAnswer.name)) + "}";
      }
      return "{\"stdout\":" + jsonStringify(joinParts(out.parts)) + ",\"stdoutOmitted\":" + jsonStringify(out.omitted) +
        ",\"stderr\":" + jsonStringify(joinParts(err.parts)) + ",\"stderrOmitted\":" + jsonStringify(err.omitted) +
        ",\"final\":" + final + "}";
    },
    describe: (e) => {
      if (e instanceof ErrorC) {
        let s = StringC(e.name) + ": " + StringC(e.message);
        if (typeof e.stack === "string" && e.stack !== "") s += "\n" + e.stack;
        return s;
      }
      return "Uncaught " + (typeof e === "string" ? jsonStringify(e) : show(e));
    },
    getVar: (name) => {
      const r = lookup(name);
      return r.found ? (typeof r.value === "string" ? r.value : show(r.value)) : undefined;
    },
    listVars: () => {
      const vars = userVars();
      const parts = [];
      for (let i = 0; i < vars.length; i++) {
        push(parts, "{\"name\":" + jsonStringify(vars[i].name) + ",\"type\":" + jsonStringify(vars[i].type) + "}");
      }
      return "[" + apply(aJoin, parts, [","]) + "]";
    }
  });
})`
