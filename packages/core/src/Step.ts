/**
 * One step of a run, as a pure function.
 *
 * The run loop (`Rlm`) does the effects — the model call, the blocks in the
 * REPL, reading a `FINAL_VAR` variable — and hands their results to
 * {@link decide}, which returns the next {@link RunState} and a tagged
 * {@link Decision}: continue with this feedback, answered, ask for the
 * answer, or fail. Nothing here runs an Effect, reads a clock or touches a
 * sandbox, so every rule of the protocol (the consecutive-error limit,
 * `requireReplBeforeFinal`, a missing `FINAL_VAR`, typed answers, the answer
 * cap, the interpreter-restart limit, the forced answer after `maxSteps`) can
 * be tested as a property over plain values.
 *
 * @since 0.2.0
 */
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Sandbox from "@rlm-runtime/sandbox/Sandbox"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Prompts from "./Prompts.js"
import type * as Protocol from "./Protocol.js"

/**
 * What a step needs to know about the run that does not change between
 * steps: the limits, the language (for messages), the answer's Schema.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Config {
  readonly query: string
  readonly language: Sandbox.Language
  readonly maxSteps: number
  readonly maxConsecutiveErrors: number
  readonly maxSandboxRestarts: number
  readonly maxAnswerChars: number
  readonly requireReplBeforeFinal: boolean
  /** Decode the final answer with this Schema (the text as is, or as JSON). */
  readonly output?: Schema.Schema<any, any, never> | undefined
  /** How the model replies (default `"fenced"`): picks the wording of the feedback. */
  readonly protocol?: Prompts.ReplyProtocol | undefined
}

/**
 * The state of one run between steps: everything the next step depends on.
 *
 * @since 0.2.0
 * @category Models
 */
export class RunState extends Schema.Class<RunState>("@rlm-runtime/core/Step/RunState")({
  /** The last step decided (0 before the first). */
  step: Schema.Int,
  /** Whether the model has seen REPL output (for `requireReplBeforeFinal`). */
  sawOutput: Schema.Boolean,
  /** Steps in a row whose code all failed, or that had nothing to run. */
  consecutiveErrors: Schema.Int,
  /** Interpreters this run has lost so far (each replaced by a fresh one). */
  restarts: Schema.Int,
  /** The best answer seen that was not accepted (one that did not decode), if any. */
  partialAnswer: Schema.optional(Schema.String),
  /** The conversation with the root model so far. */
  messages: Schema.Array(LlmAdapter.ChatMessage)
}) {}

/**
 * The state of a run before its first step: the system prompt and the first
 * user turn.
 *
 * @since 0.2.0
 * @category Constructors
 */
export const initial = (system: string, firstTurn: string): RunState =>
  new RunState(
    {
      step: 0,
      sawOutput: false,
      consecutiveErrors: 0,
      restarts: 0,
      messages: [message("system", system), message("user", firstTurn)]
    },
    true
  )

const message = (role: "system" | "user" | "assistant", content: string) =>
  new LlmAdapter.ChatMessage({ role, content }, true)

/**
 * A budget limit hit inside a block (by a host function's model call or
 * child run), as data.
 *
 * @since 0.2.0
 * @category Models
 */
export const BudgetFailure = Schema.Struct({
  limit: Schema.String,
  value: Schema.Number,
  used: Schema.Number,
  message: Schema.String
})

/**
 * @since 0.2.0
 * @category Models
 */
export type BudgetFailure = typeof BudgetFailure.Type

/**
 * What one code block did. A block the sandbox could not run (a timeout, a
 * refused request, a lost interpreter) is a block with an `error`; `lost` is
 * set when the interpreter was lost and replaced.
 *
 * @since 0.2.0
 * @category Models
 */
