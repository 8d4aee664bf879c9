/**
 * The RLM run loop.
 *
 * `Rlm.stream(query, context, options)` opens a REPL from the `Sandbox`
 * service, loads the context into it once, and lets the root model (the
 * `LlmAdapter`) drive it step by step until it answers, emitting every event
 * of the run tree (see `RunEvent`) as it happens. Model code reaches
 * sub-models through host functions that share one budget across the whole
 * run tree; every model call takes the one path of `ModelCall`. Each step's
 * effects (the model call, the blocks, a `FINAL_VAR` read) are handed as data
 * to the pure `Step.decide`, which returns the next `Step.RunState` and what
 * to do. `Rlm.run` is the stream folded into a `RunResult`.
 *
 * Every run, step, model call, code block and sub-call is a span of Effect's
 * tracer (see `Tracing` for the names, the nesting and the attributes).
 *
 * @since 0.1.0
 */

import type * as AttemptObserver from "@rlm-runtime/adapters/AttemptObserver"
import type * as Tool from "@effect/ai/Tool"
import type * as Toolkit from "@effect/ai/Toolkit"
import * as CallSite from "@rlm-runtime/adapters/CallSite"
import * as LlmAdapter from "@rlm-runtime/adapters/LlmAdapter"
import * as Sandbox from "@rlm-runtime/sandbox/Sandbox"
import { sha256 } from "@rlm-runtime/trace/Hash"
import * as LlmCache from "@rlm-runtime/trace/LlmCache"
import { Trace } from "@rlm-runtime/trace/Trace"
import * as TraceEvent from "@rlm-runtime/trace/TraceEvent"
import { TraceRecorder } from "@rlm-runtime/trace/TraceRecorder"
import type * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Mailbox from "effect/Mailbox"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import type * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import type * as Tracer from "effect/Tracer"
import * as Budget from "./Budget.js"
import * as HostTools from "./HostTools.js"
import * as Tracing from "./internal/tracing.js"
import * as ModelCall from "./ModelCall.js"
import * as Policy from "./Policy.js"
import * as Prompts from "./Prompts.js"
import * as Protocol from "./Protocol.js"
import * as RlmContext from "./RlmContext.js"
import { BudgetExceeded, type RlmError, RunFailed } from "./RlmError.js"
import * as RunEvent from "./RunEvent.js"
import * as Step from "./Step.js"
import * as ToolProtocol from "./ToolProtocol.js"
import { Attribute, SpanName } from "./Tracing.js"

/**
 * @since 0.1.0
 * @category Models
 */
export interface RunOptions<A = string, Tools extends Record<string, Tool.Any> = {}> {
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
  /**
   * How the root model replies. `"fenced"` (default): code in ```` ```repl ````
   * blocks and `FINAL(...)` / `FINAL_VAR(name)` in the text. `"tools"`: through
   * the provider's tools API, a `run_code({ code })` and a
   * `final_answer({ answer } | { variable })` tool (see `ToolProtocol`), for
   * models that follow tool calls better than fences. Child runs
   * (`rlm_query`) use the same protocol.
   */
  readonly protocol?: "fenced" | "tools" | undefined
  /**
   * User tools model code may call beside the built-ins (`llm_query` and
   * friends, `budget`): each is stubbed in the REPL (name, parameters,
   * docstring from its description) and listed in the system prompt. Their
   * handlers come from the environment (`MyToolkit.toLayer({...})`). A call's
   * arguments are decoded with the tool's parameters Schema; a bad call or a
   * failing handler is an exception in model code, and the run goes on. A
   * name taken by a built-in or a helper fails the run at its start
   * (`RunFailed` "Tools").
   */
  readonly tools?: Toolkit.Toolkit<Tools> | undefined
  /**
   * `false`: no sub-calls, the paper's ablation. The REPL has no `llm_query`,
   * `llm_query_batched`, `rlm_query` or `rlm_query_batched` (calling one is a
   * `NameError` / `ReferenceError` the model can recover from) and the system
   * prompt does not mention them. Default `true`.
   */
  readonly subCalls?: boolean | undefined
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
  /** Where the tree's events go, as they happen. */
  readonly events: Publisher
  readonly options: RunOptions<any, any>
  /** When the top run started (`budget()`'s time left). */
  readonly startedAt: number
  /** The user's tools, their handlers from the environment. */
  readonly userTools: ReadonlyArray<HostTools.Entry>
}

interface RunCtx {
  readonly tree: Tree
  readonly runId: string
  readonly depth: number
  readonly step: Ref.Ref<number>
  /** Usage of this run and of every ancestor, updated on each call. */
  readonly usage: ReadonlyArray<Ref.Ref<RunUsage>>
  readonly subCalls: Ref.Ref<number>
  readonly children: Ref.Ref<number>
  /**
   * The `rlm.block` span of the block running now, if any: the parent of the
   * spans of its host calls, which the sandbox runs on fibers of its own.
   */
  readonly blockSpan: Ref.Ref<Option.Option<Tracer.AnySpan>>
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

/** The reply's finish reason, for its `StepCompleted` or `SubCall`, when the adapter gave one. */
const finishOf = (response: LlmAdapter.ChatResponse): { readonly finishReason?: LlmAdapter.FinishReason } =>
  response.finishReason !== undefined ? { finishReason: response.finishReason } : {}

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

/**
 * The run tree's event channel: every event is offered to the stream's
 * mailbox, and every trace event is also kept for the partial trace an error
 * carries. One `publish` is one synchronous step, so the kept trace and the
 * stream see the same order.
 */
interface Publisher {
  readonly publish: (event: RunEvent.RunEvent) => Effect.Effect<void>
  readonly snapshot: Effect.Effect<Trace>
}

const makePublisher = (mailbox: Mailbox.Mailbox<RunEvent.RunEvent, RlmError>): Effect.Effect<Publisher> =>
  Effect.sync(() => {
    const kept: Array<TraceEvent.TraceEvent> = []
    return {
      publish: (event) =>
        Effect.sync(() => {
          if (RunEvent.isTraceEvent(event)) kept.push(event)
          mailbox.unsafeOffer(event)
        }),
      snapshot: Effect.sync(() => new Trace({ events: [...kept] }))
    }
  })

const emit = (tree: Tree, event: RunEvent.RunEvent) => tree.events.publish(event)

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
  admission: "reserve" | "grant" = "reserve",
  tools?: ReadonlyArray<LlmAdapter.ToolDefinition>
): Effect.Effect<LlmAdapter.ChatResponse, LlmAdapter.LlmError | BudgetExceeded> =>
  Effect.flatMap(Ref.get(ctx.step), (step) =>
    ModelCall.call(ctx.tree, {
      role,
      depth: ctx.depth,
      messages,
      tools,
      admission,
      onStart: (model) => emit(ctx.tree, new RunEvent.ModelCallStarted({ runId: ctx.runId, step, role, model }, true)),
      onCommit: (response, cost) => Effect.zipRight(countUsage(ctx, response.usage, cost), onResponse(response)),
      onRetry: (attempt) => retriedAttempt(ctx, role, attempt)
    }).pipe(CallSite.within({ runId: ctx.runId, step, role, depth: ctx.depth }))
  )

