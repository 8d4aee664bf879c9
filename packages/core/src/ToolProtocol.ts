/**
 * The tools protocol: the root model drives the REPL through the provider's
 * tools API instead of fenced code blocks.
 *
 * Each root request carries two tools, `run_code({ code })` and
 * `final_answer({ answer } | { variable })`. A reply's tool calls become the
 * same {@link Protocol.ParsedReply} the fenced protocol gives `Step.decide`
 * (the `run_code` calls are the code blocks, in order; the first
 * `final_answer` call is the final marker), and what the step tells the
 * model goes back as one tool result per call, bound to its call id
 * ({@link respond}). A malformed call (arguments that are not JSON, a
 * missing `code`, a tool that does not exist) is a warning the model is told
 * in that call's result, and a reply with no tool call gets the hint to call
 * one — the run goes on either way.
 *
 * @since 0.2.0
 */
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import type * as Sandbox from "@rlm-runtime/sandbox/Sandbox"
import * as Either from "effect/Either"
import type * as Protocol from "./Protocol.js"
import * as Step from "./Step.js"

/**
 * The name of the tool that runs code in the REPL.
 *
 * @since 0.2.0
 * @category Constants
 */
export const RUN_CODE = "run_code"

/**
 * The name of the tool that answers.
 *
 * @since 0.2.0
 * @category Constants
 */
export const FINAL_ANSWER = "final_answer"

/**
 * The two tools of a root request, for a REPL in `language`.
 *
 * @since 0.2.0
 * @category Tools
 */
export const tools = (language: Sandbox.Language): ReadonlyArray<LlmAdapter.ToolDefinition> => {
  const name = language === "javascript" ? "JavaScript" : "Python"
  return [
    new LlmAdapter.ToolDefinition(
      {
        name: RUN_CODE,
        description: `Run ${name} code in the persistent REPL that holds the prompt as P. Returns what the code printed, and its error if it failed. Variables persist between calls.`,
        parameters: {
          type: "object",
          properties: { code: { type: "string", description: `The ${name} code to run.` } },
          required: ["code"],
          additionalProperties: false
        }
      },
      true
    ),
    new LlmAdapter.ToolDefinition(
      {
        name: FINAL_ANSWER,
        description:
          "Give the final answer and end the task. Pass either answer (the answer text) or variable (the name of a REPL variable holding it), not both.",
        parameters: {
          type: "object",
          properties: {
            answer: { type: "string", description: "The final answer." },
            variable: { type: "string", description: "The name of a REPL variable whose value is the final answer." }
          },
          additionalProperties: false
        }
      },
      true
    )
  ]
}

/**
 * What became of one tool call of a reply.
 *
 * @since 0.2.0
 * @category Models
 */
export type Plan =
  /** A `run_code` call: block `block` of the parsed reply. */
  | { readonly _tag: "Code"; readonly call: LlmAdapter.ToolCall; readonly block: number }
  /** The `final_answer` call that is the reply's final marker. */
  | { readonly _tag: "Final"; readonly call: LlmAdapter.ToolCall }
  /** A call that did nothing: malformed, unknown, or a second `final_answer`; `message` tells the model why. */
  | { readonly _tag: "Rejected"; readonly call: LlmAdapter.ToolCall; readonly message: string }

/**
 * A reply of the tools protocol: its text, its tool calls and what became of
 * each, and the parsed reply `Step.decide` takes.
 *
 * @since 0.2.0
 * @category Models
 */
export interface Turn {
  readonly reply: string
  readonly toolCalls: ReadonlyArray<LlmAdapter.ToolCall>
  readonly plans: ReadonlyArray<Plan>
  readonly parsed: Protocol.ParsedReply
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/

const preview = (text: string, max = 120): string => JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text)

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

type Read =
  | { readonly _tag: "Code"; readonly code: string }
  | { readonly _tag: "Final"; readonly marker: Protocol.FinalMarker }
  | { readonly _tag: "Rejected"; readonly message: string }

const rejected = (message: string): Read => ({ _tag: "Rejected", message })

/** The arguments of a call as an object, or why they are not one. */
const argumentsOf = (call: LlmAdapter.ToolCall): Either.Either<Record<string, unknown>, string> =>
  Either.flatMap(LlmAdapter.decodeArguments(call), (args) =>
    isObject(args)
      ? Either.right(args)
      : Either.left(`the arguments are not a JSON object (got ${preview(call.arguments)})`)
  )

const readRunCode = (call: LlmAdapter.ToolCall): Read =>
  Either.match(argumentsOf(call), {
    onLeft: (why) => rejected(`Your ${RUN_CODE} call was not run: ${why}. Call it with {"code": "<code>"}.`),
    onRight: (args) => {
      const code = args.code
      if (typeof code !== "string") {
        return rejected(
          `Your ${RUN_CODE} call was not run: it needs a "code" string argument, got ${preview(call.arguments)}.`
        )
      }
      if (code.trim().length === 0) return rejected(`Your ${RUN_CODE} call was not run: its code is empty.`)
      return { _tag: "Code", code }
    }
  })

