/**
 * An RLM as an `@effect/ai` `LanguageModel`: any `@effect/ai` program can
 * swap its model for an RLM by swapping a Layer.
 *
 * ```ts
 * const Rlm = RlmLanguageModel.layer({ policy: { maxSteps: 12 } }).pipe(
 *   Layer.provide(OpenAICompatAdapter.layerConfig({ model: "gpt-4.1-mini" })),
 *   Layer.provide(Layer.merge(PythonSandbox.layer(), NodeHttpClient.layerUndici))
 * )
 * const answer = LanguageModel.generateText({ prompt }).pipe(Effect.provide(Rlm))
 * ```
 *
 * ## How a `Prompt` becomes a run
 *
 * - The **query** is the text of the prompt's last user message.
 * - **`P`** (the context) is `options.context` when given, followed by the
 *   messages before the last user message (the system message and earlier
 *   turns), one document each, rendered `role: text`.
 * - When the last user message is longer than `maxQueryChars` (default
 *   4,000), or when nothing else would be the context, the message itself is
 *   put into `P` (its last document) and the root model is given a fixed
 *   query asking it to answer that request. So `generateText({ prompt: hugeText })`
 *   runs over `hugeText` as `P`, and the root model never reads it whole.
 * - A `P` of one document is given as a text; of several, as a list of
 *   documents.
 *
 * Text parts are taken as they are; file parts, tool calls and tool results
 * are rendered as one-line placeholders or JSON; reasoning parts are left
 * out. A prompt without a user message fails with `MalformedInput`.
 *
 * ## The response
 *
 * - `text`: the run's answer. For `generateObject`, the run is given the
 *   object's Schema as its `output`, and `text` is the decoded value encoded as
 *   JSON, so `.value` is the run's typed answer.
 * - `usage`: the tokens of the whole run tree (root calls, sub-calls, child
 *   RLMs). When some call's provider reported no usage, the token fields are
 *   `undefined` (the budget's estimate is in the metadata).
 * - `finishReason`: `"stop"` when the model answered (`FINAL`/`FINAL_VAR`),
 *   `"length"` when the answer was forced at a limit (out of steps, or
 *   `onBudgetExceeded: "answer-now"`).
 * - The finish part's metadata `rlm` holds the steps, the answer's source and
 *   the run tree's totals (`Budget.Totals`).
 * - `streamText` streams every step of the run tree as it completes, as a
 *   reasoning part (`[runId step n]`, the model's reply and the output of its
 *   blocks), then the answer as text, then the finish part.
 *
 * A run that fails (`BudgetExceeded`, `RunFailed`) fails the call with an
 * `AiError` `UnknownError` whose description is the run's message and whose
 * `cause` is the `RlmError` (with its partial trace). Tools are not called:
 * a toolkit is ignored, and a `toolChoice` that requires a tool call fails
 * with `MalformedInput`.
 *
 * The Layer needs the run's own `LlmAdapter` (the root and sub-models) and
 * `Sandbox`; a `TraceRecorder` in the caller's context receives each run's
 * trace events.
 *
 * @since 0.2.0
 */
import * as AiError from "@effect/ai/AiError"
import * as LanguageModel from "@effect/ai/LanguageModel"
import type * as Prompt from "@effect/ai/Prompt"
import type * as Response from "@effect/ai/Response"
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Sandbox from "@rlm-runtime/sandbox/Sandbox"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import type * as Budget from "./Budget.js"
import * as Rlm from "./Rlm.js"
import * as RlmContext from "./RlmContext.js"
import type { RlmError } from "./RlmError.js"
import type * as RunEvent from "./RunEvent.js"

/**
 * @since 0.2.0
 * @category Models
 */
