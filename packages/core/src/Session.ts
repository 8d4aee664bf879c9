/**
 * Multi-turn sessions: one REPL and one root conversation over many asks.
 *
 * `Session.make(options)` (also `Rlm.session`) is scoped. Each
 * `session.ask(query)` is one run (`RunStarted` … `RunFinished`, its own
 * trace, totals and budget) that reuses the session's open REPL, so the
 * variables of earlier turns are still there, and whose root conversation
 * starts from the session's root history (the messages of the earlier turns)
 * before the new query's first turn. Before each turn the REPL's `history` is
 * rebound to the earlier turns as `{query, answer}` (a list of dicts in
 * Python, an array of objects in JavaScript).
 *
 * - **Compaction.** When the root history passes `compactAt` estimated tokens
 *   (characters / 4) at the start of a turn, one root model call of that turn
 *   (budgeted and counted like every call) summarizes the older turns (all but
 *   the most recent one) with any earlier summary; the conversation goes on
 *   from the system prompt, the summary and the recent turn. The REPL's
 *   `history` keeps every turn. The stream shows it as a
 *   `RunEvent.SessionCompacted`.
 * - **A new context.** `ask(query, { context })` starts a fresh interpreter
 *   over the new context (its `P` and `context`); the variables that
 *   serialize to JSON are carried into it, the others are lost and listed in
 *   `export`'s `unserializable`. The earlier context is not kept in the REPL.
 * - **Export / resume.** `session.export` gives a `SessionState` (Schema'd,
 *   JSON-safe: the turns, the root history, the summary, the JSON variables
 *   and the names and types of the others); `Session.make({ resume })`
 *   decodes it again (it may come from an untrusted client: every field is
 *   checked, values are passed to the interpreter as data, never as code) and
 *   continues in a fresh interpreter.
 *
 * @since 0.3.0
 */
import type * as Tool from "@effect/ai/Tool"
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Sandbox from "@rlm-runtime/sandbox/Sandbox"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import type * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as HostTools from "./HostTools.js"
import * as Policy from "./Policy.js"
import * as Rlm from "./Rlm.js"
import * as RlmContext from "./RlmContext.js"
import { type BudgetExceeded, type RlmError, RunFailed } from "./RlmError.js"
import * as RunEvent from "./RunEvent.js"

// ---------------------------------------------------------------------------
// constants
// ---------------------------------------------------------------------------

/**
 * Default `compactAt`: 24,000 estimated tokens (96,000 characters) of root
 * history, well inside the context window of current models while leaving
 * room for the turn's own steps.
 *
 * @since 0.3.0
 * @category Constants
 */
export const DEFAULT_COMPACT_AT = 24_000

/**
 * Longest JSON text of one exported (or resumed) variable, in characters.
 *
 * @since 0.3.0
 * @category Constants
 */
export const MAX_VARIABLE_CHARS = 100_000

/**
 * Longest JSON text of all exported (or resumed) variables together, in
 * characters (also at most the policy's `maxAnswerChars` less 200,000).
 *
 * @since 0.3.0
 * @category Constants
 */
export const MAX_VARIABLES_CHARS = 800_000

/**
 * Deepest nesting of a variable's value (lists and objects) exported or resumed.
 *
 * @since 0.3.0
 * @category Constants
 */
export const MAX_JSON_DEPTH = 64

/** Most unserializable variables listed. */
const MAX_UNSERIALIZABLE = 1_000

/** Characters of each message shown to the model in a compaction request. */
const COMPACT_MESSAGE_CHARS = 2_000

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

/**
 * A JSON value (the trace's `TraceEvent.Json`).
 *
 * @since 0.3.0
 * @category Models
 */
export type Json = TraceEvent.Json

/**
 * A JSON value (numbers finite): the trace's `TraceEvent.Json` Schema.
 *
 * @since 0.3.0
 * @category Models
 */
export const Json: Schema.Schema<Json> = TraceEvent.Json

/**
 * One turn of a session. `messages` is the turn's part of the root history
 * (its first user message, the model's replies and the REPL output it was
 * told, and its final reply); it is absent once the turn was compacted into
 * the summary.
 *
 * @since 0.3.0
 * @category Models
 */
export class TurnRecord extends Schema.Class<TurnRecord>("@rlm-runtime/core/Session/TurnRecord")({
  query: Schema.String,
  answer: Schema.String,
  source: Schema.Literal("FINAL", "FINAL_VAR", "forced"),
  steps: Schema.NonNegativeInt,
  messages: Schema.optionalWith(Schema.Array(LlmAdapter.ChatMessage), { exact: true })
}) {}

/**
 * The summary of the first `turns` turns, which replaced their messages in
 * the root history.
 *
 * @since 0.3.0
 * @category Models
 */
export class Summary extends Schema.Class<Summary>("@rlm-runtime/core/Session/Summary")({
  text: Schema.String,
  turns: Schema.NonNegativeInt
}) {}

/**
 * A variable that was not exported: its name and type (a value that is not
 * JSON, one too large, or a name that cannot be restored).
 *
 * @since 0.3.0
 * @category Models
 */
export const Unserializable = Schema.Struct({ name: Schema.String, type: Schema.String })

/**
 * @since 0.3.0
 * @category Models
 */
export type Unserializable = typeof Unserializable.Type