export const BlockOutcome = Schema.Struct({
  block: TraceEvent.CodeBlock,
  /** `FINAL(...)` / `FINAL_VAR(...)` called by the block's code. */
  final: Schema.optional(Sandbox.FinalSignal),
  /** The interpreter was lost running this block: the sandbox error's reason and message. */
  lost: Schema.optional(Schema.Struct({ reason: Schema.String, message: Schema.String })),
  /** A budget limit hit by a host call of this block: the run ends after it. */
  budgetExceeded: Schema.optional(BudgetFailure)
})

/**
 * @since 0.2.0
 * @category Models
 */
export type BlockOutcome = typeof BlockOutcome.Type

/**
 * The result of reading the variable a `FINAL_VAR(name)` in the reply names.
 *
 * @since 0.2.0
 * @category Models
 */
export const VarRead = Schema.Union(
  Schema.TaggedStruct("Value", { name: Schema.String, value: Schema.String }),
  Schema.TaggedStruct("Missing", { name: Schema.String }),
  Schema.TaggedStruct("Unreadable", {
    name: Schema.String,
    message: Schema.String,
    /** The read lost the interpreter. */
    lost: Schema.optional(Schema.Struct({ reason: Schema.String, message: Schema.String }))
  })
)

/**
 * @since 0.2.0
 * @category Models
 */
export type VarRead = typeof VarRead.Type

/**
 * The facts of one step: the reply, how it parsed, the blocks that ran (in
 * order; the driver stops after a block that lost the interpreter or hit a
 * budget limit), and the variable read for a `FINAL_VAR`, when
 * {@link varToRead} asked for one.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Input {
  readonly reply: string
  readonly parsed: Protocol.ParsedReply
  readonly outcomes: ReadonlyArray<BlockOutcome>
  readonly read?: VarRead | undefined
  /**
   * How the reply and what the model is told join the conversation. Default:
   * the reply as an assistant turn, then `told.text` as one user turn. The
   * tools protocol answers each tool call with a tool result instead
   * (`ToolProtocol.respond`).
   */
  readonly respond?: ((told: Told) => ReadonlyArray<LlmAdapter.ChatMessage>) | undefined
}

/**
 * What a continuing step tells the model: `feedback` (parse warnings,
 * rejected answers, a lost interpreter), and `text`, the block outputs and
 * that feedback as one message.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Told {
  readonly text: string
  readonly feedback: ReadonlyArray<string>
}

/**
 * Why a run fails, as data; the driver turns it into the typed error.
 *
 * @since 0.2.0
 * @category Models
 */
export type Failure =
  | {
      readonly _tag: "BudgetExceeded"
      readonly limit: string
      readonly value: number
      readonly used: number
      readonly message: string
      readonly partialAnswer: string | undefined
    }
  | {
      readonly _tag: "SandboxRestarts"
      readonly message: string
      readonly partialAnswer: string | undefined
    }

/**
 * What the run does next.
 *
 * @since 0.2.0
 * @category Models
 */
export type Decision =
  /** Send `message` (block outputs and feedback) as the next user turn. */
  | { readonly _tag: "Continue"; readonly message: string }
  /** The run answered. */
  | {
      readonly _tag: "Answered"
      readonly answer: string
      readonly value: unknown
      readonly source: "FINAL" | "FINAL_VAR" | "forced"
    }
  /** Out of steps: ask once for the answer (`message` is already the last user turn). */
  | { readonly _tag: "AskForAnswer"; readonly message: string }
  | { readonly _tag: "Fail"; readonly failure: Failure }

/**
 * What the step's `StepCompleted` event records beside the reply and blocks.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Record {
  readonly feedback?: string
  readonly interpreterLost?: TraceEvent.InterpreterLost
}

/**
 * @since 0.2.0
 * @category Models
 */
export interface Decided {
  readonly state: RunState
  readonly decision: Decision
  readonly record: Record
}

/**
 * A block's output as the model is shown it.
 *
 * @since 0.2.0
 * @category Formatting
 */
