/**
 * The eval's report: `report.html`, one self-contained page (inline SVG
 * charts and CSS, no script, nothing fetched), and the markdown summary
 * table printed at the end.
 *
 * Every text that comes from a result (the model's answers, errors, ids) is
 * HTML-escaped: model output is treated as hostile and never becomes markup.
 *
 * @since 0.1.0
 */
import type { Method } from "./Method.js"
import type * as Result from "./Result.js"
import { formatSize, type Kind } from "./Task.js"

/**
 * Text made safe for HTML content and attribute values.
 *
 * @since 0.1.0
 * @category Utils
 */
export const escapeHtml = (text: string): string =>
  text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c)

const COLORS: Record<Method, string> = { rlm: "#1f77b4", direct: "#d62728", "rlm-no-subcalls": "#2ca02c" }

const pct = (score: number) => `${(score * 100).toFixed(1)}`

/**
 * A cost for a table cell: `$0.0123`, or `-` when nothing was priced.
 *
 * @since 0.1.0
 * @category Utils
 */
export const formatCost = (usd: number): string =>
  usd === 0 ? "-" : `$${usd < 0.01 ? usd.toFixed(5) : usd.toFixed(4)}`

/**
 * Milliseconds as `850 ms` or `12.3 s`.
 *
 * @since 0.1.0
 * @category Utils
 */
export const formatTime = (ms: number): string => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`)

/**
 * The markdown summary table: one row per task kind × size × method (mean
 * score in %, failed runs, and means per task of tokens, cost, time, steps
 * and sub-calls), then one row per method over everything.
 *
 * @since 0.1.0
 * @category Rendering
 */
export const markdown = (summary: Result.Summary): string => {
  const header =
    "| task | size | method | n | score % | failed | tokens/task | cost/task | time/task | steps | sub-calls |\n" +
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  const row = (kind: string, size: string, c: Result.Row | (Result.Cell & { readonly method: Method })) =>
    `| ${kind} | ${size} | ${c.method} | ${c.n} | ${pct(c.score)} | ${c.failed} | ${Math.round(c.meanTokens)} | ${formatCost(c.meanCostUsd)} | ${formatTime(c.meanTimeMs)} | ${c.meanSteps.toFixed(1)} | ${c.meanSubCalls.toFixed(1)} |`
  const lines = [
    header,
    ...summary.rows.map((r) => row(r.kind, formatSize(r.size), r)),
    ...summary.overall.filter((o) => o.n > 0).map((o) => row("**all**", "", o))
  ]
  return lines.join("\n")
}

interface Series {
  readonly method: Method
  readonly points: ReadonlyArray<{ readonly x: number; readonly y: number }>
}

/** Score (0–100 %) against context size (log scale), one line per method: the paper's Figure 1. */
const scoreChart = (title: string, series: ReadonlyArray<Series>, sizes: ReadonlyArray<number>, window?: number) => {
  const w = 460
  const h = 260
  const left = 46
  const right = 16
  const top = 44
  const bottom = 40
  const xs = [...sizes].sort((a, b) => a - b)
  const lo = Math.log2(xs[0] ?? 1)
  const hi = Math.log2(xs[xs.length - 1] ?? 2)
  const span = hi - lo || 1
  const x = (size: number) => left + ((Math.log2(size) - lo) / span) * (w - left - right) * (xs.length > 1 ? 1 : 0.5)
  const y = (score: number) => top + (1 - score) * (h - top - bottom)
  const parts: Array<string> = []
  parts.push(`<text x="${w / 2}" y="16" text-anchor="middle" class="title">${escapeHtml(title)}</text>`)
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(
      `<line x1="${left}" x2="${w - right}" y1="${y(tick)}" y2="${y(tick)}" class="grid"/>`,
      `<text x="${left - 6}" y="${y(tick) + 4}" text-anchor="end">${tick * 100}</text>`
    )
  }
  for (const size of xs) {
    parts.push(
      `<text x="${x(size)}" y="${h - bottom + 16}" text-anchor="middle">${escapeHtml(formatSize(size))}</text>`
    )
  }
  parts.push(`<text x="${w / 2}" y="${h - 6}" text-anchor="middle">context size (tokens)</text>`)
  if (window !== undefined && xs.length > 1 && window >= (xs[0] ?? 0) && window <= (xs[xs.length - 1] ?? 0)) {
    parts.push(
      `<line x1="${x(window)}" x2="${x(window)}" y1="${top}" y2="${h - bottom}" class="window"/>`,
      `<text x="${x(window) + 4}" y="${h - bottom - 6}" class="window-label">window ${escapeHtml(formatSize(window))}</text>`
    )
  }
  series.forEach((s, k) => {
    const points = [...s.points].sort((a, b) => a.x - b.x)
    const color = COLORS[s.method]
    // rlm-no-subcalls dashed: where it lies on another line, both show.
    const dash = s.method === "rlm-no-subcalls" ? ' stroke-dasharray="6 4"' : ""
    if (points.length > 1) {
      parts.push(
        `<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${points.map((p) => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(" ")}"/>`
      )
    }
    for (const p of points) {
      parts.push(
        `<circle cx="${x(p.x).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="3.5" fill="${color}"><title>${escapeHtml(`${s.method} ${formatSize(p.x)}: ${pct(p.y)}%`)}</title></circle>`
      )
    }
    parts.push(
      `<rect x="${left + 8 + k * 130}" y="${top - 20}" width="10" height="10" fill="${color}"/>`,
      `<text x="${left + 22 + k * 130}" y="${top - 11}">${escapeHtml(s.method)}</text>`
    )
  })
  return `<svg class="chart" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${escapeHtml(title)}">${parts.join("")}</svg>`
}