/**
 * A failed attempt the adapter retries: a `ModelCallRetried` event, and the
 * tokens it reported added to its run and every ancestor (not as a call).
 */
const retriedAttempt = (ctx: RunCtx, role: LlmAdapter.CallRole, attempt: AttemptObserver.AttemptFailed) =>
  Effect.gen(function* () {
    const usage = attempt.usage === undefined ? {} : usageOf(attempt.usage)
    yield* Effect.forEach(
      ctx.usage,
      (ref) => Ref.update(ref, (u) => ({ ...u, tokens: TraceEvent.addUsage(u.tokens, usage) })),
      { discard: true }
    )
    yield* emit(
      ctx.tree,
      new TraceEvent.ModelCallRetried({
        runId: ctx.runId,
        step: yield* Ref.get(ctx.step),
        role,
        model: ctx.tree.adapter.model(role),
        attempt: attempt.attempt,
        reason: attempt.reason,
        message: attempt.message,
        ...(attempt.status !== undefined ? { status: attempt.status } : {}),
        delayMs: attempt.delayMs,
        usage
      })
    )
  })

const hostError = (message: string, cause?: unknown) =>
  new Sandbox.HostCallError(cause === undefined ? { message } : { message, cause })

/**
 * What a host function fails with: `HostCallError`, an exception in model
 * code; `BudgetExceeded`, which aborts the block (`Repl.exec` fails with it)
 * and ends the run.
 */
type HostFailure = Sandbox.HostCallError | BudgetExceeded

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

/**
 * Run a sub-call in its `rlm.sub_call` span, annotated with its outcome (the
 * caller adds the reply's attributes).
 */
const subCallSpan = <A, E, R>(
  ctx: RunCtx,
  kind: "llm_query" | "rlm_query",
  prompt: string,
  model: string,
  body: (span: Tracer.Span) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.flatMap(Ref.get(ctx.step), (step) =>
    Tracing.spanned(
      SpanName.subCall,
      {
        [Attribute.runId]: ctx.runId,
        [Attribute.depth]: ctx.depth,
        [Attribute.step]: step,
        [Attribute.subCallKind]: kind,
        [Attribute.model]: model,
        [Attribute.promptChars]: prompt.length
      },
      body,
      Tracing.endWithOutcome
    )
  )

const llmQuery = (ctx: RunCtx, prompt: string): Effect.Effect<string, HostFailure> =>
  subCallSpan(ctx, "llm_query", prompt, ctx.tree.adapter.model("sub"), (span) => llmQueryIn(ctx, prompt, span))

const llmQueryIn = (ctx: RunCtx, prompt: string, span: Tracer.Span): Effect.Effect<string, HostFailure> =>
  Effect.gen(function* () {
    yield* refusePrompt(ctx, "llm_query", prompt)
    const parentStep = yield* Ref.get(ctx.step)
    const start = yield* Clock.currentTimeMillis
    const model = ctx.tree.adapter.model("sub")
    const baseOf = (now: number) => ({
      runId: ctx.runId,
      parentStep,
      kind: "llm_query" as const,
      model,
      prompt,
      promptSha256: sha256(prompt),
      promptChars: prompt.length,
      timestamp: start,
      durationMs: now - start
    })
    const exit = yield* Effect.exit(
      modelCall(ctx, "sub", [new LlmAdapter.ChatMessage({ role: "user", content: prompt }, true)], (response) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          emit(
            ctx.tree,
            new TraceEvent.SubCall(
              {
                ...baseOf(now),
                model: response.model,
                reply: response.text,
                replySha256: sha256(response.text),
                replyChars: response.text.length,
                usage: usageOf(response.usage),
                ...finishOf(response)
              },
              // Built from typed values (the adapter's decoded response): not checked again at every sub-call.
              true
            )
          )
        )
      )
    )
    yield* Ref.update(ctx.subCalls, (n) => n + 1)
    if (exit._tag === "Success") {
      Tracing.setAttributes(span, { ...Tracing.reply(exit.value), [Attribute.replyChars]: exit.value.text.length })
      return exit.value.text
    }
    const base = baseOf(yield* Clock.currentTimeMillis)
    const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
    if (failure instanceof BudgetExceeded) {
      yield* emit(ctx.tree, new TraceEvent.SubCall({ ...base, error: failure.message, usage: {} }))
      return yield* failure
    }
    if (failure instanceof LlmAdapter.LlmError) {
      yield* emit(
        ctx.tree,
        new TraceEvent.SubCall({ ...base, error: failure.message, errorReason: failure.reason, usage: {} })
      )
      return yield* Effect.fail(hostError(`llm_query failed (${failure.reason}): ${failure.message}`, failure))
    }
    return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
  })

/**
 * A batch of sub-calls, `concurrency` at a time. When one fails the batch (a
 * budget limit, or any failure with `batchFailure: "fail-all"`), the others
 * are interrupted, and the batch returns only once every one of them has
 * stopped: `Effect.forEach` does not wait for the fibers it interrupts, and a
 * child run still closing its REPL (and recording its `RunFinished`) must not
 * outlive the block that started it.
 */
const batched =
  (ctx: RunCtx, one: (prompt: string) => Effect.Effect<string, HostFailure>) =>
  (prompts: ReadonlyArray<string>): Effect.Effect<ReadonlyArray<string>, HostFailure> =>
    Effect.gen(function* () {
      const live = yield* Ref.make(0)
      const idle = yield* Effect.makeLatch(true)
      const tracked = <A, E>(self: Effect.Effect<A, E>) =>
        Effect.uninterruptibleMask((restore) =>
          Ref.update(live, (n) => n + 1).pipe(
            Effect.zipRight(idle.close),
            Effect.zipRight(restore(self)),
            Effect.ensuring(
              Effect.flatMap(
                Ref.updateAndGet(live, (n) => n - 1),
                (n) => (n === 0 ? idle.open : Effect.void)
              )
            )
          )
        )
      return yield* Effect.forEach(
        prompts,
        (prompt) =>
          tracked(
            ctx.tree.policy.batchFailure === "fail-all"
              ? one(prompt)
              : // A budget failure still ends the batch: nothing more may be sent.
                one(prompt).pipe(Effect.catchTag("HostCallError", (e) => Effect.succeed(`Error: ${e.message}`)))
          ),
        // Bounded here too: thousands of fibers queued on one Semaphore wake each other on every release.
        { concurrency: ctx.tree.policy.concurrency }
      ).pipe(Effect.onExit(() => idle.await))
    })

/** `rlm_query`: a child run, or at the depth limit a plain `llm_query`. */
const rlmQuery = (ctx: RunCtx, prompt: string): Effect.Effect<string, HostFailure> =>
  ctx.depth + 1 > ctx.tree.policy.maxDepth
    ? Effect.zipRight(refusePrompt(ctx, "rlm_query", prompt), llmQuery(ctx, prompt))
    : subCallSpan(ctx, "rlm_query", prompt, ctx.tree.adapter.model("root"), (span) => childRun(ctx, prompt, span))