export const formatBlock = (i: number, total: number, r: TraceEvent.CodeBlock): string => {
  const parts: Array<string> = []
  if (r.stdout.length > 0) parts.push(r.stdout.replace(/\n$/, ""))
  if (r.stderr.length > 0) parts.push(`[stderr]\n${r.stderr.replace(/\n$/, "")}`)
  if (r.error !== undefined) parts.push(`[error]\n${r.error.replace(/\n$/, "")}`)
  if (parts.length === 0) parts.push("(no output)")
  return `${total > 1 ? `Output of block ${i + 1}:` : "REPL output:"}\n${parts.join("\n")}`
}

/**
 * Decode an answer with the output Schema: the text as is, or as JSON when
 * that fails. `Left`: why it does not decode.
 *
 * @since 0.2.0
 * @category Answers
 */
export const decodeAnswer = (
  schema: Schema.Schema<any, any, never> | undefined,
  text: string
): Either.Either<unknown, string> => {
  if (schema === undefined) return Either.right(text)
  const decode = Schema.decodeUnknownEither(schema)
  const direct = decode(text)
  if (Either.isRight(direct)) return Either.right(direct.right)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return Either.left("the answer is not valid JSON")
  }
  return Either.mapLeft(decode(json), (e) => ParseResult.TreeFormatter.formatErrorSync(e))
}

/** Check an answer against the cap and the output Schema. */
const accept = (
  config: Config,
  text: string
): { readonly value: unknown } | { readonly rejected: string; readonly partial?: string } => {
  if (text.length > config.maxAnswerChars) {
    return {
      rejected: `Your final answer was not accepted: it has ${text.length} characters, over maxAnswerChars=${config.maxAnswerChars}. Answer with a shorter text (what the question asks for, not all the data).`
    }
  }
  const decoded = decodeAnswer(config.output, text)
  if (Either.isLeft(decoded)) {
    return {
      rejected: `Your final answer does not have the required shape: ${decoded.left}. Fix it and answer again.`,
      partial: text
    }
  }
  return { value: decoded.right }
}

const lostNote = (config: Config, lost: TraceEvent.InterpreterLost, skipped: number) =>
  Prompts.interpreterLost({
    language: config.language,
    reason: lost.reason,
    message: lost.message,
    restarts: lost.restarts,
    maxRestarts: config.maxSandboxRestarts,
    skipped
  })

const restartsFailure = (
  config: Config,
  lost: TraceEvent.InterpreterLost,
  runId: string,
  partialAnswer: string | undefined
): Failure => ({
  _tag: "SandboxRestarts",
  message: `The ${config.language} interpreter was lost ${lost.restarts} times in run ${runId}, more than maxSandboxRestarts=${config.maxSandboxRestarts} allows. The last time: ${lost.message}`,
  partialAnswer
})

const record = (feedback: ReadonlyArray<string>, lost: TraceEvent.InterpreterLost | undefined): Record => ({
  ...(feedback.length > 0 ? { feedback: feedback.join("\n") } : {}),
  ...(lost !== undefined ? { interpreterLost: lost } : {})
})

/**
 * The variable the driver must read before {@link decide}: the one a
 * `FINAL_VAR(name)` in the reply names, unless that answer is rejected
 * without asking the REPL (`requireReplBeforeFinal` before any output, or the
 * interpreter was lost during the step).
 *
 * @since 0.2.0
 * @category Steps
 */
export const varToRead = (
  config: Config,
  state: RunState,
  parsed: Protocol.ParsedReply,
  outcomes: ReadonlyArray<BlockOutcome>
): string | undefined => {
  if (parsed.final?._tag !== "FinalVar") return undefined
  if (config.requireReplBeforeFinal && !state.sawOutput && !outcomes.some((o) => o.final !== undefined)) {
    return undefined
  }
  if (outcomes.some((o) => o.lost !== undefined)) return undefined
  return parsed.final.name
}

