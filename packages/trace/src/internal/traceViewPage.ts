/**
 * The style and script of the `TraceView` page, inlined into it.
 *
 * The script reads the view model from `#rlm-trace-data` and builds the DOM
 * with `textContent` only: no text of the trace ever goes through
 * `innerHTML`, an attribute that runs code, or a URL. Bodies of runs, steps
 * and sub-calls are built the first time they are opened; texts longer than
 * `CUT` characters are shown cut, with a "show all" button.
 *
 * Plain ES2020 in a string (not a compiled function), so no bundler helper
 * ever leaks into it.
 */

/** @internal */
export const style = `
:root { color-scheme: light; --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #f8f9fb; --model: #3b6fd8;
  --block: #9db6ec; --llm: #2f9e6b; --rlm: #d9822b; --err: #c4322b; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
main { max-width: 1200px; margin: 0 auto; padding: 16px 20px 48px; }
h1 { font-size: 20px; margin: 4px 0 2px; }
h2 { font-size: 15px; margin: 20px 0 8px; }
.muted { color: var(--muted); }
.totals { display: flex; flex-wrap: wrap; gap: 8px; margin: 12px 0; }
.total { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; min-width: 110px; }
.total b { display: block; font-size: 16px; }
.total span { color: var(--muted); font-size: 12px; }
details { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; }
details > summary { cursor: pointer; padding: 6px 10px; list-style-position: inside; }
details > summary:hover { background: #f2f4f7; }
details > .body { padding: 4px 12px 10px; border-top: 1px solid var(--line); }
details.run { border-left: 4px solid var(--rlm); }
details.run.root { border-left-color: var(--model); }
details.step { border-left: 3px solid var(--block); }
details.sub { border-left: 3px solid var(--llm); }
details.sub.rlm { border-left-color: var(--rlm); }
.tag { display: inline-block; font-size: 11px; border-radius: 4px; padding: 0 5px; margin-right: 4px; background: #eef2f9; }
.tag.bad { background: #fde8e7; color: var(--err); }
.tag.good { background: #e6f5ee; color: #17734a; }
.label { font-size: 12px; font-weight: 600; color: var(--muted); margin: 8px 0 2px; text-transform: uppercase; letter-spacing: .03em; }
pre { margin: 0; padding: 6px 8px; background: #f6f7f9; border: 1px solid var(--line); border-radius: 4px; white-space: pre-wrap;
  word-break: break-word; font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; max-height: 480px; overflow: auto; }
pre.code { background: #f3f6fc; }
pre.err { background: #fdf1f0; color: var(--err); }
button.more { margin: 3px 0; font-size: 12px; cursor: pointer; }
.block { margin: 8px 0; padding-left: 8px; border-left: 2px solid var(--line); }
.kv { display: grid; grid-template-columns: max-content 1fr; gap: 1px 12px; font-size: 13px; }
.kv dt { color: var(--muted); }
.kv dd { margin: 0; word-break: break-word; }
.timeline { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
.tl-row { display: flex; align-items: center; height: 18px; margin: 2px 0; }
.tl-name { width: 170px; flex: none; font-size: 11px; color: var(--muted); overflow: hidden; white-space: nowrap; text-overflow: ellipsis; padding-right: 6px; }
.tl-track { position: relative; flex: 1; height: 14px; background: #f6f7f9; border-radius: 3px; }
.tl-bar { cursor: pointer; position: absolute; top: 1px; height: 12px; min-width: 2px; border-radius: 2px; background: var(--model); }
.tl-bar.block { background: var(--block); }
.tl-bar.startup { background: repeating-linear-gradient(135deg, #e4e7ec 0 4px, #f6f7f9 4px 8px); }
.tl-bar.llm_query { background: var(--llm); }
.tl-bar.rlm_query { background: var(--rlm); }
.tl-bar.estimated { opacity: .75; }
.tl-bar.error { background: var(--err); }
.tl-axis { display: flex; justify-content: space-between; margin-left: 170px; font-size: 11px; color: var(--muted); }
.legend { font-size: 12px; color: var(--muted); margin-top: 6px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px; vertical-align: -1px; }
`

