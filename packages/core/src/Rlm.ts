/**
 * The RLM run loop.
 *
 * `Rlm.run(query, context, options)` opens a REPL from the `Sandbox` service,
 * loads the context into it once, and lets the root model (the `LlmAdapter`)
 * drive it turn by turn until it answers. Model code reaches sub-models
 * through host functions that share one budget across the whole run tree.
 *
 * @since 0.1.0
 */

import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Sandbox from "@rlm-runtime/sandbox/Sandbox"
import { sha256 } from "@rlm-runtime/trace/Hash"
import { Trace } from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import { TraceRecorder } from "@rlm-runtime/trace/TraceRecorder"
import type * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Budget from "./Budget.js"
import * as ModelCall from "./ModelCall.js"
import * as Policy from "./Policy.js"
import * as Prompts from "./Prompts.js"
import * as Protocol from "./Protocol.js"
import * as RlmContext from "./RlmContext.js"
import { BudgetExceeded, type RlmError, RunFailed } from "./RlmError.js"

/**
 * @since 0.1.0
 * @category Models
 */
export interface RunOptions<A = string> {
  /** Limits of the run tree; defaults from `Policy.defaults`. */
  readonly policy?: Policy.Policy | ConstructorParameters<typeof Policy.Policy>[0] | undefined
  /** Replaces the system prompt chosen for the sandbox's language. */
  readonly systemPrompt?: string | undefined
  /** Reject a final answer until the model has seen REPL output (recommended for local Llama models). */
  readonly requireReplBeforeFinal?: boolean | undefined
  /** Characters of each block's output shown to the model (default 20,000). */
  readonly outputLimit?: number | undefined
  /** Per code block execution limit (default: the sandbox's, 30 s). */
  readonly execTimeout?: Duration.DurationInput | undefined
  /** Characters of the context preview the root model is told. Default 200. */
  readonly previewChars?: number | undefined
  /**
   * Decode the final answer with this Schema. The answer text is decoded as
   * is, or as JSON when that fails; an answer that does not decode is told to
   * the model to fix, within the step budget.
   */
  readonly output?: Schema.Schema<A, any, never> | undefined
}

/**
 * @since 0.1.0
 * @category Models
 */
export interface RunResult<A = string> {
  /** The final answer as text. */
  readonly answer: string
  /** The answer decoded with the `output` Schema (the text when there is none). */
  readonly value: A
  readonly source: "FINAL" | "FINAL_VAR" | "forced"
  /** Root steps taken by the top-level run. */
  readonly steps: number
  /** Usage of the whole run tree. */
  readonly totals: Budget.Totals
  readonly trace: Trace
}

// ---------------------------------------------------------------------------
// internals
// ---------------------------------------------------------------------------

interface Tree {
  readonly budget: Budget.Budget
  readonly policy: Policy.Policy
  readonly adapter: LlmAdapter.LlmAdapter.Service
  readonly sandbox: Sandbox.Sandbox.Service
  readonly events: Ref.Ref<Chunk.Chunk<TraceEvent.TraceEvent>>
  readonly recorder: Option.Option<TraceRecorder["Type"]>
  readonly options: RunOptions<any>
}

interface RunCtx {
  readonly tree: Tree
  readonly runId: string
  readonly depth: number
  readonly step: Ref.Ref<number>
  /** A fatal error raised inside a host function (budget), ending the run after the block. */
  readonly fatal: Ref.Ref<Option.Option<BudgetExceeded>>
  /** Usage of this run and of every ancestor, updated on each call. */
  readonly usage: ReadonlyArray<Ref.Ref<RunUsage>>
  readonly subCalls: Ref.Ref<number>
  readonly children: Ref.Ref<number>
}

interface Answer {
  readonly answer: string
  readonly value: unknown
  readonly source: "FINAL" | "FINAL_VAR" | "forced"
  readonly steps: number
}

const usageOf = (u: LlmAdapter.Usage): TraceEvent.TokenUsage => ({
  ...(u.inputTokens !== undefined ? { inputTokens: u.inputTokens } : {}),
  ...(u.outputTokens !== undefined ? { outputTokens: u.outputTokens } : {}),
  ...(u.totalTokens !== undefined ? { totalTokens: u.totalTokens } : {})
})

/**
 * What a run and its descendants used: tokens, and the cost of the calls to
 * priced models (`RunFinished.costUsd`, given only when every call was priced).
 */
interface RunUsage {
  readonly tokens: TraceEvent.TokenUsage
  readonly costUsd: number
  readonly calls: number
  readonly unpricedCalls: number
}

const emptyRunUsage: RunUsage = { tokens: {}, costUsd: 0, calls: 0, unpricedCalls: 0 }