/**
 * An exported session (format 1), JSON-safe:
 * - `id`: the session's id;
 * - `language`, `protocol`: the sandbox language and reply protocol it ran
 *   with (a resume under another fails);
 * - `turns`: every turn in order, `{query, answer, source, steps}`, with the
 *   `messages` of the turns not compacted (a suffix of `turns`);
 * - `summary`: present once compacted, the summary of the first
 *   `summary.turns` turns (the turns without `messages`);
 * - `variables`: the REPL's user variables whose values are JSON (numbers,
 *   strings, booleans, null, lists and string-keyed objects of those, at most
 *   {@link MAX_VARIABLE_CHARS} each and {@link MAX_VARIABLES_CHARS} in all,
 *   nested at most {@link MAX_JSON_DEPTH} deep); Python tuples and floats
 *   with integral values come back as lists and integers;
 * - `unserializable`: the other user variables, by name and type (a resume
 *   cannot bring them back; `history` is never a variable of the state).
 *
 * The root history the model sees is {@link rootHistory}.
 *
 * @since 0.3.0
 * @category Models
 */
export class SessionState extends Schema.Class<SessionState>("@rlm-runtime/core/SessionState")({
  version: Schema.Literal(1),
  id: Schema.String,
  language: Sandbox.Language,
  protocol: Schema.Literal("fenced", "tools"),
  turns: Schema.Array(TurnRecord),
  summary: Schema.optionalWith(Summary, { exact: true }),
  variables: Schema.Record({ key: Schema.String, value: Json }),
  unserializable: Schema.Array(Unserializable)
}) {}

/**
 * @since 0.3.0
 * @category Errors
 */
export const SessionErrorReason = Schema.Literal(
  "InvalidState",
  "LanguageMismatch",
  "ProtocolMismatch",
  "Closed",
  "Sandbox"
)

/**
 * A session could not be exported or resumed: a state that does not decode
 * or breaks a rule ("InvalidState"), one of another language or protocol,
 * a closed session, or the sandbox failing while reading the variables.
 *
 * @since 0.3.0
 * @category Errors
 */
export class SessionError extends Schema.TaggedError<SessionError>("@rlm-runtime/core/SessionError")("SessionError", {
  reason: SessionErrorReason,
  message: Schema.String
}) {}

/**
 * @since 0.3.0
 * @category Models
 */
export interface SessionOptions<Tools extends Record<string, Tool.Any> = {}> extends Rlm.RunOptions<string, Tools> {
  /**
   * Estimated tokens (characters / 4) of the root history past which older
   * turns are compacted at the start of a turn. Default
   * {@link DEFAULT_COMPACT_AT}.
   */
  readonly compactAt?: number | undefined
  /** Continue an exported session in a fresh interpreter. */
  readonly resume?: SessionState | undefined
  /** The first turn's context (later asks may pass their own). Default: an empty text. */
  readonly context?: RlmContext.Input | undefined
}

/**
 * @since 0.3.0
 * @category Models
 */
export interface AskOptions {
  /** A new context from this turn on (a fresh interpreter; see the module documentation). */
  readonly context?: RlmContext.Input | undefined
}

/**
 * @since 0.3.0
 * @category Models
 */
export interface Session {
  readonly id: string
  /** One turn; turns are serialized (a second concurrent ask waits). */
  readonly ask: (query: string, options?: AskOptions) => Effect.Effect<Rlm.RunResult<string>, RlmError>
  /** The same turn as a stream of RunEvents (what Rlm.stream gives for a run), ending with Answered. */
  readonly askStream: (query: string, options?: AskOptions) => Stream.Stream<RunEvent.RunEvent, RlmError>
  /** The session as data (waits for a running turn). */
  readonly export: Effect.Effect<SessionState, SessionError>
  /** Turns answered so far (resumed ones included). */
  readonly turns: Effect.Effect<number>
}

// ---------------------------------------------------------------------------
// the root history, as data
// ---------------------------------------------------------------------------

/** The turns and the summary: what the root history is made of. */
interface Conversation {
  readonly turns: ReadonlyArray<TurnRecord>
  readonly summary: Summary | undefined
}

const chat = (role: "user" | "assistant" | "system", content: string) =>
  new LlmAdapter.ChatMessage({ role, content }, true)

const summaryMessages = (summary: Summary): ReadonlyArray<LlmAdapter.ChatMessage> => [
  chat(
    "user",
    `Summary of turns 1-${summary.turns} of this session (their messages were compacted; the REPL's \`history\` still has every turn):\n${summary.text}`
  ),
  chat("assistant", "Understood. I will use this summary of the earlier turns.")
]

const historyOf = (conversation: Conversation): ReadonlyArray<LlmAdapter.ChatMessage> => [
  ...(conversation.summary === undefined ? [] : summaryMessages(conversation.summary)),
  ...conversation.turns.flatMap((t) => t.messages ?? [])
]

/**
 * The root history of a state as the model sees it at the next turn, after
 * the system prompt: the summary (as a user message and its acknowledgement)
 * if compacted, then the messages of the turns not compacted.
 *
 * @since 0.3.0
 * @category Accessors
 */
export const rootHistory = (state: SessionState): ReadonlyArray<LlmAdapter.ChatMessage> =>
  historyOf({ turns: state.turns, summary: state.summary })

/**
 * Estimated tokens of messages: characters / 4 (contents and tool-call
 * arguments), rounded up.
 *
 * @since 0.3.0
 * @category Accessors
 */
export const estimateTokens = (messages: ReadonlyArray<LlmAdapter.ChatMessage>): number => {
  let chars = 0
  for (const m of messages) {
    chars += m.content.length
    for (const call of m.toolCalls ?? []) chars += call.name.length + call.arguments.length
  }
  return Math.ceil(chars / 4)
}

const clip = (text: string, max: number) =>
  text.length > max ? `${text.slice(0, max)} … (${text.length} chars)` : text

