/**
 * A trace as one self-contained HTML page (`rlm trace view`): the run tree
 * with child runs nested under the step that started them, each step's reply,
 * code, output and feedback, the sub-calls with prompt, reply, tokens and
 * duration, a timeline of which calls ran concurrently, and the totals.
 *
 * The page has no network access (its Content-Security-Policy allows only its
 * own inline script and style) and treats every text of the trace as hostile:
 * the data is embedded as JSON in a `<script type="application/json">` with
 * every `<` escaped, and the page's script writes it into the DOM with
 * `textContent` only. It builds the DOM lazily: a run's or step's body is
 * built when it is first opened, and long texts are cut with a "show all"
 * control, so a trace of tens of megabytes opens at once.
 *
 * {@link view} is the pure model the page is built from (with the timeline's
 * times), {@link render} the page.
 *
 * @since 0.2.0
 */
import { createHash } from "node:crypto"
import * as Schema from "effect/Schema"
import * as page from "./internal/traceViewPage.js"
import * as Trace from "./Trace.js"
import * as TraceEvent from "./TraceEvent.js"

type Encoded<T extends TraceEvent.Tag> = Omit<Extract<TraceEvent.Encoded, { readonly _tag: T }>, "_tag" | "runId">

/**
 * Where a call sits on the timeline, in milliseconds since the trace's first
 * run started. `estimated` marks times laid out from durations alone (an
 * `llm_query` sub-call); see {@link view}.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Span {
  readonly start: number
  readonly end: number
  readonly estimated?: boolean
}

/**
 * A sub-call with its place on the timeline.
 *
 * @since 0.2.0
 * @category Models
 */
export interface SubCallView extends Encoded<"SubCall"> {
  readonly span: Span
}

/**
 * A step with its sub-calls, retried attempts and place on the timeline:
 * `span` is the whole step, `modelSpan` the root model's call, `blockSpans`
 * each code block's run.
 *
 * @since 0.2.0
 * @category Models
 */
export interface StepView extends Encoded<"StepCompleted"> {
  readonly span: Span
  readonly modelSpan: Span
  readonly blockSpans: ReadonlyArray<Span>
  readonly subCalls: ReadonlyArray<SubCallView>
  readonly retries: ReadonlyArray<Encoded<"ModelCallRetried">>
  /** Child runs started from this step (`rlm_query`), by id. */
  readonly children: ReadonlyArray<string>
}

/**
 * One run of the tree.
 *
 * @since 0.2.0
 * @category Models
 */
export interface RunView extends Omit<Encoded<"RunStarted">, "timestamp"> {
  readonly runId: string
  readonly timestamp: number
  readonly span: Span
  readonly steps: ReadonlyArray<StepView>
  /** Sub-calls whose step was never recorded (a run stopped half-way). */
  readonly strays: ReadonlyArray<SubCallView>
  readonly final?: Encoded<"FinalAnswer">
  readonly finished?: Encoded<"RunFinished">
  /** Child runs whose parent step was never recorded. */
  readonly children: ReadonlyArray<string>
}

/**
 * The totals of the whole trace: `usage` is {@link Trace.totalUsage},
 * `costUsd` the sum of the root runs' costs (a run's cost covers its
 * children), `durationMs` from the first run's start to the last run's end.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Totals {
  readonly runs: number
  readonly steps: number
  readonly subCalls: number
  readonly retries: number
  readonly usage: TraceEvent.TokenUsage
  readonly costUsd?: number
  readonly durationMs: number
  readonly status?: string
}

/**
 * What the page shows: every run by id, the root runs, the totals.
 *
 * @since 0.2.0
 * @category Models
 */
export interface View {
  readonly version: number
  readonly runs: Readonly<Record<string, RunView>>
  readonly roots: ReadonlyArray<string>
  readonly totals: Totals
  /** When the first run started (epoch milliseconds); spans count from here. */
  readonly startedAt: number
}

const encodeTrace = Schema.encodeSync(Trace.Trace)

const strip = <A extends { readonly _tag: string; readonly runId: string }>({
  _tag: _,
  runId: __,
  ...rest
}: A): Omit<A, "_tag" | "runId"> => rest