const childRun = (ctx: RunCtx, prompt: string, span: Tracer.Span): Effect.Effect<string, HostFailure> =>
  Effect.gen(function* () {
    const { tree } = ctx
    yield* refusePrompt(ctx, "rlm_query", prompt)
    const parentStep = yield* Ref.get(ctx.step)
    const index = yield* Ref.getAndUpdate(ctx.children, (n) => n + 1)
    const childRunId = `${ctx.runId}/${parentStep}.${index}`
    span.attribute(Attribute.childRunId, childRunId)
    const start = yield* Clock.currentTimeMillis
    yield* tree.budget.reserveSubCall
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
      timestamp: start,
      durationMs: (yield* Clock.currentTimeMillis) - start,
      // The child's own calls carry its usage; counting it here too would count it twice.
      usage: {},
      childRunId
    }
    if (exit._tag === "Success") {
      const reply = exit.value.answer
      span.attribute(Attribute.replyChars, reply.length)
      yield* emit(
        tree,
        new TraceEvent.SubCall({ ...base, reply, replySha256: sha256(reply), replyChars: reply.length })
      )
      return reply
    }
    const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
    if (failure === undefined) return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
    yield* emit(tree, new TraceEvent.SubCall({ ...base, error: failure.message }))
    if (failure instanceof BudgetExceeded) return yield* failure
    return yield* Effect.fail(hostError(`rlm_query failed: ${failure.message}`, failure))
  })

/**
 * The run's host functions: the built-ins (`HostTools`), their handlers over
 * this run's budget and trace, then the user's tools.
 */
const hostFunctions = (ctx: RunCtx) => {
  const subCalls =
    ctx.tree.options.subCalls === false
      ? []
      : [
          HostTools.entry(HostTools.LlmQuery, ({ prompt }) => llmQuery(ctx, prompt), { prompt: "string" }),
          HostTools.entry(HostTools.LlmQueryBatched, ({ prompts }) => batched(ctx, (p) => llmQuery(ctx, p))(prompts), {
            prompts: "strings"
          }),
          HostTools.entry(HostTools.RlmQuery, ({ prompt }) => rlmQuery(ctx, prompt), { prompt: "string" }),
          HostTools.entry(HostTools.RlmQueryBatched, ({ prompts }) => batched(ctx, (p) => rlmQuery(ctx, p))(prompts), {
            prompts: "strings"
          })
        ]
  const host = HostTools.dispatcher<BudgetExceeded>([
    ...subCalls,
    HostTools.entry(HostTools.BudgetTool, () => budgetOf(ctx)),
    ...ctx.tree.userTools
  ])
  // The sandbox runs host calls on fibers of its own, forked where the session was opened: their spans are
  // put under the block that made the call, explicitly.
  const call: Sandbox.HostCall<BudgetExceeded> = (name, args) =>
    Effect.flatMap(Ref.get(ctx.blockSpan), (span) =>
      Option.isSome(span) ? Effect.withParentSpan(host.call(name, args), span.value) : host.call(name, args)
    )
  return { tools: host.tools, call }
}

/** `budget()`: what is left of the tree's limits, for this run. */
const budgetOf = (ctx: RunCtx): Effect.Effect<HostTools.BudgetLeft> =>
  Effect.gen(function* () {
    const totals = yield* ctx.tree.budget.totals
    const now = yield* Clock.currentTimeMillis
    return HostTools.budgetLeft(ctx.tree.policy, totals, {
      step: yield* Ref.get(ctx.step),
      depth: ctx.depth,
      elapsedMs: now - ctx.tree.startedAt
    })
  })

/**
 * A turn of a `Session` (internal: see `Session.make`): the run's REPL and the
 * root history before its first user message come from the session instead
 * of a fresh REPL and a fresh conversation.
 *
 * @since 0.3.0
 * @internal
 */
export interface SessionTurn {
  /**
   * The session's REPL (opened on first use, then the open one), its host
   * calls routed to `options.host` for this run until the run's scope closes
   * (where a run's own REPL would close: the host calls still in flight are
   * stopped then).
   */
  readonly open: (
    options: Sandbox.OpenOptions<BudgetExceeded>
  ) => Effect.Effect<Sandbox.Repl<BudgetExceeded>, Sandbox.SandboxError, Scope.Scope>
  /**
   * The root history between the system prompt and the turn's first user
   * message; `call` is a root model call of this run (budgeted, counted), for
   * a compaction.
   */
  readonly history: (turn: TurnCall) => Effect.Effect<ReadonlyArray<LlmAdapter.ChatMessage>, RlmError>
  /** Added to the turn's first user message (read once the REPL is open). */
  readonly note: Effect.Effect<string | undefined>
  /** The run's conversation (system prompt first) once it answered, before its `RunFinished`. */
  readonly onAnswered: (messages: ReadonlyArray<LlmAdapter.ChatMessage>) => Effect.Effect<void>
}

/**
 * What a session turn's `history` may use: a root call of the run, and its
 * event channel.
 *
 * @since 0.3.0
 * @internal
 */
export interface TurnCall {
  readonly runId: string
  readonly call: (messages: ReadonlyArray<LlmAdapter.ChatMessage>) => Effect.Effect<LlmAdapter.ChatResponse, RlmError>
  readonly emit: (event: RunEvent.RunEvent) => Effect.Effect<void>
}

interface RunSpec {
  readonly runId: string
  readonly depth: number
  readonly parentRunId?: string
  readonly parentStep?: number
  readonly query: string
  readonly context: RlmContext.RlmContext
  readonly usage: ReadonlyArray<Ref.Ref<RunUsage>>
  /** Set for the top run of a session turn. */
  readonly turn?: SessionTurn | undefined
}

/** A root call whose usage is counted but whose step is not recorded yet. */
interface Pending {
  readonly step: number
  readonly stepStart: number
  readonly modelMs: number
  readonly response: LlmAdapter.ChatResponse
  readonly blocks: ReadonlyArray<TraceEvent.CodeBlock>
  /** `StepCompleted.promptSha256`: the request's messages, hashed as `LlmCache.keyOf` does. */
  readonly promptSha256: string
}

/** One run of the tree (the root or a child), with its REPL open. */
interface Run {
  readonly ctx: RunCtx
  readonly spec: RunSpec
  readonly config: Step.Config
  readonly repl: Sandbox.Repl<BudgetExceeded>
  /** The latest decided state. */
  readonly state: Ref.Ref<Step.RunState>
  /**
   * The `StepCompleted` of a root call whose step is not recorded yet: emitted
   * if the step ends early (interruption, a sandbox failure), so the trace
   * holds every call that was counted.
   */
  readonly pending: Ref.Ref<Option.Option<Pending>>
  /** The last `SandboxError` that lost the interpreter (the cause of a "SandboxRestarts" failure). */
  readonly lastLoss: Ref.Ref<Option.Option<Sandbox.SandboxError>>
  /** The root requests' tools: set under the tools protocol. */
  readonly tools: ReadonlyArray<LlmAdapter.ToolDefinition> | undefined
}