/** The request that summarizes `older` turns (numbered from `first`), with the earlier summary if any. */
const compactionRequest = (
  previous: Summary | undefined,
  older: ReadonlyArray<TurnRecord>,
  first: number
): ReadonlyArray<LlmAdapter.ChatMessage> => {
  const transcript = older.map((turn, i) =>
    [
      `## Turn ${first + i}`,
      `Question: ${turn.query}`,
      ...(turn.messages ?? []).map((m) => `[${m.role}] ${clip(m.content, COMPACT_MESSAGE_CHARS)}`),
      `Final answer: ${turn.answer}`
    ].join("\n")
  )
  return [
    chat(
      "system",
      "You compact the history of a session in which an assistant answers questions by writing code in a persistent REPL. Write a concise summary of the turns you are given that keeps what later turns may need: each question and its final answer, the facts found, and the names and meaning of the REPL variables that were defined. Reply with the summary only."
    ),
    chat(
      "user",
      [
        ...(previous === undefined ? [] : [`# Summary of turns 1-${previous.turns}`, previous.text, ""]),
        "# Turns to summarize",
        ...transcript
      ].join("\n")
    )
  ]
}

/** A summary written from the records alone, when the model's reply is empty. */
const plainSummary = (previous: Summary | undefined, older: ReadonlyArray<TurnRecord>, first: number) =>
  [
    ...(previous === undefined ? [] : [previous.text]),
    ...older.map((t, i) => `Turn ${first + i}: ${t.query} -> ${t.answer}`)
  ].join("\n")

/**
 * Compact the conversation if its root history passes `compactAt`: one root
 * call of the turn summarizes every turn not summarized yet but the most
 * recent one (or that one too when it is the only one).
 */
const compact = (
  conversation: Ref.Ref<Conversation>,
  compactAt: number,
  turn: Rlm.TurnCall
): Effect.Effect<ReadonlyArray<LlmAdapter.ChatMessage>, RlmError> =>
  Effect.gen(function* () {
    const current = yield* Ref.get(conversation)
    const history = historyOf(current)
    const before = estimateTokens(history)
    const first = current.turns.findIndex((t) => t.messages !== undefined)
    if (before <= compactAt || first === -1) return history
    const open = current.turns.length - first
    const keep = open >= 2 ? 1 : 0
    const older = current.turns.slice(first, current.turns.length - keep)
    const response = yield* turn.call(compactionRequest(current.summary, older, first + 1))
    const text = response.text.trim() === "" ? plainSummary(current.summary, older, first + 1) : response.text.trim()
    const summarized = first + older.length
    const next: Conversation = {
      turns: current.turns.map((t, i) =>
        i < summarized && t.messages !== undefined
          ? new TurnRecord({ query: t.query, answer: t.answer, source: t.source, steps: t.steps }, true)
          : t
      ),
      summary: new Summary({ text, turns: summarized }, true)
    }
    yield* Ref.set(conversation, next)
    const after = historyOf(next)
    yield* turn.emit(
      new RunEvent.SessionCompacted(
        {
          runId: turn.runId,
          turns: older.length,
          summarizedTurns: summarized,
          keptTurns: keep,
          tokensBefore: before,
          tokensAfter: estimateTokens(after),
          summaryChars: text.length,
          model: response.model,
          usage: {
            ...(response.usage.inputTokens !== undefined ? { inputTokens: response.usage.inputTokens } : {}),
            ...(response.usage.outputTokens !== undefined ? { outputTokens: response.usage.outputTokens } : {}),
            ...(response.usage.totalTokens !== undefined ? { totalTokens: response.usage.totalTokens } : {})
          }
        },
        true
      )
    )
    return after
  })

// ---------------------------------------------------------------------------
// values into and out of the interpreter, as data
// ---------------------------------------------------------------------------

/**
 * A value as a string literal that reads the same in Python and JavaScript:
 * its JSON text with every non-ASCII character escaped (`\uXXXX`, which
 * JSON decoders put back together, surrogate pairs included), quoted as a
 * JSON string. Only ASCII, `\"` and `\\` escapes: nothing in it can end
 * the literal.
 */