/** `RunFinished.costUsd`: the run's cost when at least one call was made and every call's model is priced. */
const runCost = (u: RunUsage): { readonly costUsd?: number } =>
  u.calls > 0 && u.unpricedCalls === 0 ? { costUsd: u.costUsd } : {}

/** Add a call's usage and cost (from `Budget.commit`; `undefined`: unpriced) to its run and every ancestor run. */
const countUsage = (ctx: RunCtx, usage: LlmAdapter.Usage, cost: number | undefined) =>
  Effect.forEach(
    ctx.usage,
    (ref) =>
      Ref.update(ref, (u) => ({
        tokens: TraceEvent.addUsage(u.tokens, usageOf(usage)),
        costUsd: u.costUsd + (cost ?? 0),
        calls: u.calls + 1,
        unpricedCalls: u.unpricedCalls + (cost === undefined ? 1 : 0)
      })),
    { discard: true }
  )

const emit = (tree: Tree, event: TraceEvent.TraceEvent) =>
  Ref.update(tree.events, Chunk.append(event)).pipe(
    Effect.zipRight(Option.match(tree.recorder, { onNone: () => Effect.void, onSome: (r) => r.record(event) }))
  )

const snapshot = (tree: Tree) =>
  Effect.map(Ref.get(tree.events), (events) => new Trace({ events: Chunk.toReadonlyArray(events) }))

/** One model call through `ModelCall`, its usage counted for its run and every ancestor. */
const modelCall = (
  ctx: RunCtx,
  role: LlmAdapter.CallRole,
  messages: ReadonlyArray<LlmAdapter.ChatMessage>,
  /**
   * Runs with the response, in the same uninterruptible region that counts its
   * usage: a call whose usage is counted is always recorded in the trace.
   */
  onResponse: (response: LlmAdapter.ChatResponse) => Effect.Effect<void> = () => Effect.void,
  admission: "reserve" | "grant" = "reserve"
): Effect.Effect<LlmAdapter.ChatResponse, LlmAdapter.LlmError | BudgetExceeded> =>
  ModelCall.call(ctx.tree, {
    role,
    depth: ctx.depth,
    messages,
    admission,
    onCommit: (response, cost) => Effect.zipRight(countUsage(ctx, response.usage, cost), onResponse(response))
  })

const hostError = (message: string, cause?: unknown) =>
  new Sandbox.HostCallError(cause === undefined ? { message } : { message, cause })

/** Remember a budget failure raised inside model code, so the run ends after the block. */
const markFatal = (ctx: RunCtx, e: BudgetExceeded) =>
  Ref.update(ctx.fatal, (f) => (Option.isSome(f) ? f : Option.some(e))).pipe(
    Effect.zipRight(Effect.fail(hostError(e.message, e)))
  )

/**
 * A sub-call prompt over `maxPromptChars` fails that call before anything is
 * sent or recorded (the sandbox refuses one too; this is the host's own check).
 */
const refusePrompt = (ctx: RunCtx, kind: "llm_query" | "rlm_query", prompt: string) => {
  const max = ctx.tree.policy.maxPromptChars
  return prompt.length > max
    ? Effect.fail(
        hostError(
          `${kind} refused: the prompt has ${prompt.length} characters, over maxPromptChars=${max}. Pass a part of P (a chunk or a slice), not all of it.`
        )
      )
    : Effect.void
}

const llmQuery = (ctx: RunCtx, prompt: string): Effect.Effect<string, Sandbox.HostCallError> =>
  Effect.gen(function* () {
    yield* refusePrompt(ctx, "llm_query", prompt)
    const parentStep = yield* Ref.get(ctx.step)
    const start = Date.now()
    const model = ctx.tree.adapter.model("sub")
    const baseOf = () => ({
      runId: ctx.runId,
      parentStep,
      kind: "llm_query" as const,
      model,
      prompt,
      promptSha256: sha256(prompt),
      promptChars: prompt.length,
      durationMs: Date.now() - start
    })
    const exit = yield* Effect.exit(
      modelCall(ctx, "sub", [new LlmAdapter.ChatMessage({ role: "user", content: prompt }, true)], (response) =>
        emit(
          ctx.tree,
          new TraceEvent.SubCall({
            ...baseOf(),
            model: response.model,
            reply: response.text,
            replySha256: sha256(response.text),
            replyChars: response.text.length,
            usage: usageOf(response.usage)
          })
        )
      )
    )
    yield* Ref.update(ctx.subCalls, (n) => n + 1)
    if (exit._tag === "Success") return exit.value.text
    const base = baseOf()
    const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
    if (failure instanceof BudgetExceeded) {
      yield* emit(ctx.tree, new TraceEvent.SubCall({ ...base, error: failure.message, usage: {} }))
      return yield* markFatal(ctx, failure)
    }
    if (failure instanceof LlmAdapter.LlmError) {
      yield* emit(ctx.tree, new TraceEvent.SubCall({ ...base, error: failure.message, usage: {} }))
      return yield* Effect.fail(hostError(`llm_query failed (${failure.reason}): ${failure.message}`, failure))
    }
    return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
  })