/** Grouped bars: one group per kind, one bar per method. */
const barChart = (
  title: string,
  groups: ReadonlyArray<{ readonly label: string; readonly bars: ReadonlyArray<{ method: Method; value: number }> }>,
  format: (value: number) => string,
  empty = "nothing to show"
) => {
  const w = 460
  const h = 240
  const left = 56
  const top = 28
  const bottom = 36
  const max = Math.max(0, ...groups.flatMap((g) => g.bars.map((b) => b.value))) || 1
  const groupWidth = (w - left - 10) / Math.max(1, groups.length)
  const parts: Array<string> = [
    `<text x="${w / 2}" y="16" text-anchor="middle" class="title">${escapeHtml(title)}</text>`
  ]
  for (const tick of [0, 0.5, 1]) {
    const yy = top + (1 - tick) * (h - top - bottom)
    parts.push(
      `<line x1="${left}" x2="${w - 10}" y1="${yy}" y2="${yy}" class="grid"/>`,
      `<text x="${left - 6}" y="${yy + 4}" text-anchor="end">${escapeHtml(format(max * tick))}</text>`
    )
  }
  groups.forEach((g, gi) => {
    const barWidth = (groupWidth - 12) / Math.max(1, g.bars.length)
    g.bars.forEach((b, bi) => {
      const bh = (b.value / max) * (h - top - bottom)
      const bx = left + gi * groupWidth + 6 + bi * barWidth
      parts.push(
        `<rect x="${bx.toFixed(1)}" y="${(h - bottom - bh).toFixed(1)}" width="${Math.max(1, barWidth - 2).toFixed(1)}" height="${bh.toFixed(1)}" fill="${COLORS[b.method]}"><title>${escapeHtml(`${g.label} ${b.method}: ${format(b.value)}`)}</title></rect>`
      )
    })
    parts.push(
      `<text x="${(left + gi * groupWidth + groupWidth / 2).toFixed(1)}" y="${h - bottom + 16}" text-anchor="middle">${escapeHtml(g.label)}</text>`
    )
  })
  if (max === 1 && groups.every((g) => g.bars.every((b) => b.value === 0))) {
    parts.push(`<text x="${w / 2}" y="${h / 2}" text-anchor="middle" class="window-label">${escapeHtml(empty)}</text>`)
  }
  return `<svg class="chart" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${escapeHtml(title)}">${parts.join("")}</svg>`
}

/** A link to a trace only for a path the runner writes (`traces/<id>.<method>.jsonl`); anything else is text. */
const traceLink = (path: string) =>
  /^traces\/[A-Za-z0-9._-]+\.jsonl$/.test(path)
    ? `<a href="${escapeHtml(path)}"><code>${escapeHtml(path)}</code></a>`
    : `<code>${escapeHtml(path)}</code>`

const cut = (text: string, max: number) => (text.length > max ? `${text.slice(0, max)}…` : text)

const CSS = `body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}h2{font-size:16px;margin-top:28px}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{border:1px solid #ddd;background:#fff}.chart text{font-size:11px;fill:#333}
.chart .title{font-size:13px;font-weight:600}.grid{stroke:#eee}.window{stroke:#888;stroke-dasharray:4 3}.window-label{fill:#666}
table{border-collapse:collapse;margin-top:8px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}td.l,th.l{text-align:left}
th{background:#f5f5f5}code,pre{font:12px ui-monospace,monospace;white-space:pre-wrap;word-break:break-all;margin:0}.failed{color:#b00}`

/**
 * The report page.
 *
 * @since 0.1.0
 * @category Rendering
 */