const literal = (value: unknown): string => {
  const ascii = JSON.stringify(value).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`
  )
  return JSON.stringify(ascii)
}

/** Code that binds `name` (a checked identifier) to a JSON value. */
const bindCode = (language: Sandbox.Language, name: string, value: Json) =>
  language === "python"
    ? `${name} = __import__("json").loads(${literal(value)})`
    : `globalThis[${JSON.stringify(name)}] = JSON.parse(${literal(value)})`

/** Code that binds each variable of a record (checked names) to its JSON value. */
const restoreCode = (language: Sandbox.Language, variables: Record<string, Json>) =>
  language === "python"
    ? `globals().update(__import__("json").loads(${literal(variables)}))`
    : `(() => { const v = JSON.parse(${literal(variables)}); for (const k of Object.keys(v)) globalThis[k] = v[k]; })()`

/** The variable the export code leaves its JSON in (read with `getVar`, then deleted). */
const EXPORT_VAR = "_rlm_export"

const pythonExport = (names: ReadonlyArray<string>, per: number, total: number) =>
  [
    "def _rlm_export_vars(names, per, total):",
    "    import json",
    "    out = {}",
    "    bad = []",
    "    used = [0, 0]",
    "    def ok(v, d):",
    "        used[1] += 1",
    "        if used[1] > 200000:",
    "            return False",
    "        t = type(v)",
    "        if v is None or t is bool or t is str:",
    "            return True",
    "        if t is int:",
    "            return -9007199254740991 <= v <= 9007199254740991",
    "        if t is float:",
    "            return v == v and v not in (float('inf'), float('-inf'))",
    `        if d >= ${MAX_JSON_DEPTH}:`,
    "            return False",
    "        if t is list:",
    "            return all(ok(x, d + 1) for x in v)",
    "        if t is dict:",
    "            return all(type(k) is str and ok(x, d + 1) for k, x in v.items())",
    "        return False",
    "    g = globals()",
    "    for n in names:",
    "        if n not in g:",
    "            continue",
    "        v = g[n]",
    "        tn = type(v).__name__[:100]",
    "        used[1] = 0",
    "        try:",
    "            good = ok(v, 0)",
    "        except RecursionError:",
    "            good = False",
    "        if not good:",
    "            bad.append({'name': n, 'type': tn})",
    "            continue",
    "        text = json.dumps(v, ensure_ascii=False, allow_nan=False)",
    "        if len(text) > per or used[0] + len(text) > total:",
    "            bad.append({'name': n, 'type': tn + ' (too large: ' + str(len(text)) + ' characters of JSON)'})",
    "            continue",
    "        used[0] += len(text) + len(n) + 4",
    "        out[n] = v",
    "    return json.dumps({'vars': out, 'bad': bad[:" +
      MAX_UNSERIALIZABLE +
      "]}, ensure_ascii=False, allow_nan=False)",
    `${EXPORT_VAR} = _rlm_export_vars(__import__("json").loads(${literal(names)}), ${per}, ${total})`,
    "del _rlm_export_vars"
  ].join("\n")

const javascriptExport = (names: ReadonlyArray<string>, per: number, total: number) =>
  `(() => {
  const names = JSON.parse(${literal(names)});
  const per = ${per}, total = ${total};
  const out = {}; const bad = []; let used = 0; let nodes = 0;
  const own = (o, k) => Object.getOwnPropertyDescriptor(o, k);
  const ok = (v, d) => {
    if (++nodes > 200000) return false;
    if (v === null) return true;
    const t = typeof v;
    if (t === "string" || t === "boolean") return true;
    if (t === "number") return Number.isFinite(v);
    if (t !== "object" || d >= ${MAX_JSON_DEPTH}) return false;
    if (Array.isArray(v)) {
      if (Object.getPrototypeOf(v) !== Array.prototype) return false;
      for (let i = 0; i < v.length; i++) {
        const p = own(v, String(i));
        if (p === undefined || !("value" in p) || !ok(p.value, d + 1)) return false;
      }
      return true;
    }
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) return false;
    if (Object.getOwnPropertySymbols(v).length > 0) return false;
    for (const k of Object.getOwnPropertyNames(v)) {
      const p = own(v, k);
      if (p === undefined || !("value" in p) || !p.enumerable || !ok(p.value, d + 1)) return false;
    }
    return true;
  };
  const typeOf = (v) => {
    if (v === null) return "null";
    if (Array.isArray(v)) return "Array";
    if (typeof v !== "object") return typeof v;
    try { const c = Object.getPrototypeOf(v); const n = c && own(c, "constructor"); return (n && "value" in n && typeof n.value === "function" && typeof n.value.name === "string" && n.value.name) || "Object"; } catch (e) { return "object"; }
  };
  for (const n of names) {
    const p = own(globalThis, n);
    if (p === undefined) continue;
    if (!("value" in p)) { bad.push({ name: n, type: "accessor" }); continue; }
    const v = p.value;
    const tn = String(typeOf(v)).slice(0, 100);
    nodes = 0;
    let good = false;
    try { good = ok(v, 0); } catch (e) { good = false; }
    if (!good) { bad.push({ name: n, type: tn }); continue; }
    const text = JSON.stringify(v);
    if (text.length > per || used + text.length > total) { bad.push({ name: n, type: tn + " (too large: " + text.length + " characters of JSON)" }); continue; }
    used += text.length + n.length + 4;
    out[n] = v;
  }
  globalThis.${EXPORT_VAR} = JSON.stringify({ vars: out, bad: bad.slice(0, ${MAX_UNSERIALIZABLE}) });
})()`

const deleteExportCode = (language: Sandbox.Language) =>
  language === "python" ? `del ${EXPORT_VAR}` : `delete globalThis.${EXPORT_VAR}`

const Exported = Schema.Struct({
  vars: Schema.Record({ key: Schema.String, value: Json }),
  bad: Schema.Array(Unserializable)
})

type Repl = Sandbox.Repl<BudgetExceeded>

const protocolError = (message: string) => new Sandbox.SandboxError({ reason: "Protocol", message })

/** Run session code (no host calls): a guest error or an aborted block is a sandbox protocol failure. */
const execQuiet = (repl: Repl, code: string, what: string): Effect.Effect<void, Sandbox.SandboxError> =>
  repl.exec(code).pipe(
    Effect.catchTag("BudgetExceeded", (e) => Effect.fail(protocolError(`${what} was aborted: ${e.message}`))),
    Effect.flatMap((r) =>
      r.error === undefined ? Effect.void : Effect.fail(protocolError(`${what} failed: ${r.error.slice(0, 2000)}`))
    )
  )

/** What a state carries that is not in the REPL: variables to restore, and those lost. */
interface Carried {
  readonly variables: Record<string, Json>
  readonly unserializable: ReadonlyArray<Unserializable>
}

const noneCarried: Carried = { variables: {}, unserializable: [] }

/**
 * Builtins of either language that the session's own guest code (binding
 * `history`, restoring and reading variables) relies on: a state may not
 * shadow them.
 */
const BUILTINS_USED: Record<Sandbox.Language, ReadonlySet<string>> = {
  javascript: new Set(["JSON", "Object", "Array", "String", "Number", "Error", "globalThis"]),
  python: new Set(["globals", "len", "type", "str", "list", "dict", "int", "float", "bool", "all", "RecursionError"])
}

/** Why a variable name cannot be restored, or undefined. */
const badName = (name: string, taken: ReadonlySet<string>, language: Sandbox.Language): string | undefined => {
  if (taken.has(name)) return `'${name.slice(0, 100)}' is a name the REPL reserves`
  if (BUILTINS_USED[language].has(name)) return `'${name}' would shadow a builtin the session's code uses`
  return notIdentifier(name)
}