/** A sandbox error that ends the run: the sandbox cannot go on. */
const isFatal = (e: Sandbox.SandboxError) => !e.stateLost && (e.reason === "StartFailed" || e.reason === "Closed")

const stoppedStep = (runId: string, p: Pending, now: number) =>
  new TraceEvent.StepCompleted({
    runId,
    step: p.step,
    reply: p.response.text,
    blocks: p.blocks,
    feedback: "The step was stopped before it finished.",
    ...ToolProtocol.traced(p.response.toolCalls),
    usage: usageOf(p.response.usage),
    model: p.response.model,
    modelMs: p.modelMs,
    durationMs: now - p.stepStart,
    ...finishOf(p.response),
    promptSha256: p.promptSha256,
    replySha256: sha256(p.response.text)
  })

/** Record the pending step, if any, as stopped half-way. */
const flushPending = (tree: Tree, runId: string, pending: Ref.Ref<Option.Option<Pending>>) =>
  Effect.flatMap(Ref.getAndSet(pending, Option.none()), (p) =>
    Option.match(p, {
      onNone: () => Effect.void,
      onSome: (p) => Effect.flatMap(Clock.currentTimeMillis, (now) => emit(tree, stoppedStep(runId, p, now)))
    })
  )

/** Record a step, replacing its pending record; not interruptible half-way. */
const recordStep = (run: Run, p: Pending, blocks: ReadonlyArray<TraceEvent.CodeBlock>, record: Step.Record) =>
  Effect.uninterruptible(
    Effect.flatMap(Effect.zipRight(Ref.set(run.pending, Option.none()), Clock.currentTimeMillis), (stepEnd) =>
      emit(
        run.ctx.tree,
        new TraceEvent.StepCompleted(
          {
            runId: run.spec.runId,
            step: p.step,
            reply: p.response.text,
            blocks: [...blocks],
            ...record,
            ...ToolProtocol.traced(p.response.toolCalls),
            usage: usageOf(p.response.usage),
            model: p.response.model,
            modelMs: p.modelMs,
            durationMs: stepEnd - p.stepStart,
            ...finishOf(p.response),
            promptSha256: p.promptSha256,
            replySha256: sha256(p.response.text)
          },
          // Built from typed values (the blocks from decoded results): not checked again at every step.
          true
        )
      )
    )
  )

/** The root model's turn of step `step`: its reply is pending in the same region that counts its usage. */
const rootCall = (
  run: Run,
  step: number,
  messages: ReadonlyArray<LlmAdapter.ChatMessage>,
  admission: "reserve" | "grant" = "reserve"
): Effect.Effect<Pending, LlmAdapter.LlmError | BudgetExceeded> =>
  Effect.flatMap(Clock.currentTimeMillis, (stepStart) => {
    const promptSha256 = LlmCache.keyOf({ role: "root", messages })
    const pendingOf = (response: LlmAdapter.ChatResponse, now: number): Pending => ({
      step,
      stepStart,
      modelMs: now - stepStart,
      response,
      blocks: [],
      promptSha256
    })
    return modelCall(
      run.ctx,
      "root",
      messages,
      (response) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => Ref.set(run.pending, Option.some(pendingOf(response, now)))),
      admission,
      run.tools
    ).pipe(
      Effect.flatMap((response) =>
        Effect.flatMap(Ref.get(run.pending), (pending) =>
          Option.isSome(pending)
            ? Effect.succeed(pending.value)
            : Effect.map(Clock.currentTimeMillis, (now) => pendingOf(response, now))
        )
      )
    )
  })

/** Run a reply's blocks in order; stop after one that lost the interpreter or hit a budget limit. */
const runBlocks = (
  run: Run,
  step: number,
  code: ReadonlyArray<string>
): Effect.Effect<ReadonlyArray<Step.BlockOutcome>, RunFailed> => {
  const { runId } = run.spec
  const total = code.length
  // (Plain combinators, not a generator looping over yields: on a run's hot
  // path, V8 compiled that generator twice, at the largest cost of a step.)
  const from = (
    index: number,
    outcomes: ReadonlyArray<Step.BlockOutcome>
  ): Effect.Effect<ReadonlyArray<Step.BlockOutcome>, RunFailed> => {
    if (index >= total) return Effect.succeed(outcomes)
    const source = code[index] as string
    return emit(run.ctx.tree, new RunEvent.BlockStarted({ runId, step, index, total, code: source }, true)).pipe(
      Effect.zipRight(tracedBlock(run, step, index, source)),
      Effect.flatMap((outcome) => {
        const done = [...outcomes, outcome]
        const last = outcome.lost !== undefined || outcome.budgetExceeded !== undefined
        return emit(
          run.ctx.tree,
          new RunEvent.BlockFinished(
            { runId, step, index, failed: outcome.block.error !== undefined, durationMs: outcome.block.durationMs },
            true
          )
        ).pipe(
          Effect.zipRight(
            Ref.update(
              run.pending,
              Option.map((p) => ({ ...p, blocks: done.map((o) => o.block) }))
            )
          ),
          Effect.zipRight(last ? Effect.succeed(done) : from(index + 1, done))
        )
      })
    )
  }
  return from(0, [])
}

/**
 * A block that failed, as the failure of its `rlm.block` span (so the span has
 * an error status); caught right outside the span, the run goes on.
 */
class BlockFailed extends Data.TaggedError("BlockFailed")<{
  readonly message: string
  readonly outcome: Step.BlockOutcome
}> {}

/** Why a block's span failed, in the project's words (model output is never put in a span). */
const blockFailure = (outcome: Step.BlockOutcome): string | undefined =>
  outcome.budgetExceeded !== undefined
    ? `The block was aborted: ${outcome.budgetExceeded.message}`
    : outcome.lost !== undefined
      ? `The block lost the interpreter (${outcome.lost.reason}).`
      : outcome.block.error !== undefined
        ? "The block raised an error."
        : undefined

/**
 * A block in its `rlm.block` span, which is the parent of its host calls'
 * spans. A block that failed fails its span (error status) and the run goes
 * on with its outcome.
 */
const tracedBlock = (
  run: Run,
  step: number,
  index: number,
  code: string
): Effect.Effect<Step.BlockOutcome, RunFailed> =>
  Tracing.spanned(
    SpanName.block,
    {
      [Attribute.runId]: run.spec.runId,
      [Attribute.depth]: run.spec.depth,
      [Attribute.step]: step,
      [Attribute.blockIndex]: index,
      [Attribute.codeChars]: code.length
    },
    (span) =>
      Ref.set(run.ctx.blockSpan, Option.some(span)).pipe(
        Effect.zipRight(runBlock(run, code)),
        Effect.ensuring(Ref.set(run.ctx.blockSpan, Option.none())),
        Effect.flatMap((outcome) => {
          span.attribute(Attribute.blockFailed, outcome.block.error !== undefined)
          span.attribute(Attribute.blockDurationMs, outcome.block.durationMs)
          const failure = blockFailure(outcome)
          return failure === undefined
            ? Effect.succeed(outcome)
            : Effect.fail(new BlockFailed({ message: failure, outcome }))
        })
      )
  ).pipe(Effect.catchTag("BlockFailed", (e) => Effect.succeed(e.outcome)))