export interface Options extends Omit<Rlm.RunOptions<string>, "output"> {
  /**
   * The context every call runs over, ahead of the prompt's earlier messages
   * in `P` (e.g. a corpus loaded once, asked about by many prompts).
   */
  readonly context?: RlmContext.Input | undefined
  /**
   * Longest last user message used as the query itself, in characters
   * (default 4,000); a longer one is put into `P`.
   */
  readonly maxQueryChars?: number | undefined
  /** Characters of each block's output shown in a streamed reasoning part (default 1,000). */
  readonly reasoningOutputChars?: number | undefined
}

/**
 * What a `Prompt` asks of a run.
 *
 * @since 0.2.0
 * @category Models
 */
export interface RunRequest {
  readonly query: string
  readonly context: RlmContext.Input
}

/**
 * The query the root model is given when the user's request is in `P`.
 *
 * @since 0.2.0
 * @category Constants
 */
export const REQUEST_IN_CONTEXT_QUERY =
  "The user's request is the last document of the context (or the whole context when it is one text), " +
  "after any earlier conversation. Do what it asks and answer it."

const DEFAULT_MAX_QUERY_CHARS = 4_000
const DEFAULT_REASONING_OUTPUT_CHARS = 1_000

const json = (u: unknown): string => {
  try {
    return JSON.stringify(u) ?? String(u)
  } catch {
    return String(u)
  }
}

type Part = Prompt.TextPart | Prompt.FilePart | Prompt.ReasoningPart | Prompt.ToolCallPart | Prompt.ToolResultPart

const partText = (part: Part): string | undefined => {
  switch (part.type) {
    case "text":
      return part.text
    case "reasoning":
      return undefined
    case "file":
      return `[file${part.fileName !== undefined ? ` ${part.fileName}` : ""} (${part.mediaType}) not included]`
    case "tool-call":
      return `[tool call ${part.name}(${json(part.params)})]`
    case "tool-result":
      return `[tool result ${part.name}${part.isFailure ? " (failed)" : ""}: ${json(part.result)}]`
  }
}

/** A message's text: its text parts joined, other parts as placeholders. */
const messageText = (message: Prompt.Message): string =>
  typeof message.content === "string"
    ? message.content
    : (message.content as ReadonlyArray<Part>)
        .map(partText)
        .filter((t): t is string => t !== undefined)
        .join("\n")

const malformed = (method: string, description: string) =>
  new AiError.MalformedInput({ module: "RlmLanguageModel", method, description })

const documentsOf = (input: RlmContext.Input): ReadonlyArray<string> => {
  const ctx = RlmContext.make(input)
  return ctx.documents ?? [ctx.text]
}

/**
 * The query and context of the run that answers `prompt` (see the module
 * documentation for the rules). Fails with `MalformedInput` when the prompt
 * has no user message.
 *
 * @since 0.2.0
 * @category Conversions
 */
export const fromPrompt = (
  prompt: Prompt.Prompt,
  options: Pick<Options, "context" | "maxQueryChars"> = {}
): Effect.Effect<RunRequest, AiError.MalformedInput> => {
  const messages = prompt.content
  const last = messages.map((m) => m.role).lastIndexOf("user")
  if (last === -1) {
    return Effect.fail(
      malformed("fromPrompt", "The prompt has no user message: an RLM answers the last user message's request.")
    )
  }
  const request = messageText(messages[last] as Prompt.Message)
  const earlier = messages.filter((_, i) => i !== last).map((m) => `${m.role}: ${messageText(m)}`)
  const given = options.context !== undefined ? documentsOf(options.context) : []
  const maxQueryChars = options.maxQueryChars ?? DEFAULT_MAX_QUERY_CHARS
  const inContext = request.length > maxQueryChars || (given.length === 0 && earlier.length === 0)
  if (!inContext) {
    const context =
      earlier.length === 0 && options.context !== undefined ? options.context : oneOrMany([...given, ...earlier])
    return Effect.succeed({ query: request, context })
  }
  const documents = [...given, ...earlier]
  return Effect.succeed({
    query: REQUEST_IN_CONTEXT_QUERY,
    context: documents.length === 0 ? request : [...documents, `user: ${request}`]
  })
}