/** Why a name is not an identifier of both languages (or a helper's, a built-in's), or undefined. */
const notIdentifier = (name: string): string | undefined => {
  const invalid = HostTools.checkUserTools([{ name, description: "", parameters: [] }])
  return invalid === undefined ? undefined : invalid.replace("tool name", "variable name")
}

/** The user variables of the REPL: the JSON ones as values, the others by name and type. */
const exportVars = (
  repl: Repl,
  taken: ReadonlySet<string>,
  total: number
): Effect.Effect<Carried, Sandbox.SandboxError> =>
  Effect.gen(function* () {
    const listed = yield* repl.listVars
    const names: Array<string> = []
    const unserializable: Array<Unserializable> = []
    for (const v of listed) {
      if (v.name === "history" || v.name === EXPORT_VAR) continue
      if (badName(v.name, taken, repl.language) !== undefined) {
        unserializable.push({ name: v.name.slice(0, 200), type: `${v.type.slice(0, 100)} (name not restorable)` })
      } else names.push(v.name)
    }
    if (names.length === 0) return { variables: {}, unserializable: unserializable.slice(0, MAX_UNSERIALIZABLE) }
    const code =
      repl.language === "python"
        ? pythonExport(names, MAX_VARIABLE_CHARS, total)
        : javascriptExport(names, MAX_VARIABLE_CHARS, total)
    yield* execQuiet(repl, code, "Reading the variables")
    const read = yield* repl
      .getVar(EXPORT_VAR)
      .pipe(Effect.ensuring(Effect.ignore(repl.exec(deleteExportCode(repl.language)))))
    if (Option.isNone(read)) return yield* protocolError("Reading the variables failed: no result")
    const decoded = Schema.decodeUnknownEither(Schema.parseJson(Exported))(read.value)
    if (decoded._tag === "Left") {
      return yield* protocolError(
        `Reading the variables failed: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left).slice(0, 500)}`
      )
    }
    return {
      variables: decoded.right.vars,
      unserializable: [...unserializable, ...decoded.right.bad].slice(0, MAX_UNSERIALIZABLE)
    }
  })

// ---------------------------------------------------------------------------
// decoding a state
// ---------------------------------------------------------------------------

const invalid = (message: string) => new SessionError({ reason: "InvalidState", message })

/** Whether a value is nested at most `max` deep and is made of arrays and plain objects (iterative: a hostile value cannot overflow the stack). */
const depthWithin = (value: unknown, max: number): boolean => {
  const stack: Array<readonly [unknown, number]> = [[value, 0]]
  let seen = 0
  while (stack.length > 0) {
    const [v, d] = stack.pop()!
    if (++seen > 1_000_000) return false
    if (v === null || typeof v !== "object") continue
    if (d >= max) return false
    // JSON has arrays and plain objects only: a class instance (a Date) would decode as a record of its own keys.
    const proto = Object.getPrototypeOf(v)
    if (!Array.isArray(v) && proto !== Object.prototype && proto !== null) return false
    // A `__proto__` key would be dropped by decoding (it sets the prototype): refused rather than lost.
    if (Object.hasOwn(v, "__proto__")) return false
    for (const child of Object.values(v)) stack.push([child, d + 1])
  }
  return true
}

/**
 * Decode a `SessionState` from untrusted input (a JSON value, as a client
 * sent it), checking what the Schema cannot: variable names (identifiers in
 * both languages, no reserved or helper name, not `history`), sizes
 * ({@link MAX_VARIABLE_CHARS}, {@link MAX_VARIABLES_CHARS},
 * {@link MAX_JSON_DEPTH}), and that the compacted turns are the first ones
 * and the summary covers exactly them.
 *
 * @since 0.3.0
 * @category Decoding
 */
export const decodeState = (input: unknown): Effect.Effect<SessionState, SessionError> =>
  Effect.gen(function* () {
    const vars =
      input !== null && typeof input === "object" && "variables" in input
        ? (input as { variables: unknown }).variables
        : {}
    if (!depthWithin(vars, MAX_JSON_DEPTH + 1)) {
      return yield* invalid(
        `a variable is nested deeper than ${MAX_JSON_DEPTH} levels, has too many values, or is not JSON`
      )
    }
    // Checked before decoding too: a key such as `__proto__` would not survive into the decoded record.
    if (vars !== null && typeof vars === "object") {
      for (const name of Object.keys(vars)) {
        const why = name === "history" ? "'history' is rebound by the session" : notIdentifier(name)
        if (why !== undefined) {
          return yield* invalid(`the variable ${JSON.stringify(name.slice(0, 100))} cannot be restored: ${why}`)
        }
      }
    }
    const state = yield* Schema.decodeUnknown(SessionState)(
      input instanceof SessionState ? Schema.encodeSync(SessionState)(input) : input
    ).pipe(
      Effect.mapError((e) =>
        invalid(`the state does not decode: ${ParseResult.TreeFormatter.formatErrorSync(e).slice(0, 1000)}`)
      )
    )
    yield* checkState(state, new Set())
    return state
  })