/** Group items by a key, keeping their order. */
const groupBy = <A, K>(items: ReadonlyArray<A>, key: (a: A) => K): Map<K, Array<A>> => {
  const groups = new Map<K, Array<A>>()
  for (const item of items) {
    const k = key(item)
    const group = groups.get(k)
    if (group === undefined) groups.set(k, [item])
    else group.push(item)
  }
  return groups
}

const findLast = <A, B extends A>(items: ReadonlyArray<A>, f: (a: A) => a is B): B | undefined => {
  for (let i = items.length - 1; i >= 0; i--) {
    const item = items[i] as A
    if (f(item)) return item
  }
  return undefined
}

/**
 * Lay out the `llm_query` sub-calls of one step inside the window the step's
 * blocks ran in, from their durations and recording order alone (a trace
 * keeps no start times for them; they are recorded as they complete).
 *
 * Calls are laid end to end when that fits the window. When it does not,
 * some of them must have overlapped: the calls are cut into runs of
 * non-decreasing duration (calls started together complete in order of
 * duration, as `llm_query_batched` does; 10 ms or 10% of slack for the time
 * to record each), and the runs that save the most time are drawn as started
 * together until the layout fits.
 */
const layOut = (durations: ReadonlyArray<number>, windowStart: number, windowEnd: number): ReadonlyArray<Span> => {
  const groups: Array<{ first: number; last: number; sum: number; max: number; together: boolean }> = []
  durations.forEach((d, i) => {
    const group = groups.at(-1)
    const previous = durations[i - 1] as number
    // Calls started together complete in order of duration, give or take the time to record each.
    if (group !== undefined && d >= previous - Math.max(10, previous * 0.1)) {
      group.last = i
      group.sum += d
      group.max = Math.max(group.max, d)
    } else {
      groups.push({ first: i, last: i, sum: d, max: d, together: false })
    }
  })
  const room = Math.max(0, windowEnd - windowStart) * 1.02 + 1
  let span = groups.reduce((total, g) => total + g.sum, 0)
  for (const group of [...groups].sort((a, b) => b.sum - b.max - (a.sum - a.max))) {
    if (span <= room) break
    if (group.last === group.first) continue
    group.together = true
    span -= group.sum - group.max
  }
  const spans: Array<Span> = []
  let cursor = windowStart
  for (const group of groups) {
    for (let i = group.first; i <= group.last; i++) {
      const d = durations[i] as number
      spans.push({ start: cursor, end: cursor + d, estimated: true })
      if (!group.together) cursor += d
    }
    if (group.together) cursor += group.max
  }
  return spans
}

/**
 * The page's model of a trace: events grouped into runs, steps and sub-calls,
 * each with its place on the timeline (milliseconds since the first run
 * started):
 *
 * - a run starts at its `RunStarted.timestamp` and lasts its
 *   `RunFinished.durationMs` (else the sum of its steps);
 * - its steps are laid end to end so that the last one ends with the run; the
 *   time before the first step is the interpreter's start-up;
 * - a step is its root model call (`modelMs`) then its blocks, one after the
 *   other (each block's `durationMs`);
 * - an `rlm_query` sub-call starts when its child run started (exact) and
 *   lasts its `durationMs`;
 * - an `llm_query` sub-call starts at its `timestamp` (exact; since 0.3.0);
 * - in older traces, the `llm_query` sub-calls of a step are laid out in its blocks' window
 *   from their durations and completion order (`estimated`): end to end when
 *   that fits, else the runs of calls that must have overlapped are drawn as
 *   started together.
 *
 * @since 0.2.0
 * @category Constructors
 */