const runBlock = (run: Run, code: string): Effect.Effect<Step.BlockOutcome, RunFailed> =>
  Effect.flatMap(Effect.either(run.repl.exec(code)), (ran): Effect.Effect<Step.BlockOutcome, RunFailed> => {
    if (ran._tag === "Right") {
      const r = ran.right
      return Effect.succeed({
        block: {
          code,
          stdout: r.stdout,
          stderr: r.stderr,
          ...(r.error !== undefined ? { error: r.error } : {}),
          truncated: r.truncated,
          durationMs: r.durationMs
        },
        ...(r.final !== undefined ? { final: r.final } : {})
      })
    }
    const e = ran.left
    if (e._tag === "BudgetExceeded") {
      // A host call hit a limit: the block was aborted there, and the run ends.
      return Effect.succeed({
        block: { code, stdout: "", stderr: "", error: e.message, truncated: false, durationMs: 0 },
        budgetExceeded: { limit: e.limit, value: e.value, used: e.used, message: e.message }
      })
    }
    // A block the sandbox could not run: a timeout (variables kept), a lost interpreter
    // (replaced at the next request), a refused message. Only a sandbox that cannot go on ends the run.
    if (isFatal(e)) return Effect.fail(sandboxFailed(e))
    const outcome: Step.BlockOutcome = {
      block: { code, stdout: "", stderr: "", error: e.message, truncated: false, durationMs: 0 },
      ...(e.stateLost ? { lost: { reason: e.reason, message: e.message } } : {})
    }
    return e.stateLost ? Effect.as(Ref.set(run.lastLoss, Option.some(e)), outcome) : Effect.succeed(outcome)
  })

/** Read the variable of a `FINAL_VAR`, as data. */
const readVar = (run: Run, name: string): Effect.Effect<Step.VarRead, RunFailed> =>
  Effect.flatMap(Effect.either(run.repl.getVar(name)), (read): Effect.Effect<Step.VarRead, RunFailed> => {
    if (read._tag === "Right") {
      return Effect.succeed(
        Option.match(read.right, {
          onNone: () => ({ _tag: "Missing" as const, name }),
          onSome: (value) => ({ _tag: "Value" as const, name, value })
        })
      )
    }
    const e = read.left
    if (isFatal(e)) return Effect.fail(sandboxFailed(e))
    if (!e.stateLost) return Effect.succeed({ _tag: "Unreadable" as const, name, message: e.message })
    return Effect.as(Ref.set(run.lastLoss, Option.some(e)), {
      _tag: "Unreadable" as const,
      name,
      message: e.message,
      lost: { reason: e.reason, message: e.message }
    })
  })

/** The typed error of a failed decision. */
const failureOf = (run: Run, failure: Step.Failure): Effect.Effect<never, RlmError> =>
  failure._tag === "BudgetExceeded"
    ? Effect.fail(
        new BudgetExceeded({
          limit: failure.limit as BudgetExceeded["limit"],
          value: failure.value,
          used: failure.used,
          message: failure.message,
          trace: undefined,
          partialAnswer: Option.fromNullable(failure.partialAnswer)
        })
      )
    : Effect.flatMap(Ref.get(run.lastLoss), (cause) =>
        Effect.fail(
          new RunFailed({
            reason: "SandboxRestarts",
            message: failure.message,
            cause: Option.getOrUndefined(cause),
            trace: undefined,
            partialAnswer: Option.fromNullable(failure.partialAnswer)
          })
        )
      )

/** Act on a decision: record the step, then answer, go on, or fail. */
const settle = (
  run: Run,
  pending: Pending,
  blocks: ReadonlyArray<TraceEvent.CodeBlock>,
  decided: Step.Decided
): Effect.Effect<Step.Decided, RlmError> => {
  const decision = decided.decision
  const recorded = Effect.zipRight(Ref.set(run.state, decided.state), recordStep(run, pending, blocks, decided.record))
  switch (decision._tag) {
    case "Answered":
      return recorded.pipe(
        Effect.zipRight(
          emit(
            run.ctx.tree,
            new TraceEvent.FinalAnswer({
              runId: run.spec.runId,
              step: pending.step,
              source: decision.source,
              answer: decision.answer
            })
          )
        ),
        Effect.as(decided)
      )
    case "Fail":
      return Effect.zipRight(recorded, failureOf(run, decision.failure))
    default:
      return Effect.as(recorded, decided)
  }
}

/** One ordinary step: root call → parse → blocks → (FINAL_VAR read) → `Step.decide`. */
const step = (run: Run, state: Step.RunState): Effect.Effect<Step.Decided, RlmError> =>
  stepSpan(run, state.step + 1, false, (span) => stepIn(run, state, span))

// (Plain combinators rather than one generator: V8 compiled this step's
// generator twice in a run's first few hundred steps, as costly as any function of a step.)
const stepIn = (run: Run, state: Step.RunState, span: Tracer.Span): Effect.Effect<Step.Decided, RlmError> => {
  const number = state.step + 1
  return Ref.set(run.ctx.step, number).pipe(
    Effect.zipRight(rootCall(run, number, state.messages)),
    Effect.catchTag("LlmError", (e) => Effect.fail(modelFailed(e))),
    Effect.flatMap((pending) => afterReply(run, state, span, number, pending))
  )
}

/** The rest of a step, once the root model's reply is in: its blocks, a `FINAL_VAR` read, the decision. */
const afterReply = (
  run: Run,
  state: Step.RunState,
  span: Tracer.Span,
  number: number,
  pending: Pending
): Effect.Effect<Step.Decided, RlmError> => {
  const turn = run.tools === undefined ? undefined : ToolProtocol.parse(pending.response)
  const parsed = turn?.parsed ?? Protocol.parse(pending.response.text, { language: run.config.language })
  Tracing.setAttributes(span, { ...Tracing.reply(pending.response), [Attribute.blocks]: parsed.code.length })
  return Effect.flatMap(runBlocks(run, number, parsed.code), (outcomes) => {
    const decideWith = (read: Step.VarRead | undefined) =>
      settle(
        run,
        pending,
        outcomes.map((o) => o.block),
        Step.decide(
          run.config,
          state,
          {
            reply: pending.response.text,
            parsed,
            outcomes,
            read,
            ...(turn !== undefined ? { respond: ToolProtocol.respond(turn, outcomes) } : {})
          },
          run.spec.runId
        )
      )
    const name = Step.varToRead(run.config, state, parsed, outcomes)
    return name === undefined ? decideWith(undefined) : Effect.flatMap(readVar(run, name), decideWith)
  })
}