/**
 * Decide one ordinary step (1 … `maxSteps`) of run `runId`.
 *
 * @since 0.2.0
 * @category Steps
 */
export const decide = (config: Config, state: RunState, input: Input, runId = "run"): Decided => {
  const step = state.step + 1
  const { outcomes, parsed } = input
  const total = parsed.code.length
  const feedback: Array<string> = [...parsed.warnings]
  const outputs: Array<string> = []
  let restarts = state.restarts
  let partial = state.partialAnswer
  let lost: TraceEvent.InterpreterLost | undefined
  let signal: Sandbox.FinalSignal | undefined
  let errors = 0
  const next = (patch: Partial<ConstructorParameters<typeof RunState>[0]>) =>
    new RunState(
      {
        step,
        sawOutput: state.sawOutput,
        consecutiveErrors: state.consecutiveErrors,
        restarts,
        ...(partial !== undefined ? { partialAnswer: partial } : {}),
        messages: state.messages,
        ...patch
      },
      true
    )
  const fail = (failure: Failure): Decided => ({
    state: next({}),
    decision: { _tag: "Fail", failure },
    record: record(feedback, lost)
  })

  for (const [i, outcome] of outcomes.entries()) {
    outputs.push(formatBlock(i, total, outcome.block))
    if (outcome.block.error !== undefined) errors++
    if (outcome.final !== undefined) signal = outcome.final
    if (outcome.lost !== undefined) {
      restarts++
      lost = { reason: outcome.lost.reason, message: outcome.lost.message, restarts }
      if (restarts > config.maxSandboxRestarts) return fail(restartsFailure(config, lost, runId, partial))
    }
    if (outcome.budgetExceeded !== undefined) {
      const b = outcome.budgetExceeded
      return fail({ _tag: "BudgetExceeded", ...b, partialAnswer: partial })
    }
  }
  const skipped = lost !== undefined ? Math.max(0, total - outcomes.length) : 0
  errors += skipped
  if (lost !== undefined) feedback.push(lostNote(config, lost, skipped))

  // The final candidate: a marker in the reply wins over one set by code.
  const marker = parsed.final
  let candidate: { readonly text: string; readonly source: "FINAL" | "FINAL_VAR" } | undefined
  const hasFinal = marker !== undefined || signal !== undefined
  if (hasFinal) {
    if (config.requireReplBeforeFinal && !state.sawOutput && signal === undefined) {
      feedback.push(
        total > 0
          ? "Your final answer was not accepted: you answered before seeing the output of your code. Look at the output first, then answer."
          : "Your final answer was not accepted: you must run code in the REPL and look at its output before answering."
      )
    } else if (marker?._tag === "FinalVar") {
      const read = input.read ?? { _tag: "Missing" as const, name: marker.name }
      if (lost !== undefined) {
        feedback.push(
          `FINAL_VAR(${marker.name}) was not accepted: the interpreter was lost during this step, and its variables with it.`
        )
      } else if (read._tag === "Missing") {
        feedback.push(
          `FINAL_VAR(${marker.name}) names a variable that does not exist in the REPL. Assign it first (variables: call SHOW_VARS()), or answer with FINAL(text).`
        )
      } else if (read._tag === "Unreadable") {
        const rejected = `FINAL_VAR(${marker.name}) could not be read: ${read.message}`
        if (read.lost !== undefined) {
          feedback.push(rejected)
          restarts++
          lost = { reason: read.lost.reason, message: read.lost.message, restarts }
          if (restarts > config.maxSandboxRestarts) return fail(restartsFailure(config, lost, runId, partial))
          feedback.push(lostNote(config, lost, 0))
        } else {
          feedback.push(`${rejected}\nAnswer with FINAL(text), or put a plain string in the variable.`)
        }
      } else {
        candidate = { text: read.value, source: "FINAL_VAR" }
      }
    } else if (marker?._tag === "FinalText") {
      candidate = { text: marker.text, source: "FINAL" }
    } else if (signal !== undefined) {
      candidate = { text: signal.value, source: signal.source }
    }
  }
  if (candidate !== undefined) {
    const accepted = accept(config, candidate.text)
    if ("value" in accepted) {
      return {
        state: next({}),
        decision: { _tag: "Answered", answer: candidate.text, value: accepted.value, source: candidate.source },
        record: record(feedback, lost)
      }
    }
    feedback.push(accepted.rejected)
    if (accepted.partial !== undefined) partial = accepted.partial
  }
  if (parsed.protocol === "empty" && !hasFinal) feedback.push(Prompts.nothingToDo(config.protocol))
  // A malformed marker was told already (a warning): the model meant to answer, not to write code.
  if (parsed.protocol === "prose" && !hasFinal && parsed.warnings.length === 0) feedback.push(proseHint)

  const failedStep = total === 0 ? !hasFinal : errors === total
  const consecutiveErrors = failedStep ? state.consecutiveErrors + 1 : 0
  if (consecutiveErrors >= config.maxConsecutiveErrors) {
    return fail({
      _tag: "BudgetExceeded",
      limit: "maxConsecutiveErrors",
      value: config.maxConsecutiveErrors,
      used: consecutiveErrors,
      message: `Budget exceeded: ${consecutiveErrors} steps in a row failed (maxConsecutiveErrors=${config.maxConsecutiveErrors}).`,
      partialAnswer: partial
    })
  }
  const told = [...outputs, ...feedback].join("\n\n")
  const turn =
    input.respond === undefined
      ? [message("assistant", input.reply), message("user", told)]
      : input.respond({ text: told, feedback })
  const messages = [...state.messages, ...turn]
  const sawOutput = state.sawOutput || total > 0
  if (step >= config.maxSteps) {
    const ask = Prompts.answerNow(config.query, config.protocol)
    return {
      state: next({ sawOutput, consecutiveErrors, messages: [...messages, message("user", ask)] }),
      decision: { _tag: "AskForAnswer", message: ask },
      record: record(feedback, lost)
    }
  }
  return {
    state: next({ sawOutput, consecutiveErrors, messages }),
    decision: { _tag: "Continue", message: told },
    record: record(feedback, lost)
  }
}