const batched =
  (ctx: RunCtx, one: (prompt: string) => Effect.Effect<string, Sandbox.HostCallError>) =>
  (prompts: ReadonlyArray<string>): Effect.Effect<ReadonlyArray<string>, Sandbox.HostCallError> =>
    Effect.forEach(
      prompts,
      (prompt) =>
        ctx.tree.policy.batchFailure === "fail-all"
          ? one(prompt)
          : one(prompt).pipe(
              Effect.catchAll((e) =>
                // A budget failure still ends the batch: nothing more may be sent.
                e.cause instanceof BudgetExceeded ? Effect.fail(e) : Effect.succeed(`Error: ${e.message}`)
              )
            ),
      // Bounded here too: thousands of fibers queued on one Semaphore wake each other on every release.
      { concurrency: ctx.tree.policy.concurrency }
    )

const rlmQuery = (ctx: RunCtx, prompt: string): Effect.Effect<string, Sandbox.HostCallError> =>
  Effect.gen(function* () {
    const { tree } = ctx
    yield* refusePrompt(ctx, "rlm_query", prompt)
    if (ctx.depth + 1 > tree.policy.maxDepth) return yield* llmQuery(ctx, prompt)
    const parentStep = yield* Ref.get(ctx.step)
    const index = yield* Ref.getAndUpdate(ctx.children, (n) => n + 1)
    const childRunId = `${ctx.runId}/${parentStep}.${index}`
    const start = Date.now()
    const reserved = yield* Effect.either(tree.budget.reserveSubCall)
    if (reserved._tag === "Left") return yield* markFatal(ctx, reserved.left)
    yield* Ref.update(ctx.subCalls, (n) => n + 1)
    const exit = yield* Effect.exit(
      tree.budget.permit(ctx.depth)(
        runOne(tree, {
          runId: childRunId,
          depth: ctx.depth + 1,
          parentRunId: ctx.runId,
          parentStep,
          query: "The context is a task together with the data it needs. Do what it asks and answer it.",
          context: RlmContext.make(prompt),
          usage: ctx.usage
        })
      )
    )
    const base = {
      runId: ctx.runId,
      parentStep,
      kind: "rlm_query" as const,
      model: tree.adapter.model("root"),
      prompt,
      promptSha256: sha256(prompt),
      promptChars: prompt.length,
      durationMs: Date.now() - start,
      // The child's own calls carry its usage; counting it here too would count it twice.
      usage: {},
      childRunId
    }
    if (exit._tag === "Success") {
      const reply = exit.value.answer
      yield* emit(
        tree,
        new TraceEvent.SubCall({ ...base, reply, replySha256: sha256(reply), replyChars: reply.length })
      )
      return reply
    }
    const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
    if (failure === undefined) return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
    yield* emit(tree, new TraceEvent.SubCall({ ...base, error: failure.message }))
    if (failure instanceof BudgetExceeded) return yield* markFatal(ctx, failure)
    return yield* Effect.fail(hostError(`rlm_query failed: ${failure.message}`, failure))
  })

const formatBlock = (i: number, total: number, r: Sandbox.ExecResult): string => {
  const parts: Array<string> = []
  if (r.stdout.length > 0) parts.push(r.stdout.replace(/\n$/, ""))
  if (r.stderr.length > 0) parts.push(`[stderr]\n${r.stderr.replace(/\n$/, "")}`)
  if (r.error !== undefined) parts.push(`[error]\n${r.error.replace(/\n$/, "")}`)
  if (parts.length === 0) parts.push("(no output)")
  return `${total > 1 ? `Output of block ${i + 1}:` : "REPL output:"}\n${parts.join("\n")}`
}

const decodeAnswer = (schema: Schema.Schema<any, any, never> | undefined, text: string) => {
  if (schema === undefined) return Effect.succeed(text as unknown)
  const decode = Schema.decodeUnknown(schema)
  return decode(text).pipe(
    Effect.orElse(() =>
      Effect.try(() => JSON.parse(text) as unknown).pipe(
        Effect.mapError(() => "the answer is not valid JSON"),
        Effect.flatMap((json) =>
          decode(json).pipe(Effect.mapError((e) => ParseResult.TreeFormatter.formatErrorSync(e)))
        )
      )
    )
  )
}