/** A step in its `rlm.step` span. */
const stepSpan = <A, E, R>(
  run: Run,
  number: number,
  forced: boolean,
  body: (span: Tracer.Span) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Tracing.spanned(
    SpanName.step,
    {
      [Attribute.runId]: run.spec.runId,
      [Attribute.depth]: run.spec.depth,
      [Attribute.step]: number,
      [Attribute.forced]: forced
    },
    body
  )

/** Ask for the answer once (no code is run); `Step.decideForced` takes the reply as the answer, or fails. */
const forcedStep = (
  run: Run,
  state: Step.RunState,
  number: number,
  note: string,
  admission: "reserve" | "grant",
  onModelError: (e: LlmAdapter.LlmError) => RlmError,
  exceeded?: Step.Exceeded
): Effect.Effect<Step.Decided, RlmError> =>
  stepSpan(run, number, true, (span) =>
    Effect.gen(function* () {
      yield* Ref.set(run.ctx.step, number)
      const pending = yield* rootCall(run, number, state.messages, admission).pipe(
        Effect.catchTag("LlmError", (e) => Effect.fail(onModelError(e)))
      )
      const parsed =
        run.tools === undefined
          ? Protocol.parse(pending.response.text, { language: run.config.language })
          : ToolProtocol.parse(pending.response).parsed
      Tracing.setAttributes(span, Tracing.reply(pending.response))
      const name = Step.forcedVarToRead(parsed)
      // Nothing more is asked of the REPL: a variable that cannot be read is no answer.
      const read =
        name === undefined
          ? undefined
          : yield* run.repl.getVar(name).pipe(
              Effect.map(
                Option.match({
                  onNone: (): Step.VarRead => ({ _tag: "Missing", name }),
                  onSome: (value): Step.VarRead => ({ _tag: "Value", name, value })
                })
              ),
              Effect.catchTag("SandboxError", (e) =>
                Effect.succeed<Step.VarRead>({ _tag: "Unreadable", name, message: e.message })
              )
            )
      const decided = Step.decideForced(
        run.config,
        state,
        { reply: pending.response.text, parsed, read, step: number, exceeded },
        note
      )
      return yield* settle(run, pending, [], decided)
    })
  )

/** Steps until a decision ends the run. */
const loop = (run: Run, state: Step.RunState): Effect.Effect<Answer, RlmError> =>
  Effect.flatMap(step(run, state), (decided): Effect.Effect<Answer, RlmError> => {
    const d = decided.decision
    switch (d._tag) {
      case "Answered":
        return Effect.succeed({ answer: d.answer, value: d.value, source: d.source, steps: decided.state.step })
      case "Continue":
        return loop(run, decided.state)
      case "AskForAnswer":
        return Effect.flatMap(
          forcedStep(
            run,
            decided.state,
            run.ctx.tree.policy.maxSteps + 1,
            "Out of steps: the answer was requested without running more code.",
            "reserve",
            modelFailed
          ),
          (forced) => answerOf(forced)
        )
      case "Fail":
        return Effect.die("unreachable: a failed decision fails its step")
    }
  })

const answerOf = (decided: Step.Decided): Effect.Effect<Answer, RlmError> =>
  decided.decision._tag === "Answered"
    ? Effect.succeed({
        answer: decided.decision.answer,
        value: decided.decision.value,
        source: decided.decision.source,
        steps: decided.state.step
      })
    : Effect.die("unreachable: a forced step answers or fails")

/** The one extra root call granted by `onBudgetExceeded: "answer-now"`, outside the budget. */
const answerNow = (run: Run, e: BudgetExceeded): Effect.Effect<Answer, RlmError> =>
  Effect.gen(function* () {
    const state = yield* Ref.get(run.state)
    const number = (yield* Ref.get(run.ctx.step)) + 1
    const asked = new Step.RunState(
      {
        ...state,
        messages: [
          ...state.messages,
          new LlmAdapter.ChatMessage(
            { role: "user", content: Prompts.answerNow(run.spec.query, run.config.protocol) },
            true
          )
        ]
      },
      true
    )
    const decided = yield* forcedStep(
      run,
      asked,
      number,
      `${e.message} One last answer was requested (onBudgetExceeded=answer-now).`,
      "grant",
      () => e,
      { limit: e.limit, value: e.value, used: e.used, message: e.message }
    )
    return yield* answerOf(decided)
  })

/** A first state with a session's root history put between its system prompt and its first user message. */
const withHistory = (first: Step.RunState, history: ReadonlyArray<LlmAdapter.ChatMessage>): Step.RunState =>
  history.length === 0
    ? first
    : new Step.RunState({ ...first, messages: [first.messages[0]!, ...history, ...first.messages.slice(1)] }, true)

/** A session turn's root calls outside a step (a compaction): step 0, through `ModelCall` like every call. */
const turnCall = (ctx: RunCtx): TurnCall => ({
  runId: ctx.runId,
  call: (messages) =>
    modelCall(ctx, "root", messages).pipe(Effect.catchTag("LlmError", (e) => Effect.fail(modelFailed(e)))),
  emit: (event) => emit(ctx.tree, event)
})

const runOne = (tree: Tree, spec: RunSpec): Effect.Effect<Answer, RlmError> =>
  Effect.gen(function* () {
    const { adapter, options, policy, sandbox } = tree
    const started = yield* Clock.currentTimeMillis
    const ownUsage = yield* Ref.make<RunUsage>(emptyRunUsage)
    const ctx: RunCtx = {
      tree,
      runId: spec.runId,
      depth: spec.depth,
      step: yield* Ref.make(0),
      usage: [ownUsage, ...spec.usage],
      subCalls: yield* Ref.make(0),
      children: yield* Ref.make(0),
      blockSpan: yield* Ref.make(Option.none<Tracer.AnySpan>())
    }
    /** See `Run.pending`. */
    const pending = yield* Ref.make(Option.none<Pending>())
    const flush = flushPending(tree, spec.runId, pending)
    const meta = RlmContext.metadata(spec.context, { previewChars: options.previewChars ?? 200 })
    const finish = (status: TraceEvent.RunFinished["status"], error?: string) =>
      Effect.gen(function* () {
        const used = yield* Ref.get(ownUsage)
        const finished = new TraceEvent.RunFinished({
          runId: spec.runId,
          status,
          steps: yield* Ref.get(ctx.step),
          subCalls: yield* Ref.get(ctx.subCalls),
          usage: used.tokens,
          ...runCost(used),
          durationMs: (yield* Clock.currentTimeMillis) - started,
          ...(error !== undefined ? { error } : {})
        })
        yield* Effect.annotateCurrentSpan(
          Tracing.defined({
            [Attribute.status]: status,
            [Attribute.steps]: finished.steps,
            [Attribute.subCalls]: finished.subCalls,
            ...Tracing.tokens(finished.usage),
            [Attribute.costUsd]: finished.costUsd,
            [Attribute.error]: error
          })
        )
        yield* emit(tree, finished)
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
          timestamp: yield* Clock.currentTimeMillis
        })
      )
      const host = hostFunctions(ctx)
      const opening: Sandbox.OpenOptions<BudgetExceeded> = {
        context: { text: spec.context.text, documents: spec.context.documents },
        host: host.call,
        tools: host.tools,
        outputLimit: options.outputLimit,
        execTimeout: options.execTimeout,
        maxAnswerChars: policy.maxAnswerChars,
        maxPromptChars: policy.maxPromptChars,
        maxLineBytes: policy.maxLineBytes
      }
      const repl = yield* (spec.turn === undefined ? sandbox.open(opening) : spec.turn.open(opening)).pipe(
        Effect.mapError(sandboxFailed)
      )

      const protocol = options.protocol ?? "fenced"
      const system =
        options.systemPrompt ??
        Prompts.systemPromptFor(
          sandbox.language,
          protocol,
          tree.userTools.map((t) => t.spec),
          { subCalls: options.subCalls !== false }
        )
      const typed = options.output ? Prompts.typedAnswer(String(options.output.ast), protocol) : undefined
      const note = spec.turn === undefined ? undefined : yield* spec.turn.note
      const extra = [typed, note].filter((s) => s !== undefined).join("\n\n")
      const first = Step.initial(system, Prompts.firstTurn(spec.query, meta, extra === "" ? undefined : extra))
      const initial = spec.turn === undefined ? first : withHistory(first, yield* spec.turn.history(turnCall(ctx)))
      const run: Run = {
        ctx,
        spec,
        repl,
        config: {
          query: spec.query,
          language: sandbox.language,
          maxSteps: policy.maxSteps,
          maxConsecutiveErrors: policy.maxConsecutiveErrors,
          maxSandboxRestarts: policy.maxSandboxRestarts,
          maxAnswerChars: policy.maxAnswerChars,
          requireReplBeforeFinal: options.requireReplBeforeFinal === true,
          output: options.output,
          protocol
        },
        state: yield* Ref.make(initial),
        pending,
        lastLoss: yield* Ref.make(Option.none<Sandbox.SandboxError>()),
        tools: protocol === "tools" ? ToolProtocol.tools(sandbox.language) : undefined
      }
      const partial = Effect.map(Ref.get(run.state), (s) => Option.fromNullable(s.partialAnswer))

      return yield* loop(run, initial).pipe(
        Effect.catchTag("BudgetExceeded", (e) =>
          // Out of steps, the answer was asked for already (`Step.decideForced`): it is not asked twice.
          spec.depth === 0 && policy.onBudgetExceeded === "answer-now" && e.limit !== "maxSteps"
            ? Effect.zipRight(flush, answerNow(run, e))
            : Effect.flatMap(partial, (p) =>
                Effect.fail(withContext(e, { partialAnswer: Option.orElse(e.partialAnswer, () => p) }))
              )
        ),
        Effect.tap(() =>
          spec.turn === undefined
            ? Effect.void
            : Effect.flatMap(Ref.get(run.state), (s) => (spec.turn as SessionTurn).onAnswered(s.messages))
        )
      )
    })

    return yield* Effect.scoped(body).pipe(
      // A step stopped half-way is recorded once the REPL is closed: its in-flight host calls have ended then,
      // so their SubCalls come before it.
      Effect.onExit(() => flush),
      // The wall clock bounds the whole tree: it is set on the top run, so that run ends as "budget_exceeded"
      // while the children it interrupts end as "interrupted".
      (self) => (spec.depth === 0 ? wallClock(policy, self) : self),
      Effect.tap(() => finish("answered")),
      Effect.tapError((e) => finish(e._tag === "BudgetExceeded" ? "budget_exceeded" : "failed", e.message)),
      Effect.onInterrupt(() => finish("interrupted", "interrupted"))
    )
  }).pipe(
    Effect.withSpan(SpanName.run, {
      captureStackTrace: false,
      attributes: Tracing.defined({
        [Attribute.runId]: spec.runId,
        [Attribute.depth]: spec.depth,
        [Attribute.parentRunId]: spec.parentRunId,
        [Attribute.parentStep]: spec.parentStep,
        [Attribute.language]: tree.sandbox.language,
        [Attribute.isolation]: tree.sandbox.isolation,
        [Attribute.model]: tree.adapter.model("root")
      })
    })
  )

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
 * The user's tools with their handlers from the environment, checked against
 * the built-ins: a clash fails the run before it starts (`RunFailed` "Tools").
 * (The handlers' services are in `Rlm.run`'s requirements.)
 */