/**
 * What the model is told when a reply with no fence does not read as code:
 * nothing was run.
 *
 * @since 0.2.0
 * @category Formatting
 */
export const proseHint =
  "Your reply has no ```repl block and does not read as code, so nothing was run. Put the code to run in a ```repl block, or answer with FINAL(your answer) / FINAL_VAR(name)."

/**
 * The variable to read for the reply to an "answer now" request: the one its
 * `FINAL_VAR(name)` names.
 *
 * @since 0.2.0
 * @category Steps
 */
export const forcedVarToRead = (parsed: Protocol.ParsedReply): string | undefined =>
  parsed.final?._tag === "FinalVar" ? parsed.final.name : undefined

/**
 * The limit that ran out before an "answer now" request.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Exceeded {
  readonly limit: string
  readonly value: number
  readonly used: number
  readonly message: string
}

/**
 * The facts of a forced step: the reply to the "answer now" request, how it
 * parsed, and the variable read for its `FINAL_VAR` (see
 * {@link forcedVarToRead}).
 *
 * @since 0.2.0
 * @category Models
 */
export interface ForcedInput {
  readonly reply: string
  readonly parsed: Protocol.ParsedReply
  readonly read?: VarRead | undefined
  /** The step's number; default: the one after `state.step`. */
  readonly step?: number | undefined
  /**
   * The limit that ran out (`onBudgetExceeded: "answer-now"`); default:
   * `maxSteps`, used up.
   */
  readonly exceeded?: Exceeded | undefined
}