interface RunSpec {
  readonly runId: string
  readonly depth: number
  readonly parentRunId?: string
  readonly parentStep?: number
  readonly query: string
  readonly context: RlmContext.RlmContext
  readonly usage: ReadonlyArray<Ref.Ref<RunUsage>>
}

const runOne = (tree: Tree, spec: RunSpec): Effect.Effect<Answer, RlmError> =>
  Effect.gen(function* () {
    const { adapter, options, policy, sandbox } = tree
    const started = Date.now()
    const ownUsage = yield* Ref.make<RunUsage>(emptyRunUsage)
    const ctx: RunCtx = {
      tree,
      runId: spec.runId,
      depth: spec.depth,
      step: yield* Ref.make(0),
      fatal: yield* Ref.make(Option.none<BudgetExceeded>()),
      usage: [ownUsage, ...spec.usage],
      subCalls: yield* Ref.make(0),
      children: yield* Ref.make(0)
    }
    const meta = RlmContext.metadata(spec.context, { previewChars: options.previewChars ?? 200 })
    const finish = (status: TraceEvent.RunFinished["status"], error?: string) =>
      Effect.gen(function* () {
        const used = yield* Ref.get(ownUsage)
        yield* emit(
          tree,
          new TraceEvent.RunFinished({
            runId: spec.runId,
            status,
            steps: yield* Ref.get(ctx.step),
            subCalls: yield* Ref.get(ctx.subCalls),
            usage: used.tokens,
            ...runCost(used),
            durationMs: Date.now() - started,
            ...(error !== undefined ? { error } : {})
          })
        )
      })

    const body = Effect.gen(function* () {
      yield* emit(
        tree,
        new TraceEvent.RunStarted({
          runId: spec.runId,
          ...(spec.parentRunId !== undefined ? { parentRunId: spec.parentRunId } : {}),
          ...(spec.parentStep !== undefined ? { parentStep: spec.parentStep } : {}),
          depth: spec.depth,
          query: spec.query,
          context: meta,
          model: adapter.model("root"),
          language: sandbox.language,
          isolation: sandbox.isolation,
          timestamp: Date.now()
        })
      )
      const repl = yield* sandbox
        .open({
          context: { text: spec.context.text, documents: spec.context.documents },
          host: {
            llmQuery: (p) => llmQuery(ctx, p),
            llmQueryBatched: batched(ctx, (p) => llmQuery(ctx, p)),
            rlmQuery: (p) => rlmQuery(ctx, p),
            rlmQueryBatched: batched(ctx, (p) => rlmQuery(ctx, p))
          },
          outputLimit: options.outputLimit,
          execTimeout: options.execTimeout,
          maxAnswerChars: policy.maxAnswerChars,
          maxPromptChars: policy.maxPromptChars,
          maxLineBytes: policy.maxLineBytes
        })
        .pipe(Effect.mapError(sandboxFailed))

      const system = options.systemPrompt ?? Prompts.systemPromptFor(sandbox.language)
      const extra = options.output ? Prompts.typedAnswer(String(options.output.ast)) : undefined
      const messages: Array<LlmAdapter.ChatMessage> = [
        new LlmAdapter.ChatMessage({ role: "system", content: system }, true),
        new LlmAdapter.ChatMessage({ role: "user", content: Prompts.firstTurn(spec.query, meta, extra) }, true)
      ]
      let sawOutput = false
      let consecutiveErrors = 0
      let partial: Option.Option<string> = Option.none()
      /** Interpreters this run has lost so far (each replaced by a fresh one). */
      const restarts = yield* Ref.make(0)

      /** Count a lost interpreter (`stateLost`): what the trace records of it. */
      const noteLoss = (e: Sandbox.SandboxError) =>
        Effect.map(
          Ref.updateAndGet(restarts, (n) => n + 1),
          (n): TraceEvent.InterpreterLost => ({ reason: e.reason, message: e.message, restarts: n })
        )

      /** Past `maxSandboxRestarts` losses the run fails; before that, the model is told. */
      const checkRestarts = (
        e: Sandbox.SandboxError,
        lost: TraceEvent.InterpreterLost
      ): Effect.Effect<void, RunFailed> =>
        lost.restarts > policy.maxSandboxRestarts
          ? Effect.fail(
              new RunFailed({
                reason: "SandboxRestarts",
                message: `The ${sandbox.language} interpreter was lost ${lost.restarts} times in run ${spec.runId}, more than maxSandboxRestarts=${policy.maxSandboxRestarts} allows. The last time: ${e.message}`,
                cause: e,
                trace: undefined,
                partialAnswer: partial
              })
            )
          : Effect.void

      const lostNote = (lost: TraceEvent.InterpreterLost, skipped: number) =>
        Prompts.interpreterLost({
          language: sandbox.language,
          reason: lost.reason,
          message: lost.message,
          restarts: lost.restarts,
          maxRestarts: policy.maxSandboxRestarts,
          skipped
        })

      /**
       * The `StepCompleted` of a root call whose usage is counted but whose step
       * is not recorded yet. Emitted if the step ends early (interruption, a
       * sandbox failure), so the trace holds every call that was counted.
       */
      let pendingStep: Effect.Effect<void> | undefined
      const flushPending = Effect.suspend(() => {
        const pending = pendingStep
        pendingStep = undefined
        return pending ?? Effect.void
      })
      const setPending = (
        step: number,
        stepStart: number,
        response: LlmAdapter.ChatResponse,
        blocks: ReadonlyArray<TraceEvent.CodeBlock>
      ) =>
        Effect.sync(() => {
          const modelMs = Date.now() - stepStart
          pendingStep = Effect.suspend(() =>
            emit(
              tree,
              new TraceEvent.StepCompleted({
                runId: spec.runId,
                step,
                reply: response.text,
                blocks: [...blocks],
                feedback: "The step was stopped before it finished.",
                usage: usageOf(response.usage),
                model: response.model,
                modelMs,
                durationMs: Date.now() - stepStart
              })
            )
          )
        })
      /** Record a step, replacing its pending record; not interruptible half-way. */
      const recordOnce = (event: () => TraceEvent.StepCompleted) =>
        Effect.uninterruptible(
          Effect.suspend(() => {
            pendingStep = undefined
            return emit(tree, event())
          })
        )

      const root = (
        msgs: ReadonlyArray<LlmAdapter.ChatMessage>,
        step: number,
        stepStart: number,
        blocks: ReadonlyArray<TraceEvent.CodeBlock> = []
      ) =>
        modelCall(ctx, "root", msgs, (response) => setPending(step, stepStart, response, blocks)).pipe(
          Effect.catchTag("LlmError", (e) => Effect.fail(modelFailed(e)))
        )

      /** Resolve a final candidate to text, or the reason it is rejected. */
      const resolveFinal = (
        marker: Protocol.FinalMarker | undefined,
        signal: Sandbox.FinalSignal | undefined,
        ranCodeThisStep: boolean,
        lostThisStep: boolean
      ) =>
        Effect.gen(function* () {
          if (marker === undefined && signal === undefined) return undefined
          if (options.requireReplBeforeFinal && !sawOutput && signal === undefined) {
            return {
              rejected: ranCodeThisStep
                ? "Your final answer was not accepted: you answered before seeing the output of your code. Look at the output first, then answer."
                : "Your final answer was not accepted: you must run code in the REPL and look at its output before answering."
            } as const
          }
          if (marker?._tag === "FinalVar") {
            if (lostThisStep) {
              return {
                rejected: `FINAL_VAR(${marker.name}) was not accepted: the interpreter was lost during this step, and its variables with it.`
              } as const
            }
            const read = yield* Effect.either(repl.getVar(marker.name))
            if (read._tag === "Left") {
              const e = read.left
              if (!e.stateLost && (e.reason === "StartFailed" || e.reason === "Closed")) {
                return yield* Effect.fail(sandboxFailed(e))
              }
              const rejected = `FINAL_VAR(${marker.name}) could not be read: ${e.message}`
              if (e.stateLost) return { rejected, loss: { lost: yield* noteLoss(e), error: e } } as const
              return {
                rejected: `${rejected}\nAnswer with FINAL(text), or put a plain string in the variable.`
              } as const
            }
            const value = read.right
            if (Option.isNone(value)) {
              return {
                rejected: `FINAL_VAR(${marker.name}) names a variable that does not exist in the REPL. Assign it first (variables: call SHOW_VARS()), or answer with FINAL(text).`
              } as const
            }
            return { text: value.value, source: "FINAL_VAR" as const }
          }
          if (marker?._tag === "FinalText") return { text: marker.text, source: "FINAL" as const }
          const s = signal as Sandbox.FinalSignal
          return { text: s.value, source: s.source }
        })

      const accept = (step: number, text: string, source: Answer["source"]) =>
        Effect.gen(function* () {
          if (text.length > policy.maxAnswerChars) {
            return {
              rejected: `Your final answer was not accepted: it has ${text.length} characters, over maxAnswerChars=${policy.maxAnswerChars}. Answer with a shorter text (what the question asks for, not all the data).`
            } as const
          }
          const decoded = yield* Effect.either(decodeAnswer(options.output, text))
          if (decoded._tag === "Left") {
            partial = Option.some(text)
            return {
              rejected: `Your final answer does not have the required shape: ${decoded.left}. Fix it and answer again.`
            } as const
          }
          return { answer: { answer: text, value: decoded.right, source, steps: step } satisfies Answer } as const
        })

      const checkFatal = Effect.flatMap(Ref.get(ctx.fatal), (f) =>
        Option.isSome(f) ? Effect.fail(f.value) : Effect.void
      )

      const emitFinal = (a: Answer) =>
        emit(tree, new TraceEvent.FinalAnswer({ runId: spec.runId, step: a.steps, source: a.source, answer: a.answer }))

      /** The one extra root call granted by `onBudgetExceeded: "answer-now"`, outside the budget. */
      const answerNow = (e: BudgetExceeded) =>
        Effect.gen(function* () {
          const step = (yield* Ref.get(ctx.step)) + 1
          yield* Ref.set(ctx.step, step)
          const stepStart = Date.now()
          const msgs = [
            ...messages,
            new LlmAdapter.ChatMessage({ role: "user", content: Prompts.answerNow(spec.query) }, true)
          ]
          const response = yield* modelCall(
            ctx,
            "root",
            msgs,
            (response) => setPending(step, stepStart, response, []),
            "grant"
          ).pipe(Effect.catchTag("LlmError", () => Effect.fail(e)))
          return yield* forced(
            step,
            stepStart,
            response,
            `${e.message} One last answer was requested (onBudgetExceeded=answer-now).`
          )
        })

      /** Take the reply to an "answer now" request as the answer. */
      const forced = (step: number, stepStart: number, response: LlmAdapter.ChatResponse, note: string) =>
        Effect.gen(function* () {
          const parsed = Protocol.parse(response.text)
          let text = response.text.trim()
          if (parsed.final?._tag === "FinalText") text = parsed.final.text
          else if (parsed.final?._tag === "FinalVar") {
            // Nothing more is asked of the REPL: a variable that cannot be read leaves the reply's text.
            const value = yield* repl
              .getVar(parsed.final.name)
              .pipe(Effect.catchTag("SandboxError", () => Effect.succeed(Option.none<string>())))
            if (Option.isSome(value)) text = value.value
          }
          yield* recordOnce(
            () =>
              new TraceEvent.StepCompleted({
                runId: spec.runId,
                step,
                reply: response.text,
                blocks: [],
                feedback: note,
                usage: usageOf(response.usage),
                model: response.model,
                modelMs: Date.now() - stepStart,
                durationMs: Date.now() - stepStart
              })
          )
          const accepted = yield* accept(step, text, "forced")
          if ("rejected" in accepted) {
            return yield* Effect.fail(
              new BudgetExceeded({
                limit: "maxSteps",
                value: policy.maxSteps,
                used: step,
                message: `Budget exceeded: the last answer after maxSteps=${policy.maxSteps} was not accepted. ${accepted.rejected}`,
                trace: undefined,
                partialAnswer: text.length > policy.maxAnswerChars ? Option.none() : Option.some(text)
              })
            )
          }
          yield* emitFinal(accepted.answer)
          return accepted.answer
        })

      const steps = Effect.gen(function* () {
        for (let step = 1; step <= policy.maxSteps; step++) {
          yield* Ref.set(ctx.step, step)
          const stepStart = Date.now()
          const blocks: Array<TraceEvent.CodeBlock> = []
          const response = yield* root(messages, step, stepStart, blocks)
          const modelMs = Date.now() - stepStart
          const parsed = Protocol.parse(response.text)
          const outputs: Array<string> = []
          const feedback: Array<string> = [...parsed.warnings]
          let signal: Sandbox.FinalSignal | undefined
          let errors = 0
          /** Set when the interpreter was lost during this step; the blocks after the lost one are skipped. */
          let lost: TraceEvent.InterpreterLost | undefined
          let skipped = 0
          for (const [i, code] of parsed.code.entries()) {
            if (lost !== undefined) {
              skipped++
              continue
            }
            const ran = yield* Effect.either(repl.exec(code))
            let result: Sandbox.ExecResult
            let lostBy: Sandbox.SandboxError | undefined
            if (ran._tag === "Right") result = ran.right
            else {
              // A block the sandbox could not run: a timeout (variables kept), a lost interpreter
              // (replaced at the next request), a refused message. Only a sandbox that cannot go on ends the run.
              const e = ran.left
              if (!e.stateLost && (e.reason === "StartFailed" || e.reason === "Closed")) {
                return yield* Effect.fail(sandboxFailed(e))
              }
              result = new Sandbox.ExecResult({
                stdout: "",
                stderr: "",
                error: e.message,
                truncated: false,
                durationMs: 0
              })
              if (e.stateLost) {
                lostBy = e
                lost = yield* noteLoss(e)
              }
            }
            blocks.push({
              code,
              stdout: result.stdout,
              stderr: result.stderr,
              ...(result.error !== undefined ? { error: result.error } : {}),
              truncated: result.truncated,
              durationMs: result.durationMs
            })
            outputs.push(formatBlock(i, parsed.code.length, result))
            if (result.error !== undefined) errors++
            if (result.final) signal = result.final
            if (lostBy !== undefined && lost !== undefined) {
              yield* checkRestarts(lostBy, lost).pipe(Effect.tapError(() => recordStep()))
            }
            yield* checkFatal.pipe(Effect.tapError(() => recordStep()))
          }
          errors += skipped
          if (lost !== undefined) feedback.push(lostNote(lost, skipped))
          const final = yield* resolveFinal(parsed.final, signal, parsed.code.length > 0, lost !== undefined)
          let answer: Answer | undefined
          if (final !== undefined && "rejected" in final) {
            feedback.push(final.rejected)
            if ("loss" in final && final.loss !== undefined) {
              const { error, lost: loss } = final.loss
              lost = loss
              yield* checkRestarts(error, loss).pipe(Effect.tapError(() => recordStep()))
              feedback.push(lostNote(loss, 0))
            }
          } else if (final !== undefined) {
            const accepted = yield* accept(step, final.text, final.source)
            if ("rejected" in accepted) feedback.push(accepted.rejected)
            else answer = accepted.answer
          }
          if (parsed.protocol === "empty" && final === undefined) {
            feedback.push(
              "Your reply had no code and no final answer. Write code in a ```repl block, or answer with FINAL(...) / FINAL_VAR(name)."
            )
          }
          yield* recordStep()
          if (answer !== undefined) {
            yield* emitFinal(answer)
            return answer
          }

          function recordStep() {
            return recordOnce(
              () =>
                new TraceEvent.StepCompleted({
                  runId: spec.runId,
                  step,
                  reply: response.text,
                  blocks,
                  ...(feedback.length > 0 ? { feedback: feedback.join("\n") } : {}),
                  ...(lost !== undefined ? { interpreterLost: lost } : {}),
                  usage: usageOf(response.usage),
                  model: response.model,
                  modelMs,
                  durationMs: Date.now() - stepStart
                })
            )
          }

          if (parsed.code.length > 0) sawOutput = true
          const failedStep = parsed.code.length === 0 ? final === undefined : errors === parsed.code.length
          consecutiveErrors = failedStep ? consecutiveErrors + 1 : 0
          if (consecutiveErrors >= policy.maxConsecutiveErrors) {
            return yield* Effect.fail(
              new BudgetExceeded({
                limit: "maxConsecutiveErrors",
                value: policy.maxConsecutiveErrors,
                used: consecutiveErrors,
                message: `Budget exceeded: ${consecutiveErrors} steps in a row failed (maxConsecutiveErrors=${policy.maxConsecutiveErrors}).`,
                trace: undefined,
                partialAnswer: partial
              })
            )
          }
          messages.push(
            new LlmAdapter.ChatMessage({ role: "assistant", content: response.text }, true),
            new LlmAdapter.ChatMessage({ role: "user", content: [...outputs, ...feedback].join("\n\n") }, true)
          )
        }

        // Out of steps: ask once for the answer.
        const forcedStep = policy.maxSteps + 1
        yield* Ref.set(ctx.step, forcedStep)
        const stepStart = Date.now()
        messages.push(new LlmAdapter.ChatMessage({ role: "user", content: Prompts.answerNow(spec.query) }, true))
        const response = yield* root(messages, forcedStep, stepStart)
        return yield* forced(
          forcedStep,
          stepStart,
          response,
          "Out of steps: the answer was requested without running more code."
        )
      })

      return yield* steps.pipe(
        Effect.onExit(() => flushPending),
        Effect.catchTag("BudgetExceeded", (e) =>
          spec.depth === 0 && policy.onBudgetExceeded === "answer-now"
            ? answerNow(e).pipe(Effect.onExit(() => flushPending))
            : Effect.fail(withContext(e, { partialAnswer: Option.orElse(e.partialAnswer, () => partial) }))
        )
      )
    })

    return yield* Effect.scoped(body).pipe(
      // The wall clock bounds the whole tree: it is set on the top run, so that run ends as "budget_exceeded"
      // while the children it interrupts end as "interrupted".
      (self) => (spec.depth === 0 ? wallClock(policy, self) : self),
      Effect.tap(() => finish("answered")),
      Effect.tapError((e) => finish(e._tag === "BudgetExceeded" ? "budget_exceeded" : "failed", e.message)),
      Effect.onInterrupt(() => finish("interrupted", "interrupted"))
    )
  })