export const view = (trace: Trace.Trace): View => {
  const events = encodeTrace(trace).events
  const started = events.filter(
    (e): e is Extract<TraceEvent.Encoded, { _tag: "RunStarted" }> => e._tag === "RunStarted"
  )
  const startedAt = started.reduce((min, e) => Math.min(min, e.timestamp), Number.POSITIVE_INFINITY)
  const origin = Number.isFinite(startedAt) ? startedAt : 0
  const byRun = groupBy(events, (e) => e.runId)
  const childrenOf = groupBy(started, (e) => e.parentRunId)
  const startOf = new Map(started.map((e) => [e.runId, e.timestamp - origin]))
  // No prototype: a run id such as "__proto__" is a key like any other.
  const runs: Record<string, RunView> = Object.create(null)
  let totalSteps = 0
  let totalSubCalls = 0
  let totalRetries = 0
  let end = 0
  for (const run of started) {
    if (runs[run.runId] !== undefined) continue
    const own = byRun.get(run.runId) ?? []
    const stepEvents = own.filter(
      (e): e is Extract<TraceEvent.Encoded, { _tag: "StepCompleted" }> => e._tag === "StepCompleted"
    )
    const subs = own.filter((e): e is Extract<TraceEvent.Encoded, { _tag: "SubCall" }> => e._tag === "SubCall")
    const retries = own.filter(
      (e): e is Extract<TraceEvent.Encoded, { _tag: "ModelCallRetried" }> => e._tag === "ModelCallRetried"
    )
    const final = findLast(
      own,
      (e): e is Extract<TraceEvent.Encoded, { _tag: "FinalAnswer" }> => e._tag === "FinalAnswer"
    )
    const finished = findLast(
      own,
      (e): e is Extract<TraceEvent.Encoded, { _tag: "RunFinished" }> => e._tag === "RunFinished"
    )
    const childIds = childrenOf.get(run.runId) ?? []
    const subsOf = groupBy(subs, (c) => c.parentStep)
    const retriesOf = groupBy(retries, (r) => r.step)
    const childrenOfStep = groupBy(childIds, (c) => c.parentStep)
    const runStart = run.timestamp - origin
    const stepTime = stepEvents.reduce((total, s) => total + s.durationMs, 0)
    const runEnd = runStart + Math.max(finished?.durationMs ?? stepTime, stepTime)
    let cursor = finished === undefined ? runStart : runEnd - stepTime
    const usedSubs = new Set<(typeof subs)[number]>()
    const usedChildren = new Set<string>()
    const steps: Array<StepView> = stepEvents.map((s) => {
      const stepStart = cursor
      const modelEnd = stepStart + s.modelMs
      const stepEnd = stepStart + s.durationMs
      cursor = stepEnd
      let blockCursor = modelEnd
      const blockSpans = s.blocks.map((b) => {
        const span = { start: blockCursor, end: blockCursor + b.durationMs }
        blockCursor = span.end
        return span
      })
      // A step recorded twice (not written by the runtime) gets its sub-calls once.
      const mine = (subsOf.get(s.step) ?? []).filter((c) => !usedSubs.has(c))
      for (const c of mine) usedSubs.add(c)
      // Calls with a start time are drawn where they were; the others (traces before 0.3.0) are laid out.
      const free = mine.filter(
        (c) => c.timestamp === undefined && (c.childRunId === undefined || !startOf.has(c.childRunId))
      )
      const laid = layOut(
        free.map((c) => c.durationMs),
        modelEnd,
        stepEnd
      )
      const laidOf = new Map(free.map((c, i) => [c, laid[i] as Span]))
      const subCalls = mine.map((c): SubCallView => {
        const childStart = c.childRunId === undefined ? undefined : startOf.get(c.childRunId)
        const exact = childStart ?? (c.timestamp === undefined ? undefined : c.timestamp - origin)
        const span = exact !== undefined ? { start: exact, end: exact + c.durationMs } : (laidOf.get(c) as Span)
        return { ...strip(c), span }
      })
      const children = (childrenOfStep.get(s.step) ?? []).map((c) => c.runId).filter((id) => !usedChildren.has(id))
      for (const c of children) usedChildren.add(c)
      return {
        ...strip(s),
        span: { start: stepStart, end: stepEnd },
        modelSpan: { start: stepStart, end: modelEnd },
        blockSpans,
        subCalls,
        retries: (retriesOf.get(s.step) ?? []).map(strip),
        children
      }
    })
    const strays = subs
      .filter((c) => !usedSubs.has(c))
      .map((c): SubCallView => {
        const childStart = c.childRunId === undefined ? undefined : startOf.get(c.childRunId)
        const exact = childStart ?? (c.timestamp === undefined ? undefined : c.timestamp - origin)
        const start = exact ?? runStart
        return { ...strip(c), span: { start, end: start + c.durationMs, estimated: exact === undefined } }
      })
    totalSteps += steps.length
    totalSubCalls += subs.length
    totalRetries += retries.length
    end = Math.max(end, runEnd)
    const { _tag: _, timestamp, ...started_ } = run
    runs[run.runId] = {
      ...started_,
      timestamp,
      span: { start: runStart, end: runEnd },
      steps,
      strays,
      ...(final !== undefined ? { final: strip(final) } : {}),
      ...(finished !== undefined ? { finished: strip(finished) } : {}),
      children: childIds.map((c) => c.runId).filter((id) => !usedChildren.has(id))
    }
  }
  const roots = [
    ...new Set(started.filter((e) => e.parentRunId === undefined || !startOf.has(e.parentRunId)).map((e) => e.runId))
  ]
  // Runs whose parents form a cycle (not written by the runtime) are shown as roots, not dropped.
  const reached = new Set<string>()
  const reach = (id: string) => {
    const pending = [id]
    while (pending.length > 0) {
      const next = pending.pop() as string
      if (reached.has(next)) continue
      reached.add(next)
      for (const child of childrenOf.get(next) ?? []) pending.push(child.runId)
    }
  }
  for (const id of roots) reach(id)
  for (const run of started) {
    if (reached.has(run.runId)) continue
    roots.push(run.runId)
    reach(run.runId)
  }
  const costs = roots.flatMap((id) => {
    const cost = runs[id]?.finished?.costUsd
    return cost === undefined ? [] : [cost]
  })
  const rootStatus = roots.length === 1 ? runs[roots[0] as string]?.finished?.status : undefined
  return {
    version: trace.version,
    runs,
    roots,
    startedAt: origin,
    totals: {
      runs: Object.keys(runs).length,
      steps: totalSteps,
      subCalls: totalSubCalls,
      retries: totalRetries,
      usage: Trace.totalUsage(trace),
      ...(costs.length > 0 ? { costUsd: costs.reduce((a, b) => a + b, 0) } : {}),
      durationMs: end,
      ...(rootStatus !== undefined ? { status: rootStatus } : {})
    }
  }
}