/** The answer a forced reply offers, or why it offers none. */
const forcedCandidate = (
  input: ForcedInput
): { readonly text: string } | { readonly rejected: string; readonly partial?: string | undefined } => {
  const { parsed } = input
  const final = parsed.final
  if (final?._tag === "FinalText") return { text: final.text }
  if (final?._tag === "FinalVar") {
    const read = input.read ?? { _tag: "Missing" as const, name: final.name }
    if (read._tag === "Value") return { text: read.value }
    return read._tag === "Missing"
      ? { rejected: `FINAL_VAR(${final.name}) names a variable that does not exist in the REPL.` }
      : { rejected: `FINAL_VAR(${final.name}) could not be read: ${read.message}` }
  }
  if (parsed.warnings.length > 0 && parsed.protocol === "prose") {
    return { rejected: `its final answer is malformed: ${parsed.warnings.join(" ")}` }
  }
  switch (parsed.protocol) {
    case "empty":
      return { rejected: "the reply was empty." }
    case "prose":
      // Asked to answer in words, the model did: plain prose is the answer.
      return { text: input.reply.trim() }
    default:
      return {
        rejected:
          parsed.code.length > 0
            ? "the reply was code with no FINAL(...) or FINAL_VAR(name); no code is run after the answer is asked for."
            : "the reply had no FINAL(...) or FINAL_VAR(name) answer.",
        partial: parsed.prose
      }
  }
}

/**
 * Decide the reply to an "answer now" request (after `maxSteps`, or the one
 * granted by `onBudgetExceeded: "answer-now"`). No code is run; the reply is
 * the answer (source `"forced"`) when it is a `FINAL(text)`, a `FINAL_VAR`
 * naming a variable that exists, or plain prose (the model was asked to answer
 * in words), and that answer passes the same checks as any other
 * (`requireReplBeforeFinal`, `maxAnswerChars`, the `output` Schema).
 * Otherwise — code, an empty reply, a `FINAL_VAR` naming no variable, a
 * malformed marker, an answer the checks reject — the run fails with
 * `BudgetExceeded` (the limit that ran out, `maxSteps` by default) carrying
 * the best partial answer: the rejected answer, else the last answer the run
 * rejected, else the reply's prose (never one over `maxAnswerChars`). `note` is
 * recorded as the step's feedback, with the reason when the reply is rejected.
 * See the table in `docs/protocol.md`.
 *
 * @since 0.2.0
 * @category Steps
 */
export const decideForced = (config: Config, state: RunState, input: ForcedInput, note: string): Decided => {
  const step = input.step ?? state.step + 1
  const nextState = new RunState({ ...state, step }, true)
  const exceeded = input.exceeded ?? {
    limit: "maxSteps",
    value: config.maxSteps,
    used: step,
    message: `Budget exceeded: no steps left (maxSteps=${config.maxSteps}).`
  }
  const fail = (reason: string, partial: string | undefined): Decided => {
    const best = [partial, state.partialAnswer].find((p) => p !== undefined && p.length <= config.maxAnswerChars)
    return {
      state: nextState,
      decision: {
        _tag: "Fail",
        failure: {
          _tag: "BudgetExceeded",
          limit: exceeded.limit,
          value: exceeded.value,
          used: exceeded.used,
          message: `${exceeded.message} The answer asked for then was not accepted: ${reason}`,
          partialAnswer: best
        }
      },
      record: { feedback: `${note}\n${reason}` }
    }
  }
  const candidate = forcedCandidate(input)
  if ("rejected" in candidate) return fail(candidate.rejected, candidate.partial)
  if (config.requireReplBeforeFinal && !state.sawOutput) {
    return fail(
      "the run never saw the output of its code, and requireReplBeforeFinal asks for that before any answer.",
      candidate.text
    )
  }
  const accepted = accept(config, candidate.text)
  if ("rejected" in accepted) {
    return fail(accepted.rejected, accepted.partial)
  }
  return {
    state: nextState,
    decision: { _tag: "Answered", answer: candidate.text, value: accepted.value, source: "forced" },
    record: { feedback: note }
  }
}