/** `Effect.timeoutFail` with the policy's wall-clock limit, failing with `BudgetExceeded`. */
const wallClock = <A, E, R>(policy: Policy.Policy, self: Effect.Effect<A, E, R>) =>
  policy.timeoutMs === undefined
    ? self
    : Effect.timeoutFail(self, {
        duration: Duration.millis(policy.timeoutMs),
        onTimeout: () =>
          new BudgetExceeded({
            limit: "timeoutMs",
            value: policy.timeoutMs as number,
            used: policy.timeoutMs as number,
            message: `Budget exceeded: the run took longer than timeoutMs=${policy.timeoutMs} ms and was stopped.`,
            trace: undefined,
            partialAnswer: Option.none()
          })
      })

/** Copy an error with its trace or partial answer filled in. */
const withContext = <E extends RlmError>(
  e: E,
  patch: { readonly trace?: Trace; readonly partialAnswer?: Option.Option<string> }
): E =>
  (e._tag === "BudgetExceeded"
    ? new BudgetExceeded({
        limit: e.limit,
        value: e.value,
        used: e.used,
        message: e.message,
        trace: patch.trace ?? e.trace,
        partialAnswer: patch.partialAnswer ?? e.partialAnswer
      })
    : new RunFailed({
        reason: e.reason,
        message: e.message,
        cause: e.cause,
        trace: patch.trace ?? e.trace,
        partialAnswer: patch.partialAnswer ?? e.partialAnswer
      })) as E