const userToolsOf = (options: RunOptions<any, any>): Effect.Effect<ReadonlyArray<HostTools.Entry>, RunFailed> =>
  options.tools === undefined
    ? Effect.succeed([])
    : Effect.flatMap(
        HostTools.fromToolkit(options.tools) as Effect.Effect<ReadonlyArray<HostTools.Entry>>,
        (entries) => {
          const invalid = HostTools.checkUserTools(entries.map((e) => e.spec))
          return invalid === undefined
            ? Effect.succeed(entries)
            : Effect.fail(
                new RunFailed({
                  reason: "Tools",
                  message: `The user tools cannot be used: ${invalid}. Rename the tool.`,
                  cause: undefined,
                  trace: undefined,
                  partialAnswer: Option.none()
                })
              )
        }
      )

const policyOf = (options: RunOptions<any, any>) =>
  options.policy instanceof Policy.Policy ? options.policy : Policy.make(options.policy ?? {})

/**
 * The whole run tree, publishing its events: the top run's, then `Answered`.
 * Fails with the run's error, its trace filled in.
 */
const drive = (
  query: string,
  context: RlmContext.Input,
  options: RunOptions<any, any>,
  events: Publisher,
  turn?: SessionTurn
): Effect.Effect<void, RlmError, LlmAdapter.LlmAdapter | Sandbox.Sandbox> =>
  Effect.gen(function* () {
    if (options.protocol !== undefined && options.protocol !== "fenced" && options.protocol !== "tools") {
      return yield* Effect.fail(
        new RunFailed({
          reason: "InvalidOptions",
          message: `The protocol option must be "fenced" or "tools", got ${JSON.stringify(options.protocol)}.`,
          cause: undefined,
          trace: new Trace({ events: [] }),
          partialAnswer: Option.none()
        })
      )
    }
    const policy = policyOf(options)
    const userTools = yield* userToolsOf(options)
    const tree: Tree = {
      budget: yield* Budget.make(policy),
      policy,
      adapter: yield* LlmAdapter.LlmAdapter,
      sandbox: yield* Sandbox.Sandbox,
      events,
      options,
      startedAt: yield* Clock.currentTimeMillis,
      userTools
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
    const top = runOne(tree, { runId: "run", depth: 0, query, context: RlmContext.make(context), usage: [], turn })
    const answered = yield* top.pipe(
      Effect.catchAll((e) => Effect.flatMap(events.snapshot, (trace) => Effect.fail(withContext(e, { trace }))))
    )
    yield* events.publish(
      new RunEvent.Answered(
        {
          answer: answered.answer,
          value: answered.value,
          source: answered.source,
          steps: answered.steps,
          totals: yield* tree.budget.totals
        },
        true
      )
    )
  })

/** Start a run tree in the current scope: its events' mailbox, and the fiber driving it (which ends the mailbox). */
const start = (query: string, context: RlmContext.Input, options: RunOptions<any, any>, turn?: SessionTurn) =>
  Effect.gen(function* () {
    const mailbox = yield* Mailbox.make<RunEvent.RunEvent, RlmError>()
    const events = yield* makePublisher(mailbox)
    const fiber = yield* drive(query, context, options, events, turn).pipe(Mailbox.into(mailbox), Effect.forkScoped)
    return { mailbox, fiber }
  })

/**
 * The events of a run tree as they happen (see `RunEvent` for the ordering
 * guarantees): every trace event of the root run and of every child run,
 * live events (a model call or a block starting, a block finishing), then
 * `Answered` with the result. A run that fails ends the stream with its typed
 * error, carrying the partial trace. Stopping the stream early (or
 * interrupting its consumer) interrupts the run: every REPL session and
 * in-flight call is closed.
 *
 * @since 0.2.0
 * @category Running
 */
export const stream = <Tools extends Record<string, Tool.Any> = {}>(
  query: string,
  context: RlmContext.Input,
  options: RunOptions<any, Tools> = {}
): Stream.Stream<RunEvent.RunEvent, RlmError, LlmAdapter.LlmAdapter | Sandbox.Sandbox | Tool.HandlersFor<Tools>> =>
  Stream.unwrapScoped(Effect.map(start(query, context, options), ({ mailbox }) => Mailbox.toStream(mailbox)))

/**
 * Fold a run's events into its result, handing each trace event to the
 * recorder (if any) as it arrives. It reads the stream's mailbox a chunk at a
 * time (what `Mailbox.toStream` does, without a stream's machinery per
 * element: the fold is on the run loop's hot path) and fails with the run's
 * error once the events before it are folded.
 */
const fold = (
  mailbox: Mailbox.ReadonlyMailbox<RunEvent.RunEvent, RlmError>,
  recorder: Option.Option<TraceRecorder["Type"]>
): Effect.Effect<RunResult<any>, RlmError> =>
  Effect.gen(function* () {
    const acc: { readonly events: Array<TraceEvent.TraceEvent>; answered: RunEvent.Answered | undefined } = {
      events: [],
      answered: undefined
    }
    const take = Effect.flatMap(mailbox.takeAll, ([chunk, done]) => {
      const traced: Array<TraceEvent.TraceEvent> = []
      for (const event of chunk) {
        if (event._tag === "Answered") acc.answered = event
        else if (RunEvent.isTraceEvent(event)) traced.push(event)
      }
      acc.events.push(...traced)
      const recorded = Option.isSome(recorder)
        ? Effect.forEach(traced, (event) => recorder.value.record(event), { discard: true })
        : Effect.void
      return Effect.as(recorded, done)
    })
    yield* Effect.iterate(false, { while: (done) => !done, body: () => take })
    const answered = acc.answered
    if (answered === undefined) return yield* Effect.dieMessage("Rlm.run: the run's events ended without an answer")
    return {
      answer: answered.answer,
      value: answered.value,
      source: answered.source,
      steps: answered.steps,
      totals: answered.totals,
      trace: new Trace({ events: acc.events })
    }
  })

/**
 * Run an RLM over `context` to answer `query`: {@link stream} folded into a
 * `RunResult`.
 *
 * Requires the `LlmAdapter` and `Sandbox` services; a `TraceRecorder` in
 * context also receives every trace event as it happens (it is one more
 * consumer of the stream). The result (and every error) carries the trace of
 * the whole run tree. When the run is interrupted, the events its runs
 * publish while they stop (`RunFinished` "interrupted", a step stopped
 * half-way) still reach the recorder.
 *
 * @since 0.1.0
 * @category Running
 */
export const run: {
  <A, Tools extends Record<string, Tool.Any> = {}>(
    query: string,
    context: RlmContext.Input,
    options: RunOptions<A, Tools> & { readonly output: Schema.Schema<A, any, never> }
  ): Effect.Effect<RunResult<A>, RlmError, LlmAdapter.LlmAdapter | Sandbox.Sandbox | Tool.HandlersFor<Tools>>
  <Tools extends Record<string, Tool.Any> = {}>(
    query: string,
    context: RlmContext.Input,
    options?: RunOptions<string, Tools>
  ): Effect.Effect<RunResult<string>, RlmError, LlmAdapter.LlmAdapter | Sandbox.Sandbox | Tool.HandlersFor<Tools>>
} = (query: string, context: RlmContext.Input, options: RunOptions<any, any> = {}) =>
  runWith(query, context, options) as any

const runWith = (
  query: string,
  context: RlmContext.Input,
  options: RunOptions<any, any>,
  turn?: SessionTurn
): Effect.Effect<RunResult<any>, RlmError, LlmAdapter.LlmAdapter | Sandbox.Sandbox> =>
  Effect.scoped(
    Effect.gen(function* () {
      const recorder = yield* Effect.serviceOption(TraceRecorder)
      const { fiber, mailbox } = yield* start(query, context, options, turn)
      // The fold runs in its own fiber, never interrupted from outside: when this run is interrupted, the
      // driver is interrupted and the fold goes on to the driver's last event, so nothing published is lost.
      const folded = yield* Effect.forkScoped(fold(mailbox, recorder))
      return yield* Fiber.join(folded).pipe(
        Effect.onInterrupt(() => Effect.zipRight(Fiber.interrupt(fiber), Fiber.await(folded)))
      )
    })
  )

/**
 * One turn of a `Session` as a run: {@link run} over the session's REPL and
 * root history (see `Session.make`).
 *
 * @since 0.3.0
 * @internal
 */
export const runTurn = (
  query: string,
  context: RlmContext.Input,
  options: RunOptions<any, any>,
  turn: SessionTurn
): Effect.Effect<RunResult<any>, RlmError, LlmAdapter.LlmAdapter | Sandbox.Sandbox> =>
  runWith(query, context, options, turn)

/**
 * One turn of a `Session` as the events of a run: {@link stream} over the
 * session's REPL and root history (see `Session.make`).
 *
 * @since 0.3.0
 * @internal
 */
export const streamTurn = (
  query: string,
  context: RlmContext.Input,
  options: RunOptions<any, any>,
  turn: SessionTurn
): Stream.Stream<RunEvent.RunEvent, RlmError, LlmAdapter.LlmAdapter | Sandbox.Sandbox> =>
  Stream.unwrapScoped(Effect.map(start(query, context, options, turn), ({ mailbox }) => Mailbox.toStream(mailbox)))

/**
 * An RLM as an `@effect/ai` `LanguageModel`: a Layer whose `generateText`
 * answers the prompt by running an RLM over it (see `RlmLanguageModel` for
 * how a prompt maps to a run). The same as `RlmLanguageModel.layer`.
 *
 * @since 0.2.0
 * @category Layers
 */
export { layer as languageModel } from "./RlmLanguageModel.js"

/**
 * A multi-turn session: one REPL and one root conversation over many asks
 * (see `Session` for turns, compaction, export and resume). The same as
 * `Session.make`.
 *
 * @since 0.3.0
 * @category Constructors
 */
export { make as session } from "./Session.js"