const checkState = (state: SessionState, taken: ReadonlySet<string>): Effect.Effect<void, SessionError> =>
  Effect.suspend(() => {
    let total = 0
    for (const [name, value] of Object.entries(state.variables)) {
      const why = name === "history" ? "'history' is rebound by the session" : badName(name, taken, state.language)
      if (why !== undefined)
        return Effect.fail(invalid(`the variable ${JSON.stringify(name.slice(0, 100))} cannot be restored: ${why}`))
      const chars = JSON.stringify(value).length
      if (chars > MAX_VARIABLE_CHARS) {
        return Effect.fail(
          invalid(`the variable '${name}' has ${chars} characters of JSON; the limit is ${MAX_VARIABLE_CHARS}`)
        )
      }
      total += chars
    }
    if (total > MAX_VARIABLES_CHARS) {
      return Effect.fail(invalid(`the variables have ${total} characters of JSON; the limit is ${MAX_VARIABLES_CHARS}`))
    }
    if (state.unserializable.length > MAX_UNSERIALIZABLE) {
      return Effect.fail(invalid(`more than ${MAX_UNSERIALIZABLE} unserializable variables are listed`))
    }
    const compacted = state.turns.findIndex((t) => t.messages !== undefined)
    const summarized = compacted === -1 ? state.turns.length : compacted
    if (state.turns.slice(summarized).some((t) => t.messages === undefined)) {
      return Effect.fail(
        invalid("a turn without messages follows one with messages: only the first turns can be compacted")
      )
    }
    if ((state.summary?.turns ?? 0) !== summarized) {
      return Effect.fail(
        invalid(`the summary covers ${state.summary?.turns ?? 0} turns, but ${summarized} turns have no messages`)
      )
    }
    return Effect.void
  })

// ---------------------------------------------------------------------------
// the session
// ---------------------------------------------------------------------------

/**
 * A turn's host calls: its `HostCall`, and what ends the calls still in
 * flight when the turn's run closes (as closing a run's own REPL would).
 */
interface Binding {
  readonly call: Sandbox.HostCall<BudgetExceeded>
  readonly ended: Deferred.Deferred<void>
  readonly live: Ref.Ref<number>
  readonly idle: Effect.Latch
}

const makeBinding = (call: Sandbox.HostCall<BudgetExceeded>) =>
  Effect.all({
    call: Effect.succeed(call),
    ended: Deferred.make<void>(),
    live: Ref.make(0),
    idle: Effect.makeLatch(true)
  })

/** A host call of the turn, counted while it runs; stopped when the turn ends. */
const hostCall = (binding: Binding, name: string, args: unknown) =>
  Effect.uninterruptibleMask((restore) =>
    Ref.update(binding.live, (n) => n + 1).pipe(
      Effect.zipRight(binding.idle.close),
      Effect.zipRight(
        restore(
          Effect.raceFirst(
            binding.call(name, args),
            Effect.zipRight(
              Deferred.await(binding.ended),
              Effect.fail(new Sandbox.HostCallError({ message: `${name.slice(0, 100)}: the turn ended` }))
            )
          )
        )
      ),
      Effect.ensuring(
        Effect.flatMap(
          Ref.updateAndGet(binding.live, (n) => n - 1),
          (n) => (n === 0 ? binding.idle.open : Effect.void)
        )
      )
    )
  )

/** End a turn's host calls: those in flight are interrupted, and this returns once every one has stopped. */
const endBinding = (binding: Binding) => Effect.zipRight(Deferred.succeed(binding.ended, undefined), binding.idle.await)

/** The session's open interpreter. */
interface Interp {
  readonly repl: Repl
  readonly scope: Scope.CloseableScope
}

const closedError = () =>
  new RunFailed({
    reason: "Sandbox",
    message: "The session is closed (its scope ended): open a new one, or resume an exported state.",
    cause: new SessionError({ reason: "Closed", message: "The session is closed." }),
    trace: undefined,
    partialAnswer: Option.none()
  })

const invalidOptions = (e: SessionError) =>
  new RunFailed({
    reason: "InvalidOptions",
    message: `The session cannot be resumed (${e.reason}): ${e.message}`,
    cause: e,
    trace: undefined,
    partialAnswer: Option.none()
  })

const sandboxFailed = (e: Sandbox.SandboxError) =>
  new RunFailed({
    reason: "Sandbox",
    message: `The sandbox failed (${e.reason}): ${e.message}`,
    cause: e,
    trace: undefined,
    partialAnswer: Option.none()
  })

const turnNote = (turn: number, language: Sandbox.Language) =>
  `This is turn ${turn} of a session: the REPL keeps the variables of the earlier turns, and \`history\` is the list of the earlier turns as {query, answer} (${language === "python" ? "a list of dicts" : "an array of objects"}).`

const LOST_NOTE =
  "The interpreter was replaced since the last turn (a block was interrupted, or the interpreter was lost): the variables of the earlier turns are gone; `history` is still bound."

const finalMessage = (protocol: "fenced" | "tools", reply: string | undefined, answer: string) =>
  chat(
    "assistant",
    protocol === "fenced" && reply !== undefined && reply.trim() !== ""
      ? reply
      : [reply?.trim() ?? "", `Final answer: ${answer}`].filter((s) => s !== "").join("\n\n")
  )

/**
 * Open a session (scoped: its interpreter is shut down with the scope; an
 * `ask` after that fails with `RunFailed` "Sandbox" whose cause is a
 * `SessionError` "Closed"). The interpreter is opened by the first turn,
 * over `options.context`. With `resume`, the state is decoded and checked
 * (see {@link decodeState}; a bad one, or one of another language or
 * protocol, fails with `RunFailed` "InvalidOptions" whose cause is the
 * `SessionError`), and its variables are restored when the interpreter opens.
 *
 * @since 0.3.0
 * @category Constructors
 */