const sandboxFailed = (e: Sandbox.SandboxError) =>
  new RunFailed({
    reason: "Sandbox",
    message: `The sandbox failed (${e.reason}): ${e.message}`,
    cause: e,
    trace: undefined,
    partialAnswer: Option.none()
  })

const modelFailed = (e: LlmAdapter.LlmError) =>
  new RunFailed({
    reason: "Model",
    message: `The root model call failed (${e.reason}): ${e.message}`,
    cause: e,
    trace: undefined,
    partialAnswer: Option.none()
  })

/**
 * Run an RLM over `context` to answer `query`.
 *
 * Requires the `LlmAdapter` and `Sandbox` services; a `TraceRecorder` in
 * context also receives every event as it happens. The result (and every
 * error) carries the trace of the whole run tree.
 *
 * @since 0.1.0
 * @category Running
 */
export const run: {
  <A>(
    query: string,
    context: RlmContext.Input,
    options: RunOptions<A> & { readonly output: Schema.Schema<A, any, never> }
  ): Effect.Effect<RunResult<A>, RlmError, LlmAdapter.LlmAdapter | Sandbox.Sandbox>
  (
    query: string,
    context: RlmContext.Input,
    options?: RunOptions<string>
  ): Effect.Effect<RunResult<string>, RlmError, LlmAdapter.LlmAdapter | Sandbox.Sandbox>
} = (query: string, context: RlmContext.Input, options: RunOptions<any> = {}) =>
  Effect.gen(function* () {
    const policy = options.policy instanceof Policy.Policy ? options.policy : Policy.make(options.policy ?? {})
    const tree: Tree = {
      budget: yield* Budget.make(policy),
      policy,
      adapter: yield* LlmAdapter.LlmAdapter,
      sandbox: yield* Sandbox.Sandbox,
      events: yield* Ref.make(Chunk.empty<TraceEvent.TraceEvent>()),
      recorder: yield* Effect.serviceOption(TraceRecorder),
      options
    }
    if (policy.maxCostUsd !== undefined) {
      const unpriced = [...new Set([tree.adapter.model("root"), tree.adapter.model("sub")])].filter(
        (model) => policy.prices[model] === undefined
      )
      if (unpriced.length > 0) {
        yield* Effect.logWarning(
          `maxCostUsd=${policy.maxCostUsd} does not bound calls to ${unpriced.join(", ")}: no price is known for them. Add them to policy.prices (USD per million input/output tokens).`
        )
      }
    }
    const top = runOne(tree, { runId: "run", depth: 0, query, context: RlmContext.make(context), usage: [] })
    const answered = yield* top.pipe(
      Effect.catchAll((e) => Effect.flatMap(snapshot(tree), (trace) => Effect.fail(withContext(e, { trace }))))
    )
    return {
      answer: answered.answer,
      value: answered.value,
      source: answered.source,
      steps: answered.steps,
      totals: yield* tree.budget.totals,
      trace: yield* snapshot(tree)
    }
  }) as any