const oneOrMany = (documents: ReadonlyArray<string>): RlmContext.Input =>
  documents.length === 1 ? (documents[0] as string) : documents

/**
 * The response's usage: the run tree's tokens, unknown when some call's usage
 * was not reported.
 */
const usageOf = (totals: Budget.Totals): typeof Response.Usage.Encoded =>
  totals.unknownUsageCalls > 0
    ? { inputTokens: undefined, outputTokens: undefined, totalTokens: undefined }
    : { inputTokens: totals.inputTokens, outputTokens: totals.outputTokens, totalTokens: totals.totalTokens }

const finishOf = (answered: {
  readonly source: "FINAL" | "FINAL_VAR" | "forced"
  readonly steps: number
  readonly totals: Budget.Totals
}): Response.FinishPartEncoded => ({
  type: "finish",
  reason: answered.source === "forced" ? "length" : "stop",
  usage: usageOf(answered.totals),
  metadata: { rlm: { steps: answered.steps, source: answered.source, totals: answered.totals } }
})

const runFailed = (method: string) => (error: RlmError) =>
  new AiError.UnknownError({
    module: "RlmLanguageModel",
    method,
    description: `The RLM run failed (${error._tag}): ${error.message}`,
    cause: error
  })

/** Tools cannot be called from a run: refuse a call that requires one. */
const refuseRequiredTool = (method: string, options: LanguageModel.ProviderOptions) =>
  options.tools.length > 0 && options.toolChoice !== "auto" && options.toolChoice !== "none"
    ? Effect.fail(
        malformed(method, "An RLM does not call tools: a toolChoice that requires a tool call cannot be honoured.")
      )
    : Effect.void

/** The run's `output` Schema, for `generateObject`. */
const outputOf = (options: LanguageModel.ProviderOptions): Schema.Schema<any, any, never> | undefined =>
  options.responseFormat.type === "json" ? (options.responseFormat.schema as Schema.Schema<any, any, never>) : undefined

/** The answer's text: as is, or for `generateObject` the decoded value as JSON. */
const answerText = (
  output: Schema.Schema<any, any, never> | undefined,
  answer: { readonly answer: string; readonly value: unknown }
): Effect.Effect<string, AiError.MalformedOutput> =>
  output === undefined
    ? Effect.succeed(answer.answer)
    : Schema.encodeUnknown(output)(answer.value).pipe(
        Effect.map(json),
        Effect.mapError(
          (cause) =>
            new AiError.MalformedOutput({
              module: "RlmLanguageModel",
              method: "generateObject",
              description: "The run's answer could not be encoded with the object's Schema",
              cause
            })
        )
      )

interface Services {
  readonly adapter: LlmAdapter.LlmAdapter.Service
  readonly sandbox: Sandbox.Sandbox.Service
}

const withServices =
  (services: Services) =>
  <A, E, R>(self: Effect.Effect<A, E, R>) =>
    self.pipe(
      Effect.provideService(LlmAdapter.LlmAdapter, services.adapter),
      Effect.provideService(Sandbox.Sandbox, services.sandbox)
    )

const runOptions = (options: Options, output: Schema.Schema<any, any, never> | undefined): Rlm.RunOptions<any> => {
  const { context: _context, maxQueryChars: _max, reasoningOutputChars: _chars, ...run } = options
  return output === undefined ? run : { ...run, output }
}

const metadataPart = (services: Services): Response.ResponseMetadataPartEncoded => ({
  type: "response-metadata",
  modelId: `rlm(${services.adapter.model("root")})`
})

const generate = (services: Services, options: Options) =>
  Effect.fn("RlmLanguageModel.generateText")(function* (provider: LanguageModel.ProviderOptions) {
    yield* refuseRequiredTool("generateText", provider)
    const request = yield* fromPrompt(provider.prompt, options)
    const output = outputOf(provider)
    const result = yield* Rlm.run(request.query, request.context, runOptions(options, output)).pipe(
      withServices(services),
      Effect.mapError(runFailed("generateText"))
    )
    const text = yield* answerText(output, result)
    const parts: Array<Response.PartEncoded> = [
      metadataPart(services),
      { type: "text", text },
      finishOf({ source: result.source, steps: result.steps, totals: result.totals })
    ]
    return parts
  })