export const make = <Tools extends Record<string, Tool.Any> = {}>(
  options: SessionOptions<Tools> = {}
): Effect.Effect<Session, RlmError, Scope.Scope | LlmAdapter.LlmAdapter | Sandbox.Sandbox | Tool.HandlersFor<Tools>> =>
  Effect.gen(function* () {
    const sandbox = yield* Sandbox.Sandbox
    const env = (yield* Effect.context<LlmAdapter.LlmAdapter | Sandbox.Sandbox>()) as Context.Context<
      LlmAdapter.LlmAdapter | Sandbox.Sandbox
    >
    const scope = yield* Effect.scope
    const protocol = options.protocol ?? "fenced"
    const policy = options.policy instanceof Policy.Policy ? options.policy : Policy.make(options.policy ?? {})
    const compactAt = options.compactAt ?? DEFAULT_COMPACT_AT
    if (!(compactAt > 0)) {
      return yield* Effect.fail(
        new RunFailed({
          reason: "InvalidOptions",
          message: `compactAt must be a positive number of tokens, got ${compactAt}.`,
          cause: undefined,
          trace: undefined,
          partialAnswer: Option.none()
        })
      )
    }
    const taken = new Set([
      ...Sandbox.RESERVED_NAMES,
      ...HostTools.BUILTIN_NAMES,
      ...Object.keys(options.tools?.tools ?? {}),
      "history",
      EXPORT_VAR
    ])
    const resumed =
      options.resume === undefined
        ? undefined
        : yield* decodeState(options.resume).pipe(
            Effect.tap((state) => checkState(state, taken)),
            Effect.filterOrFail(
              (state) => state.language === sandbox.language,
              (state) =>
                new SessionError({
                  reason: "LanguageMismatch",
                  message: `the state is of a ${state.language} session; this sandbox runs ${sandbox.language}`
                })
            ),
            Effect.filterOrFail(
              (state) => state.protocol === protocol,
              (state) =>
                new SessionError({
                  reason: "ProtocolMismatch",
                  message: `the state is of a session under the ${state.protocol} protocol; this one uses ${protocol}`
                })
            ),
            Effect.mapError(invalidOptions)
          )

    const id = resumed?.id ?? globalThis.crypto.randomUUID()
    const conversation = yield* Ref.make<Conversation>({ turns: resumed?.turns ?? [], summary: resumed?.summary })
    const carried = yield* Ref.make<Carried>(
      resumed === undefined ? noneCarried : { variables: resumed.variables, unserializable: resumed.unserializable }
    )
    const context = yield* Ref.make(RlmContext.make(options.context ?? ""))
    const interp = yield* Ref.make(Option.none<Interp>())
    const closed = yield* Ref.make(false)
    /** Whether the interpreter was found replaced when the running turn opened it. */
    const lost = yield* Ref.make(false)
    /** Whether the last turn that opened the REPL answered (false while one runs). */
    const clean = yield* Ref.make(true)
    const lock = yield* Effect.makeSemaphore(1)
    /** The running turn's host calls; none between turns. */
    const host = yield* Ref.make<Binding | undefined>(undefined)
    const routed: Sandbox.HostCall<BudgetExceeded> = (name, args) =>
      Effect.flatMap(Ref.get(host), (binding) =>
        binding === undefined
          ? Effect.fail(
              new Sandbox.HostCallError({
                message: `${name.slice(0, 100)}: host functions can be called only while a turn runs`
              })
            )
          : hostCall(binding, name, args)
      )
    const varsTotal = Math.max(0, Math.min(MAX_VARIABLES_CHARS, policy.maxAnswerChars - 200_000))

    const closeInterp = Effect.flatMap(Ref.getAndSet(interp, Option.none()), (open) =>
      Option.isSome(open) ? Scope.close(open.value.scope, Exit.void) : Effect.void
    )
    yield* Effect.addFinalizer(() => Effect.zipRight(Ref.set(closed, true), closeInterp))

    /** What to put in a state: the REPL's variables when it is open, else the carried ones; lost ones kept listed. */
    const currentVars: Effect.Effect<Carried, Sandbox.SandboxError> = Effect.gen(function* () {
      const open = yield* Ref.get(interp)
      const before = yield* Ref.get(carried)
      if (Option.isNone(open)) return before
      const now = yield* exportVars(open.value.repl, taken, varsTotal)
      const listed = new Set([...Object.keys(now.variables), ...now.unserializable.map((u) => u.name)])
      return {
        variables: now.variables,
        unserializable: [...now.unserializable, ...before.unserializable.filter((u) => !listed.has(u.name))].slice(
          0,
          MAX_UNSERIALIZABLE
        )
      }
    })

    /**
     * The REPL of a turn: the open one, or a fresh one over the current
     * context with the carried variables. Its host calls go to the turn until
     * the run's scope closes, which stops those still in flight.
     */
    const openRepl = (opening: Sandbox.OpenOptions<BudgetExceeded>) =>
      Effect.gen(function* () {
        const binding = yield* makeBinding(opening.host as Sandbox.HostCall<BudgetExceeded>)
        yield* Effect.acquireRelease(Ref.set(host, binding), () =>
          Effect.zipRight(endBinding(binding), Ref.set(host, undefined))
        )
        const open = yield* Ref.get(interp)
        if (Option.isSome(open) && !(yield* Ref.getAndSet(clean, false))) {
          // The last turn did not answer: if it was interrupted in a block, the sandbox replaced the
          // interpreter (silently, the caller having given up), and `history` is gone with the variables.
          const names = yield* Effect.either(open.value.repl.listVars)
          if (names._tag === "Left" || !names.right.some((v) => v.name === "history")) yield* Ref.set(lost, true)
        }
        yield* Ref.set(clean, false)
        const repl = Option.isSome(open)
          ? open.value.repl
          : yield* Effect.gen(function* () {
              const child = yield* Scope.fork(scope, ExecutionStrategy.sequential)
              const opened = yield* sandbox.open({ ...opening, host: routed }).pipe(
                Scope.extend(child),
                Effect.tap((repl) =>
                  Effect.flatMap(Ref.get(carried), (c) =>
                    Object.keys(c.variables).length === 0
                      ? Effect.void
                      : execQuiet(repl, restoreCode(repl.language, c.variables), "Restoring the variables")
                  )
                ),
                Effect.onError(() => Scope.close(child, Exit.void))
              )
              yield* Ref.set(interp, Option.some({ repl: opened, scope: child }))
              yield* Ref.update(carried, (c) => ({ variables: {}, unserializable: c.unserializable }))
              return opened
            })
        const { turns } = yield* Ref.get(conversation)
        const bind = execQuiet(
          repl,
          bindCode(
            repl.language,
            "history",
            turns.map((t) => ({ query: t.query, answer: t.answer }))
          ),
          "Binding history"
        )
        // An interpreter lost since the last turn (an interrupted block replaces it; a crash) is reported once,
        // by the next request: it has been replaced, its variables are gone, and the turn is told so.
        yield* bind.pipe(
          Effect.catchIf(
            (e) => e.stateLost,
            () => Effect.zipRight(Ref.set(lost, true), bind)
          )
        )
        return repl
      })

    /** Before a turn: a new context replaces the interpreter (its JSON variables carried over). */
    const switchContext = (input: RlmContext.Input) =>
      Effect.gen(function* () {
        const open = yield* Ref.get(interp)
        if (Option.isSome(open)) {
          const vars = yield* currentVars.pipe(Effect.mapError(sandboxFailed))
          yield* closeInterp
          yield* Ref.set(carried, vars)
        }
        yield* Ref.set(context, RlmContext.make(input))
      })

    /** A turn's spec, and how to record it once it answered. */
    const prepare = (query: string, ask: AskOptions | undefined) =>
      Effect.gen(function* () {
        if (yield* Ref.get(closed)) return yield* Effect.fail(closedError())
        if (ask?.context !== undefined) yield* switchContext(ask.context)
        const historyLength = yield* Ref.make(0)
        const turnMessages = yield* Ref.make<ReadonlyArray<LlmAdapter.ChatMessage>>([])
        const number = (yield* Ref.get(conversation)).turns.length + 1
        const turn: Rlm.SessionTurn = {
          open: openRepl,
          history: (call) =>
            Effect.tap(compact(conversation, compactAt, call), (history) => Ref.set(historyLength, history.length)),
          note: Effect.map(
            Ref.getAndSet(lost, false),
            (wasLost) =>
              [
                ...(wasLost ? [LOST_NOTE] : []),
                ...(number > 1 || resumed !== undefined ? [turnNote(number, sandbox.language)] : [])
              ].join("\n\n") || undefined
          ),
          onAnswered: (messages) =>
            Effect.flatMap(Ref.get(historyLength), (n) => Ref.set(turnMessages, messages.slice(1 + n)))
        }
        const record = (answered: {
          readonly answer: string
          readonly source: TurnRecord["source"]
          readonly steps: number
          readonly reply: string | undefined
        }) =>
          Effect.flatMap(Effect.zipRight(Ref.set(clean, true), Ref.get(turnMessages)), (messages) =>
            Ref.update(conversation, (c) => ({
              ...c,
              turns: [
                ...c.turns,
                new TurnRecord(
                  {
                    query,
                    answer: answered.answer,
                    source: answered.source,
                    steps: answered.steps,
                    messages: [...messages, finalMessage(protocol, answered.reply, answered.answer)]
                  },
                  true
                )
              ]
            }))
          )
        return { turn, record, context: yield* Ref.get(context) }
      })

    const ask: Session["ask"] = (query, askOptions) =>
      lock.withPermits(1)(
        Effect.gen(function* () {
          const prepared = yield* prepare(query, askOptions)
          const result = yield* Rlm.runTurn(query, prepared.context, options, prepared.turn).pipe(Effect.provide(env))
          const last = [...result.trace.events].reverse().find((e) => e._tag === "StepCompleted" && e.runId === "run")
          yield* prepared.record({
            answer: result.answer,
            source: result.source,
            steps: result.steps,
            reply: last?._tag === "StepCompleted" ? last.reply : undefined
          })
          return result as Rlm.RunResult<string>
        })
      )

    const askStream: Session["askStream"] = (query, askOptions) =>
      Stream.unwrapScoped(
        Effect.gen(function* () {
          yield* Effect.acquireRelease(lock.take(1), () => lock.release(1))
          const prepared = yield* prepare(query, askOptions)
          const lastReply = yield* Ref.make<string | undefined>(undefined)
          return Rlm.streamTurn(query, prepared.context, options, prepared.turn).pipe(
            Stream.tap((event) =>
              event._tag === "StepCompleted" && event.runId === "run"
                ? Ref.set(lastReply, event.reply)
                : event._tag === "Answered"
                  ? Effect.flatMap(Ref.get(lastReply), (reply) =>
                      prepared.record({ answer: event.answer, source: event.source, steps: event.steps, reply })
                    )
                  : Effect.void
            ),
            Stream.provideContext(env)
          )
        })
      )

    const exportState: Session["export"] = lock.withPermits(1)(
      Effect.gen(function* () {
        if (yield* Ref.get(closed)) {
          return yield* new SessionError({
            reason: "Closed",
            message: "The session is closed; nothing can be exported."
          })
        }
        const vars = yield* currentVars.pipe(
          Effect.mapError(
            (e) => new SessionError({ reason: "Sandbox", message: `Reading the REPL's variables failed: ${e.message}` })
          )
        )
        const c = yield* Ref.get(conversation)
        return new SessionState({
          version: 1,
          id,
          language: sandbox.language,
          protocol,
          turns: c.turns,
          ...(c.summary !== undefined ? { summary: c.summary } : {}),
          variables: vars.variables,
          unserializable: vars.unserializable
        })
      })
    )

    return {
      id,
      ask,
      askStream,
      export: exportState,
      turns: Effect.map(Ref.get(conversation), (c) => c.turns.length)
    } satisfies Session
  })