const readFinalAnswer = (call: LlmAdapter.ToolCall): Read =>
  Either.match(argumentsOf(call), {
    onLeft: (why) =>
      rejected(
        `Your ${FINAL_ANSWER} call was not accepted: ${why}. Call it with {"answer": "..."} or {"variable": "name"}.`
      ),
    onRight: (args) => {
      const { answer, variable } = args
      const hasAnswer = answer !== undefined && answer !== null
      const hasVariable = variable !== undefined && variable !== null
      if (hasAnswer && hasVariable) {
        return rejected(`Your ${FINAL_ANSWER} call was not accepted: give either "answer" or "variable", not both.`)
      }
      if (hasVariable) {
        const name = typeof variable === "string" ? variable.trim() : ""
        return IDENT.test(name)
          ? { _tag: "Final", marker: { _tag: "FinalVar", name } }
          : rejected(
              `Your ${FINAL_ANSWER} call was not accepted: "variable" must be the name of a REPL variable, got ${preview(JSON.stringify(variable))}.`
            )
      }
      if (hasAnswer) {
        // A structured answer (for a typed output) is taken as its JSON text.
        const text = typeof answer === "string" ? answer : JSON.stringify(answer)
        return { _tag: "Final", marker: { _tag: "FinalText", text } }
      }
      return rejected(`Your ${FINAL_ANSWER} call was not accepted: it needs an "answer" or a "variable" argument.`)
    }
  })

/**
 * Read a reply of the tools protocol: `run_code` calls are the code blocks in
 * order, the first valid `final_answer` call the final marker; every other
 * call is rejected with a warning for the model. A reply with no tool call
 * parses as `"empty"` (the step tells the model to call a tool); its text is
 * not run.
 *
 * @since 0.2.0
 * @category Parsing
 */
export const parse = (response: {
  readonly text: string
  readonly toolCalls?: ReadonlyArray<LlmAdapter.ToolCall> | undefined
}): Turn => {
  const toolCalls = response.toolCalls ?? []
  const code: Array<string> = []
  const warnings: Array<string> = []
  const plans: Array<Plan> = []
  let final: Protocol.FinalMarker | undefined
  for (const call of toolCalls) {
    const read =
      call.name === RUN_CODE
        ? readRunCode(call)
        : call.name === FINAL_ANSWER
          ? final === undefined
            ? readFinalAnswer(call)
            : rejected(`Only the first ${FINAL_ANSWER} call of a reply counts; this one was ignored.`)
          : rejected(
              `There is no tool named ${preview(call.name)}. The tools are ${RUN_CODE}({"code": ...}) and ${FINAL_ANSWER}({"answer": ...} or {"variable": ...}).`
            )
    switch (read._tag) {
      case "Code":
        code.push(read.code)
        plans.push({ _tag: "Code", call, block: code.length - 1 })
        break
      case "Final":
        final = read.marker
        plans.push({ _tag: "Final", call })
        break
      case "Rejected":
        warnings.push(read.message)
        plans.push({ _tag: "Rejected", call, message: read.message })
    }
  }
  return {
    reply: response.text,
    toolCalls,
    plans,
    parsed: {
      protocol: toolCalls.length === 0 ? "empty" : "tools",
      code,
      ...(final !== undefined ? { final } : {}),
      warnings
    }
  }
}

const message = (fields: ConstructorParameters<typeof LlmAdapter.ChatMessage>[0]) =>
  new LlmAdapter.ChatMessage(fields, true)

/**
 * The messages a continuing step adds to the conversation: the reply as an
 * assistant turn with its tool calls, then one tool result per call, bound to
 * its id — a `run_code` call's block output (or why it did not run), a
 * rejected call's warning, and for a `final_answer` call, why the answer was
 * not accepted. Feedback that belongs to no call goes with the
 * `final_answer` result, else in a user turn after the results. A reply with
 * no tool call is answered like the fenced protocol's: one user turn.
 *
 * @since 0.2.0
 * @category Responding
 */
export const respond =
  (turn: Turn, outcomes: ReadonlyArray<Step.BlockOutcome>) =>
  (told: Step.Told): ReadonlyArray<LlmAdapter.ChatMessage> => {
    if (turn.toolCalls.length === 0) {
      return [message({ role: "assistant", content: turn.reply }), message({ role: "user", content: told.text })]
    }
    const own = new Set(turn.plans.flatMap((plan) => (plan._tag === "Rejected" ? [plan.message] : [])))
    const general = told.feedback.filter((line) => !own.has(line))
    const answered = turn.plans.some((plan) => plan._tag === "Final")
    const resultOf = (plan: Plan): string => {
      switch (plan._tag) {
        case "Code": {
          const outcome = outcomes[plan.block]
          return outcome === undefined
            ? `Not run: the interpreter was lost in an earlier ${RUN_CODE} call of this reply.`
            : Step.formatBlock(0, 1, outcome.block)
        }
        case "Final":
          return ["Your final answer was not accepted.", ...general].join("\n\n")
        case "Rejected":
          return plan.message
      }
    }
    const results = turn.plans.map((plan) =>
      message({ role: "tool", content: resultOf(plan), toolCallId: plan.call.id, toolName: plan.call.name })
    )
    return [
      message({ role: "assistant", content: turn.reply, toolCalls: turn.toolCalls }),
      ...results,
      ...(!answered && general.length > 0 ? [message({ role: "user", content: general.join("\n\n") })] : [])
    ]
  }

/**
 * A reply's tool calls as the trace records them (`StepCompleted.toolCalls`).
 *
 * @since 0.2.0
 * @category Tracing
 */
export const traced = (
  toolCalls: ReadonlyArray<LlmAdapter.ToolCall> | undefined
): {
  readonly toolCalls?: ReadonlyArray<{ readonly id: string; readonly name: string; readonly arguments: string }>
} =>
  toolCalls === undefined || toolCalls.length === 0
    ? {}
    : { toolCalls: toolCalls.map((call) => ({ id: call.id, name: call.name, arguments: call.arguments })) }