const truncate = (text: string, max: number) =>
  text.length > max ? `${text.slice(0, max)}… (${text.length} chars)` : text

/** A completed step as reasoning text: its model reply, then what each block printed. */
const stepText = (step: RunEvent.RunEvent & { readonly _tag: "StepCompleted" }, maxOutput: number): string => {
  const blocks = step.blocks.map((block, i) => {
    const out = [block.stdout, block.stderr, block.error ?? ""].filter((s) => s.length > 0).join("\n")
    return `[block ${i + 1} output]\n${truncate(out, maxOutput)}`
  })
  const feedback = step.feedback !== undefined ? [`[feedback] ${step.feedback}`] : []
  return [`[${step.runId} step ${step.step}]`, step.reply, ...blocks, ...feedback].join("\n")
}

const streamPartsOf =
  (maxOutput: number, output: Schema.Schema<any, any, never> | undefined) =>
  (event: RunEvent.RunEvent): Effect.Effect<ReadonlyArray<Response.StreamPartEncoded>, AiError.MalformedOutput> => {
    switch (event._tag) {
      case "StepCompleted": {
        const id = `${event.runId}#${event.step}`
        return Effect.succeed([
          { type: "reasoning-start", id },
          { type: "reasoning-delta", id, delta: stepText(event, maxOutput) },
          { type: "reasoning-end", id }
        ])
      }
      case "Answered":
        return Effect.map(answerText(output, event), (text) => [
          { type: "text-start", id: "answer" },
          { type: "text-delta", id: "answer", delta: text },
          { type: "text-end", id: "answer" },
          finishOf(event)
        ])
      default:
        return Effect.succeed([])
    }
  }

const streamed =
  (services: Services, options: Options) =>
  (provider: LanguageModel.ProviderOptions): Stream.Stream<Response.StreamPartEncoded, AiError.AiError> =>
    Stream.unwrap(
      Effect.gen(function* () {
        yield* refuseRequiredTool("streamText", provider)
        const request = yield* fromPrompt(provider.prompt, options)
        const output = outputOf(provider)
        const parts = streamPartsOf(options.reasoningOutputChars ?? DEFAULT_REASONING_OUTPUT_CHARS, output)
        return Rlm.stream(request.query, request.context, runOptions(options, output)).pipe(
          Stream.provideService(LlmAdapter.LlmAdapter, services.adapter),
          Stream.provideService(Sandbox.Sandbox, services.sandbox),
          Stream.mapError(runFailed("streamText")),
          Stream.mapEffect(parts),
          Stream.flattenIterables,
          Stream.prepend(Chunk.of<Response.StreamPartEncoded>(metadataPart(services)))
        )
      })
    )

/**
 * A `LanguageModel` service that answers each prompt by running an RLM over
 * it, with the `LlmAdapter` and `Sandbox` in context.
 *
 * @since 0.2.0
 * @category Constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<LanguageModel.Service, never, LlmAdapter.LlmAdapter | Sandbox.Sandbox> =>
  Effect.gen(function* () {
    const services: Services = { adapter: yield* LlmAdapter.LlmAdapter, sandbox: yield* Sandbox.Sandbox }
    return yield* LanguageModel.make({
      generateText: generate(services, options),
      streamText: streamed(services, options)
    })
  })

/**
 * A Layer providing `LanguageModel` as an RLM (see the module documentation).
 *
 * @since 0.2.0
 * @category Layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<LanguageModel.LanguageModel, never, LlmAdapter.LlmAdapter | Sandbox.Sandbox> =>
  Layer.effect(LanguageModel.LanguageModel, make(options))