export const html = (summary: Result.Summary, results: ReadonlyArray<Result.ResultLine>): string => {
  const scoreCharts = summary.kinds.map((kind: Kind) =>
    scoreChart(
      `${kind}: score % by context size`,
      summary.methods.map((method) => ({
        method,
        points: summary.rows
          .filter((r) => r.kind === kind && r.method === method)
          .map((r) => ({ x: r.size, y: r.score }))
      })),
      summary.sizes,
      summary.methods.includes("direct") ? summary.window : undefined
    )
  )
  const groups = (value: (c: Result.Cell) => number) =>
    summary.kinds.map((kind) => ({
      label: kind,
      bars: summary.methods.map((method) => {
        const rows = summary.rows.filter((r) => r.kind === kind && r.method === method)
        const n = rows.reduce((a, r) => a + r.n, 0)
        return { method, value: n === 0 ? 0 : rows.reduce((a, r) => a + value(r) * r.n, 0) / n }
      })
    }))
  const costChart = barChart(
    "cost per task (USD)",
    groups((c) => c.meanCostUsd),
    (v) => (v === 0 ? "0" : `$${v.toPrecision(2)}`),
    "no cost: no model had a price (--prices)"
  )
  const timeChart = barChart(
    "time per task",
    groups((c) => c.meanTimeMs),
    formatTime
  )
  const tokenChart = barChart(
    "tokens per task",
    groups((c) => c.meanTokens),
    (v) => String(Math.round(v))
  )
  const summaryRows = [
    ...summary.rows.map((r) => ({ kind: r.kind as string, size: formatSize(r.size), c: r })),
    ...summary.overall.filter((o) => o.n > 0).map((o) => ({ kind: "all", size: "", c: o }))
  ]
    .map(
      ({ c, kind, size }) =>
        `<tr><td class="l">${escapeHtml(kind)}</td><td>${escapeHtml(size)}</td><td class="l">${escapeHtml(c.method)}</td><td>${c.n}</td><td>${pct(c.score)}</td><td>${c.failed}</td><td>${Math.round(c.meanTokens)}</td><td>${escapeHtml(formatCost(c.meanCostUsd))}</td><td>${escapeHtml(formatTime(c.meanTimeMs))}</td><td>${c.meanSteps.toFixed(1)}</td><td>${c.meanSubCalls.toFixed(1)}</td></tr>`
    )
    .join("\n")
  const resultRows = results
    .map(
      (r) =>
        `<tr><td class="l"><code>${escapeHtml(r.taskId)}</code></td><td class="l">${escapeHtml(r.method)}</td><td>${pct(r.score)}</td><td class="l${r.status === "failed" ? " failed" : ""}"><pre>${escapeHtml(cut(r.status === "failed" ? `failed: ${r.error ?? ""}` : r.answer, 300))}</pre></td><td class="l"><pre>${escapeHtml(cut(r.truth, 120))}</pre></td><td>${r.totalTokens}</td><td>${escapeHtml(formatTime(r.timeMs))}</td><td>${r.steps}</td><td>${r.subCalls}</td><td class="l">${traceLink(r.trace)}</td></tr>`
    )
    .join("\n")
  const settings = `seed ${summary.seed}, n ${summary.n} per task and size, methods ${summary.methods.join(", ")}${
    summary.window !== undefined
      ? `, direct window ${formatSize(summary.window)} tokens`
      : ", direct sees the whole context"
  }; ${summary.totalTokens} tokens${summary.totalCostUsd > 0 ? `, ${formatCost(summary.totalCostUsd)}` : ""} in all`
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>rlm eval report</title><style>${CSS}</style></head>
<body>
<h1>rlm eval report</h1>
<p>${escapeHtml(settings)}.</p>
<h2>Score against context size</h2>
<div class="charts">${scoreCharts.join("\n")}</div>
<h2>Cost, time and tokens per task</h2>
<div class="charts">${costChart}${timeChart}${tokenChart}</div>
<h2>Summary</h2>
<table><thead><tr><th class="l">task</th><th>size</th><th class="l">method</th><th>n</th><th>score %</th><th>failed</th><th>tokens/task</th><th>cost/task</th><th>time/task</th><th>steps</th><th>sub-calls</th></tr></thead>
<tbody>
${summaryRows}
</tbody></table>
<h2>Every result</h2>
<p>Each trace replays with <code>rlm replay DIR/traces/…</code> (rlm methods) and opens with <code>rlm trace view</code>.</p>
<table><thead><tr><th class="l">task</th><th class="l">method</th><th>score %</th><th class="l">answer</th><th class="l">truth</th><th>tokens</th><th>time</th><th>steps</th><th>sub-calls</th><th class="l">trace</th></tr></thead>
<tbody>
${resultRows}
</tbody></table>
</body></html>
`
}
