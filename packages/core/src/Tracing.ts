/**
 * The spans a run tree makes through Effect's tracer (`Effect.useSpan`), and
 * the attributes they carry. Core depends on no tracing backend: provide any
 * tracer Layer (`@effect/opentelemetry`'s `NodeSdk.layer` or `OtlpTracer.layer`,
 * say) and the spans reach it; without one they go to Effect's built-in tracer
 * and nowhere else.
 *
 * ```text
 * rlm.run                      one run of the tree (the root, or an rlm_query child)
 * ├─ rlm.step                  one root-model turn and what it ran
 * │  ├─ rlm.model_call         role "root"
 * │  └─ rlm.block              one code block
 * │     └─ rlm.sub_call        llm_query / rlm_query, one per prompt (batched ones are siblings)
 * │        ├─ rlm.model_call   role "sub" (llm_query)
 * │        └─ rlm.run          the child run (rlm_query)
 * └─ rlm.step ...
 * ```
 *
 * A span fails (error status) when its effect does: a failed run, a model call
 * or sub-call that failed, and a code block that raised an error or was
 * aborted (the run goes on; only the span says so). An interrupted span ends
 * with `rlm.status` "interrupted". Spans carry sizes, never text: no prompt,
 * context, code, reply or output is put in an attribute.
 *
 * @since 0.2.0
 */

/**
 * The span names.
 *
 * @since 0.2.0
 * @category Names
 */
export const SpanName = {
  /** One run of the tree: the top run, or a child run of `rlm_query`. */
  run: "rlm.run",
  /** One root-model turn of a run and the code it ran (also a forced "answer now" turn). */
  step: "rlm.step",
  /** One model call (`ModelCall.call`): a root turn, an `llm_query` prompt, the "answer now" call. */
  modelCall: "rlm.model_call",
  /** One code block of a step, run in the REPL. */
  block: "rlm.block",
  /** One sub-call made by model code: an `llm_query` prompt or an `rlm_query` child run. */
  subCall: "rlm.sub_call"
} as const

/**
 * The attribute keys. Token counts are set only when the provider reported
 * them.
 *
 * @since 0.2.0
 * @category Names
 */
export const Attribute = {
  /** The run's id (`run`, `run/1.0`, ...), on every span of that run. */
  runId: "rlm.run_id",
  /** The run's depth (0: the top run). */
  depth: "rlm.depth",
  /** `rlm.run` of a child: its parent run and the parent's step. */
  parentRunId: "rlm.parent_run_id",
  parentStep: "rlm.parent_step",
  /** `rlm.run`: the sandbox's language and isolation. */
  language: "rlm.language",
  isolation: "rlm.isolation",
  /**
   * `rlm.run`: "answered", "failed", "budget_exceeded" or "interrupted" (as
   * `RunFinished.status`). `rlm.model_call`, `rlm.sub_call`: "ok", "error" or
   * "interrupted".
   */
  status: "rlm.status",
  /** The error's message, when the span failed with a typed error. */
  error: "rlm.error",
  /** `rlm.run`: the steps it took. */
  steps: "rlm.steps",
  /** `rlm.step`, `rlm.block`, `rlm.sub_call`: the step's number in its run (from 1). */
  step: "rlm.step.number",
  /** `rlm.run`: sub-calls the run made (not its descendants). */
  subCalls: "rlm.sub_calls",
  /** `rlm.run`: its cost in USD, when every call of it and its descendants was priced. */
  costUsd: "rlm.cost_usd",
  /** The model: of the run's root calls, of a step's reply, of a call or a sub-call. */
  model: "rlm.model",
  /** Tokens: of the run and its descendants (`rlm.run`), of the reply (`rlm.step`, `rlm.model_call`, `rlm.sub_call`). */
  inputTokens: "rlm.tokens.input",
  outputTokens: "rlm.tokens.output",
  totalTokens: "rlm.tokens.total",
  /** Why the model stopped, when the adapter said. */
  finishReason: "rlm.finish_reason",
  /** `rlm.step`: a forced turn (out of steps, "answer now"): no code is run. */
  forced: "rlm.step.forced",
  /** `rlm.step`: the code blocks its reply held. */
  blocks: "rlm.step.blocks",
  /** `rlm.model_call`: "root" or "sub". */
  role: "rlm.role",
  /** `rlm.model_call`: failed attempts the adapter retried. */
  retries: "rlm.retries",
  /** `rlm.block`: its index in the step, whether it failed, how long the REPL took, its size. */
  blockIndex: "rlm.block.index",
  blockFailed: "rlm.block.failed",
  blockDurationMs: "rlm.block.duration_ms",
  codeChars: "rlm.block.code_chars",
  /** `rlm.sub_call`: "llm_query" or "rlm_query". */
  subCallKind: "rlm.sub_call.kind",
  promptChars: "rlm.sub_call.prompt_chars",
  replyChars: "rlm.sub_call.reply_chars",
  /** `rlm.sub_call` of an `rlm_query`: the child run's id. */
  childRunId: "rlm.child_run_id"
} as const

/**
 * The OpenTelemetry GenAI semantic-convention keys `rlm.model_call` also
 * sets, for backends that understand them.
 *
 * @since 0.2.0
 * @category Names
 */
export const GenAiAttribute = {
  requestModel: "gen_ai.request.model",
  responseModel: "gen_ai.response.model",
  inputTokens: "gen_ai.usage.input_tokens",
  outputTokens: "gen_ai.usage.output_tokens"
} as const