/**
 * JSON safe to embed in an HTML `<script type="application/json">`: every
 * `<` (so no `</script>` or `<!--` can end or alter the element) and the
 * line separators U+2028 / U+2029 are written as `\u` escapes, which
 * `JSON.parse` reads back as the same characters.
 *
 * @since 0.2.0
 * @category Encoding
 */
export const embedJson = (value: unknown): string =>
  JSON.stringify(value)
    .replace(/</g, "\\u003c")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029")

const cspHash = (source: string) => `'sha256-${createHash("sha256").update(source, "utf8").digest("base64")}'`

/**
 * The trace as one self-contained HTML page (inline script and style, no
 * network). See the module's description for how hostile text is kept inert.
 *
 * @since 0.2.0
 * @category Rendering
 */
export const render = (trace: Trace.Trace): string => {
  const csp = [
    "default-src 'none'",
    `script-src ${cspHash(page.script)}`,
    `style-src ${cspHash(page.style)}`,
    "img-src 'none'",
    "base-uri 'none'",
    "form-action 'none'"
  ].join("; ")
  return [
    "<!doctype html>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    `<meta http-equiv="Content-Security-Policy" content="${csp}">`,
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    "<title>rlm trace</title>",
    `<style>${page.style}</style>`,
    "</head>",
    "<body>",
    "<noscript>This trace viewer needs JavaScript.</noscript>",
    '<main id="app"></main>',
    `<script type="application/json" id="rlm-trace-data">${embedJson(view(trace))}</script>`,
    `<script>${page.script}</script>`,
    "</body>",
    "</html>",
    ""
  ].join("\n")
}