/** @internal */
export const script = `
(function () {
  "use strict";
  var CUT = 2000;
  var MAX_BARS = 4000;
  var data = JSON.parse(document.getElementById("rlm-trace-data").textContent);
  // Runs by id in a Map: an id such as "__proto__" or "toString" is a key like any other.
  var runs = new Map();
  var kidsOf = new Map();
  Object.keys(data.runs).forEach(function (id) {
    var run = data.runs[id];
    runs.set(id, run);
    if (run.parentRunId !== undefined) {
      if (!kidsOf.has(run.parentRunId)) kidsOf.set(run.parentRunId, []);
      kidsOf.get(run.parentRunId).push(id);
    }
  });
  function runOf(id) { return id === undefined || id === null ? undefined : runs.get(id); }
  var app = document.getElementById("app");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]);
    return parent;
  }
  function num(n) { return n === undefined || n === null ? "?" : Number(n).toLocaleString("en-US"); }
  function ms(n) {
    if (n === undefined || n === null) return "?";
    if (n < 1000) return Math.round(n) + " ms";
    if (n < 60000) return (n / 1000).toFixed(n < 10000 ? 2 : 1) + " s";
    return Math.floor(n / 60000) + " min " + Math.round((n % 60000) / 1000) + " s";
  }
  function tokens(u) {
    if (!u) return "? tok";
    if (u.totalTokens !== undefined) return num(u.totalTokens) + " tok";
    if (u.inputTokens !== undefined || u.outputTokens !== undefined) return num((u.inputTokens || 0) + (u.outputTokens || 0)) + " tok";
    return "? tok";
  }
  function usageText(u) {
    return "in " + num(u && u.inputTokens) + " · out " + num(u && u.outputTokens) + " · total " + num(u && u.totalTokens);
  }
  function tag(text, cls) { return el("span", "tag" + (cls ? " " + cls : ""), text); }

  /** A text in a <pre>, cut at CUT characters with a button that shows all of it. */
  function longText(text, cls) {
    var box = el("div");
    var pre = el("pre", cls);
    text = String(text);
    if (text.length <= CUT) {
      pre.textContent = text;
      return add(box, pre);
    }
    pre.textContent = text.slice(0, CUT) + "…";
    var more = el("button", "more", "show all (" + num(text.length) + " chars)");
    more.type = "button";
    more.addEventListener("click", function () {
      pre.textContent = text;
      more.remove();
    });
    return add(box, pre, more);
  }
  function section(parent, label, text, cls) {
    if (text === undefined || text === null || text === "") return;
    add(parent, el("div", "label", label), longText(text, cls));
  }
  function kv(pairs) {
    var dl = el("dl", "kv");
    for (var i = 0; i < pairs.length; i++) {
      if (pairs[i][1] === undefined || pairs[i][1] === null) continue;
      add(dl, el("dt", null, pairs[i][0]), el("dd", null, pairs[i][1]));
    }
    return dl;
  }

  /** A <details> whose body is built by build() the first time it is opened. */
  function lazy(cls, summaryParts, build, open) {
    var d = el("details", cls);
    var s = el("summary");
    for (var i = 0; i < summaryParts.length; i++) {
      var p = summaryParts[i];
      if (p === null || p === undefined) continue;
      add(s, typeof p === "string" ? document.createTextNode(p) : p);
    }
    add(d, s);
    var built = false;
    function ensure() {
      if (built) return;
      built = true;
      var body = el("div", "body");
      build(body);
      add(d, body);
    }
    d.addEventListener("toggle", function () { if (d.open) ensure(); });
    d.expand = function () { ensure(); d.open = true; };
    if (open) d.expand();
    return d;
  }

  /** The nodes built so far, to reveal one from the timeline: runs, steps ("run#step"), rlm_query sub-calls by child. */
  var runNodes = new Map();
  var stepNodes = new Map();
  var childSubNodes = new Map();

  /** Open the path down to a run (and one of its steps), building what is not built yet, and scroll to it. */
  function reveal(runId, step) {
    var chain = [];
    var seen = new Set();
    for (var id = runId; id !== undefined && runOf(id) && !seen.has(id); id = runOf(id).parentRunId) {
      seen.add(id);
      chain.unshift(id);
    }
    var target;
    for (var i = 0; i < chain.length; i++) {
      var run = runOf(chain[i]);
      if (i > 0) {
        var parentStep = stepNodes.get(chain[i - 1] + "#" + run.parentStep);
        if (parentStep) parentStep.expand();
        if (childSubNodes.has(run.runId)) childSubNodes.get(run.runId).expand();
      }
      target = runNodes.get(run.runId);
      if (!target) return;
      target.expand();
    }
    if (step !== undefined && stepNodes.has(runId + "#" + step)) {
      target = stepNodes.get(runId + "#" + step);
      target.expand();
    }
    if (target) target.scrollIntoView({ block: "start" });
  }

  function statusTag(status) {
    if (!status) return tag("unfinished", "bad");
    return tag(status, status === "answered" ? "good" : "bad");
  }

  function runNode(id, open) {
    var run = runOf(id);
    if (!run) return el("div", "muted", "run " + id + " is not in the trace");
    var f = run.finished;
    var node = lazy("run" + (run.depth === 0 ? " root" : ""), [
      tag("run"), el("b", null, run.runId), " ",
      statusTag(f && f.status),
      " depth " + run.depth + " · " + run.steps.length + " steps · " +
        (f ? num(f.subCalls) + " sub-calls · " + tokens(f.usage) + " · " + ms(f.durationMs) : "no RunFinished") +
        (f && f.costUsd !== undefined ? " · $" + f.costUsd.toFixed(4) : "")
    ], function (body) {
      section(body, "query", run.query);
      add(body, el("div", "label", "run"), kv([
        ["model", run.model], ["language", run.language], ["isolation", run.isolation],
        ["parent", run.parentRunId === undefined ? undefined : run.parentRunId + " step " + run.parentStep],
        ["started", new Date(run.timestamp).toISOString()],
        ["context", run.context.type + ", " + num(run.context.totalChars) + " chars, " + num(run.context.documentCount) + " document(s)"],
        ["usage", f ? usageText(f.usage) : undefined],
        ["cost", f && f.costUsd !== undefined ? "$" + f.costUsd.toFixed(6) : undefined],
        ["error", f && f.error]
      ]));
      section(body, "context preview", run.context.preview);
      if (run.final) section(body, "final answer (" + run.final.source + ", step " + run.final.step + ")", run.final.answer);
      if (run.steps.length > 0) add(body, el("div", "label", "steps"));
      for (var i = 0; i < run.steps.length; i++) add(body, stepNode(run, run.steps[i]));
      if (run.strays.length > 0) add(body, el("div", "label", "sub-calls of an unrecorded step"));
      for (var j = 0; j < run.strays.length; j++) add(body, subNode(run.strays[j]));
      for (var k = 0; k < run.children.length; k++) add(body, runNode(run.children[k], false));
    }, open);
    runNodes.set(id, node);
    return node;
  }

  function stepNode(run, s) {
    var lost = s.interpreterLost;
    var node = lazy("step", [
      tag("step"), el("b", null, String(s.step)), " ",
      s.feedback ? tag("feedback", "bad") : null,
      lost ? tag("interpreter lost", "bad") : null,
      run.final && run.final.step === s.step ? tag("final", "good") : null,
      s.blocks.length + " block" + (s.blocks.length === 1 ? "" : "s") + " · " + s.subCalls.length + " sub-call" +
        (s.subCalls.length === 1 ? "" : "s") + " · " + tokens(s.usage) + " · model " + ms(s.modelMs) + " · " + ms(s.durationMs)
    ], function (body) {
      add(body, kv([
        ["model", s.model], ["usage", usageText(s.usage)], ["finish reason", s.finishReason],
        ["time", "model " + ms(s.modelMs) + ", step " + ms(s.durationMs)]
      ]));
      section(body, "reply", s.reply);
      if (s.toolCalls) {
        for (var t = 0; t < s.toolCalls.length; t++) {
          section(body, "tool call " + s.toolCalls[t].name + " (" + s.toolCalls[t].id + ")", s.toolCalls[t].arguments, "code");
        }
      }
      for (var i = 0; i < s.blocks.length; i++) {
        var b = s.blocks[i];
        var box = el("div", "block");
        add(box, el("div", "label", "block " + (i + 1) + " · " + ms(b.durationMs) + (b.truncated ? " · output truncated" : "")));
        add(box, longText(b.code, "code"));
        section(box, "stdout", b.stdout);
        section(box, "stderr", b.stderr, "err");
        section(box, "error", b.error, "err");
        add(body, box);
      }
      section(body, "feedback", s.feedback, "err");
      if (lost) section(body, "interpreter lost (" + lost.reason + ", restart " + lost.restarts + ")", lost.message, "err");
      for (var r = 0; r < s.retries.length; r++) {
        var re = s.retries[r];
        section(body, "retried " + re.role + " call, attempt " + re.attempt + " (" + re.reason + (re.status !== undefined ? " " + re.status : "") + ", waited " + ms(re.delayMs) + ")", re.message, "err");
      }
      if (s.subCalls.length > 0) add(body, el("div", "label", "sub-calls"));
      for (var j = 0; j < s.subCalls.length; j++) add(body, subNode(s.subCalls[j]));
      var linked = new Set();
      for (var c = 0; c < s.subCalls.length; c++) if (s.subCalls[c].childRunId) linked.add(s.subCalls[c].childRunId);
      for (var k = 0; k < s.children.length; k++) if (!linked.has(s.children[k])) add(body, runNode(s.children[k], false));
    }, false);
    stepNodes.set(run.runId + "#" + s.step, node);
    return node;
  }

  function subNode(c) {
    var child = runOf(c.childRunId);
    // A child run's tokens are its own calls' (the rlm_query sub-call itself reports none).
    var used = child && child.finished ? tokens(child.finished.usage) + " in the child run" : tokens(c.usage);
    var node = lazy("sub" + (c.kind === "rlm_query" ? " rlm" : ""), [
      tag(c.kind), c.error ? tag("error", "bad") : null,
      c.model + " · " + used + " · " + ms(c.durationMs) + " · prompt " + num(c.promptChars) + " chars" +
        (c.replyChars !== undefined ? " · reply " + num(c.replyChars) + " chars" : "")
    ], function (body) {
      add(body, kv([
        ["usage", usageText(c.usage)], ["duration", ms(c.durationMs)], ["finish reason", c.finishReason],
        ["child run", c.childRunId], ["prompt sha256", c.promptSha256]
      ]));
      section(body, "prompt", c.prompt);
      section(body, "reply", c.reply);
      section(body, "error", c.error, "err");
      if (child) add(body, runNode(c.childRunId, false));
    }, false);
    if (c.childRunId) childSubNodes.set(c.childRunId, node);
    return node;
  }

  /** Rows of the timeline: per run, one row of root calls and blocks, then as many rows as its sub-calls overlap. */
  function timeline(parent) {
    var total = Math.max(1, data.totals.durationMs);
    var rows = [];
    var bars = 0;
    var visited = new Set();
    function visit(id) {
      var run = runOf(id);
      if (!run || visited.has(id)) return;
      visited.add(id);
      var row = { name: run.runId, bars: [] };
      rows.push(row);
      var subs = [];
      var firstStart = run.steps.length > 0 ? run.steps[0].span.start : run.span.end;
      if (firstStart > run.span.start) {
        row.bars.push({ cls: "startup", run: run.runId, span: { start: run.span.start, end: firstStart }, title: run.runId + ": start-up (interpreter), " + ms(firstStart - run.span.start) });
      }
      for (var i = 0; i < run.steps.length; i++) {
        var s = run.steps[i];
        row.bars.push({ cls: "model", run: run.runId, step: s.step, span: s.modelSpan, title: run.runId + " step " + s.step + ": root model, " + ms(s.modelMs) });
        for (var b = 0; b < s.blockSpans.length; b++) {
          row.bars.push({ cls: "block", run: run.runId, step: s.step, span: s.blockSpans[b], title: run.runId + " step " + s.step + " block " + (b + 1) + ", " + ms(s.blocks[b].durationMs) });
        }
        for (var j = 0; j < s.subCalls.length; j++) subs.push({ call: s.subCalls[j], step: s.step });
      }
      for (var k = 0; k < run.strays.length; k++) subs.push({ call: run.strays[k], step: run.strays[k].parentStep });
      subs.sort(function (x, y) { return x.call.span.start - y.call.span.start; });
      var lanes = [];
      for (var m = 0; m < subs.length; m++) {
        var c = subs[m].call;
        var lane = 0;
        while (lane < lanes.length && lanes[lane].end > c.span.start + 0.0001) lane++;
        if (lane === lanes.length) lanes.push({ end: 0, row: { name: "  sub-calls", bars: [] } });
        lanes[lane].end = c.span.end;
        lanes[lane].row.bars.push({
          run: runOf(c.childRunId) ? c.childRunId : run.runId,
          step: runOf(c.childRunId) ? undefined : subs[m].step,
          cls: c.kind + (c.span.estimated ? " estimated" : "") + (c.error ? " error" : ""),
          span: c.span,
          title: run.runId + " step " + subs[m].step + ": " + c.kind + " " + c.model + ", " + ms(c.durationMs) + ", " + tokens(c.usage) + (c.span.estimated ? " (start estimated)" : "")
        });
      }
      for (var n = 0; n < lanes.length; n++) rows.push(lanes[n].row);
      var kids = kidsOf.get(id) || [];
      for (var q = 0; q < kids.length; q++) visit(kids[q]);
    }
    for (var r = 0; r < data.roots.length; r++) visit(data.roots[r]);
    var box = el("div", "timeline");
    for (var i = 0; i < rows.length; i++) {
      var line = el("div", "tl-row");
      var name = el("div", "tl-name", rows[i].name);
      name.title = rows[i].name;
      var track = el("div", "tl-track");
      for (var j = 0; j < rows[i].bars.length && bars < MAX_BARS; j++, bars++) {
        var bar = rows[i].bars[j];
        var d = el("div", "tl-bar " + bar.cls);
        d.style.left = (100 * bar.span.start / total) + "%";
        d.style.width = (100 * Math.max(0, bar.span.end - bar.span.start) / total) + "%";
        d.title = bar.title + " (click to open)";
        d.setAttribute("data-run", bar.run);
        if (bar.step !== undefined) d.setAttribute("data-step", String(bar.step));
        d.addEventListener("click", (function (b) { return function () { reveal(b.run, b.step); }; })(bar));
        add(track, d);
      }
      add(box, add(line, name, track));
      if (bars >= MAX_BARS) {
        add(box, el("div", "muted", "… the first " + num(MAX_BARS) + " calls are drawn; open the runs below for the rest."));
        break;
      }
    }
    var axis = el("div", "tl-axis");
    for (var t = 0; t <= 4; t++) add(axis, el("span", null, ms(total * t / 4)));
    add(box, axis);
    var legend = el("div", "legend");
    var keys = [["startup", "start-up"], ["model", "root model call"], ["block", "code block"], ["llm_query", "llm_query"], ["rlm_query", "rlm_query (child run)"]];
    for (var l = 0; l < keys.length; l++) {
      var sw = el("i");
      sw.className = "tl-bar " + keys[l][0];
      sw.style.position = "static";
      add(legend, sw, document.createTextNode(keys[l][1]));
    }
    add(legend, document.createTextNode(" · llm_query starts are estimated from durations (see docs/tracing.md)"));
    add(box, legend);
    add(parent, box);
  }

  var t = data.totals;
  var first = runOf(data.roots[0]);
  document.title = "rlm trace" + (first ? " — " + first.query.slice(0, 80) : "");
  add(app, el("h1", null, "rlm trace"));
  if (first) add(app, el("div", "muted", first.query.length > 300 ? first.query.slice(0, 300) + "…" : first.query));
  var totals = el("div", "totals");
  function total(value, label) { add(totals, add(el("div", "total"), el("b", null, value), el("span", null, label))); }
  total(t.status || "—", "status");
  total(ms(t.durationMs), "wall time");
  total(num(t.usage.totalTokens !== undefined ? t.usage.totalTokens : (t.usage.inputTokens !== undefined || t.usage.outputTokens !== undefined ? (t.usage.inputTokens || 0) + (t.usage.outputTokens || 0) : undefined)), "tokens");
  total(num(t.usage.inputTokens), "input tokens");
  total(num(t.usage.outputTokens), "output tokens");
  total(t.costUsd !== undefined ? "$" + t.costUsd.toFixed(4) : "—", "cost");
  total(num(t.runs), "runs");
  total(num(t.steps), "steps");
  total(num(t.subCalls), "sub-calls");
  if (t.retries > 0) total(num(t.retries), "retried attempts");
  add(app, totals);
  add(app, el("h2", null, "Timeline"));
  timeline(app);
  add(app, el("h2", null, "Runs"));
  if (data.roots.length === 0) add(app, el("div", "muted", "The trace has no runs."));
  for (var i = 0; i < data.roots.length; i++) add(app, runNode(data.roots[i], data.roots.length === 1));
  document.body.setAttribute("data-ready", "true");
})();
`
