import * as AiError from "@effect/ai/AiError"
import * as LanguageModel from "@effect/ai/LanguageModel"
import type * as Prompt from "@effect/ai/Prompt"
import type * as Response from "@effect/ai/Response"
import * as Tool from "@effect/ai/Tool"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Stream } from "effect"
import * as EffectAiAdapter from "../src/EffectAiAdapter.js"
import { ChatMessage, ChatRequest, LlmAdapter, ToolCall, ToolDefinition } from "../src/LlmAdapter.js"
import { at } from "./utils/loopback.js"

const request = new ChatRequest({
  role: "root",
  messages: [
    new ChatMessage({ role: "system", content: "sys" }),
    new ChatMessage({ role: "user", content: "question" }),
    new ChatMessage({ role: "assistant", content: "earlier reply" })
  ]
})

/** A LanguageModel built with LanguageModel.make that records prompts and answers with `parts`. */
const fakeModel = (answer: (prompt: Prompt.Prompt) => Effect.Effect<Array<Response.PartEncoded>, AiError.AiError>) => {
  const prompts: Array<Prompt.Prompt> = []
  const layer = Layer.effect(
    LanguageModel.LanguageModel,
    LanguageModel.make({
      generateText: (options) => {
        prompts.push(options.prompt)
        return answer(options.prompt)
      },
      streamText: () => Stream.empty
    })
  )
  return { prompts, layer }
}

const finish = (usage: {
  inputTokens?: number
  outputTokens?: number
  totalTokens?: number
}): Response.PartEncoded => ({
  type: "finish",
  reason: "stop",
  usage: {
    inputTokens: usage.inputTokens,
    outputTokens: usage.outputTokens,
    totalTokens: usage.totalTokens
  }
})

const requestDetails = {
  method: "POST" as const,
  url: "https://api.example.com/v1/responses",
  urlParams: [],
  hash: Option.none(),
  headers: {}
}

describe("EffectAiAdapter", () => {
  it.effect("maps messages to a Prompt and reads text and usage", () => {
    const fake = fakeModel(() =>
      Effect.succeed([
        { type: "text", text: "Hello " },
        { type: "text", text: "world" },
        finish({ inputTokens: 12, outputTokens: 3, totalTokens: 15 })
      ])
    )
    return Effect.gen(function* () {
      const llm = yield* LlmAdapter
      const response = yield* llm.chat(request)
      assert.strictEqual(response.text, "Hello world")
      assert.strictEqual(response.model, "fake-model")
      assert.strictEqual(llm.model("sub"), "fake-model")
      assert.deepStrictEqual({ ...response.usage }, { inputTokens: 12, outputTokens: 3, totalTokens: 15 })
      const prompt = at(fake.prompts, 0)
      assert.deepStrictEqual(
        prompt.content.map((m) => m.role),
        ["system", "user", "assistant"]
      )
      assert.strictEqual(at(prompt.content, 0).content, "sys")
      const user = at(prompt.content, 1)
      assert.isTrue(user.role === "user" && user.content[0]?.type === "text" && user.content[0].text === "question")
    }).pipe(Effect.provide(EffectAiAdapter.layer({ model: "fake-model" })), Effect.provide(fake.layer))
  })

  it.effect("the model the provider reports (a response-metadata part's modelId) is the response's model", () => {
    const fake = fakeModel(() =>
      Effect.succeed([
        { type: "response-metadata", id: "r1", modelId: "claude-sonnet-4-20250514", timestamp: undefined },
        { type: "text", text: "hi" },
        finish({ inputTokens: 1, outputTokens: 1 })
      ])
    )
    return Effect.gen(function* () {
      const llm = yield* LlmAdapter
      const response = yield* llm.chat(request)
      assert.strictEqual(response.model, "claude-sonnet-4-20250514")
      assert.strictEqual(llm.model("root"), "claude-sonnet-4", "the configured name, for pricing")
    }).pipe(Effect.provide(EffectAiAdapter.layer({ model: "claude-sonnet-4" })), Effect.provide(fake.layer))
  })

  it.effect("sends the output cap through withMaxOutputTokens and surfaces a length stop", () => {
    // Stands for a provider's config service, e.g. OpenAiLanguageModel.Config read by its generateText.
    class ProviderConfig extends Context.Tag("test/ProviderConfig")<
      ProviderConfig,
      { readonly max_tokens: number }
    >() {}
    const seen: Array<number | undefined> = []
    const layer = Layer.effect(
      LanguageModel.LanguageModel,
      LanguageModel.make({
        generateText: () =>
          Effect.map(Effect.serviceOption(ProviderConfig), (config) => {
            seen.push(Option.getOrUndefined(config)?.max_tokens)
            return [
              { type: "text", text: "cut" },
              {
                type: "finish",
                reason: "length",
                usage: {
                  inputTokens: 9,
                  outputTokens: 7,
                  totalTokens: 16,
                  cachedInputTokens: 4,
                  reasoningTokens: 2
                }
              }
            ] satisfies Array<Response.PartEncoded>
          }),
        streamText: () => Stream.empty
      })
    )
    const capped = new ChatRequest({ ...request, maxOutputTokens: 7.5 })
    return Effect.gen(function* () {
      const bound = yield* EffectAiAdapter.make({
        model: "m",
        withMaxOutputTokens: (n) => Effect.provideService(ProviderConfig, { max_tokens: n })
      })
      const response = yield* bound.chat(capped)
      assert.strictEqual(response.finishReason, "length")
      assert.deepStrictEqual(
        { ...response.usage },
        { inputTokens: 9, outputTokens: 7, totalTokens: 16, cachedInputTokens: 4, reasoningTokens: 2 }
      )
      yield* bound.chat(request)
      // Without the option the cap cannot be sent (the call still works).
      const unbound = yield* EffectAiAdapter.make({ model: "m" })
      yield* unbound.chat(capped)
      assert.deepStrictEqual(seen, [7, undefined, undefined])
    }).pipe(Effect.provide(layer))
  })

  it.effect("usage fields the provider leaves undefined stay unknown; no finish part → all unknown", () =>
    Effect.gen(function* () {
      const partial = fakeModel(() => Effect.succeed([{ type: "text", text: "a" }, finish({ outputTokens: 4 })]))
      const r1 = yield* Effect.flatMap(LlmAdapter, (llm) => llm.chat(request)).pipe(
        Effect.provide(EffectAiAdapter.layer({ model: "m" })),
        Effect.provide(partial.layer)
      )
      assert.isUndefined(r1.usage.inputTokens)
      assert.strictEqual(r1.usage.outputTokens, 4)
      assert.isUndefined(r1.usage.totalTokens)
      const none = fakeModel(() => Effect.succeed([{ type: "text", text: "b" }]))
      const r2 = yield* Effect.flatMap(LlmAdapter, (llm) => llm.chat(request)).pipe(
        Effect.provide(EffectAiAdapter.layer({ model: "m" })),
        Effect.provide(none.layer)
      )
      assert.strictEqual(r2.text, "b")
      assert.isUndefined(r2.usage.inputTokens)
      assert.isUndefined(r2.usage.outputTokens)
    })
  )

  it.effect("AiError HTTP statuses become actionable LlmErrors", () =>
    Effect.gen(function* () {
      const cases: Array<[number, string, string]> = [
        [401, '{"error":{"message":"Incorrect API key"}}', "Unauthorized"],
        [404, '{"error":{"message":"The model `x` does not exist"}}', "ModelNotFound"],
        [429, '{"error":{"message":"Rate limit reached"}}', "RateLimited"],
        [500, "upstream failed", "ServerError"]
      ]
      for (const [status, body, reason] of cases) {
        const fake = fakeModel(() =>
          Effect.fail(
            new AiError.HttpResponseError({
              module: "OpenAiClient",
              method: "createResponse",
              reason: "StatusCode",
              request: requestDetails,
              response: { status, headers: {} },
              body
            })
          )
        )
        const error = yield* Effect.flip(
          Effect.flatMap(LlmAdapter, (llm) => llm.chat(request)).pipe(
            Effect.provide(EffectAiAdapter.layer({ model: "x", provider: "OpenAI (@effect/ai-openai)" })),
            Effect.provide(fake.layer)
          )
        )
        assert.strictEqual(error._tag, "LlmError")
        assert.strictEqual(error.reason, reason)
        assert.strictEqual(error.status, status)
        assert.include(error.message, "OpenAI (@effect/ai-openai)")
        assert.include(
          error.message,
          JSON.parse(body.startsWith("{") ? body : '{"error":{"message":"upstream failed"}}').error.message
        )
      }
    })
  )

  it.effect("transport, malformed and unknown AiErrors map to their reasons", () =>
    Effect.gen(function* () {
      const errors: Array<[AiError.AiError, string]> = [
        [
          new AiError.HttpRequestError({
            module: "M",
            method: "m",
            reason: "Transport",
            request: requestDetails,
            description: "socket hang up"
          }),
          "Transport"
        ],
        [new AiError.MalformedOutput({ module: "M", method: "m", description: "bad json" }), "MalformedResponse"],
        [new AiError.MalformedInput({ module: "M", method: "m", description: "bad prompt" }), "BadRequest"],
        [new AiError.UnknownError({ module: "M", method: "m", description: "???" }), "Unknown"]
      ]
      for (const [aiError, reason] of errors) {
        const fake = fakeModel(() => Effect.fail(aiError))
        const error = yield* Effect.flip(
          Effect.flatMap(LlmAdapter, (llm) => llm.chat(request)).pipe(
            Effect.provide(EffectAiAdapter.layer({ model: "x" })),
            Effect.provide(fake.layer)
          )
        )
        assert.strictEqual(error.reason, reason)
        assert.include(error.message, aiError.description ?? "")
      }
    })
  )

  it.effect("sends the tools as a toolkit, and returns the tool calls without running them", () => {
    const seen: Array<LanguageModel.ProviderOptions> = []
    const layer = Layer.effect(
      LanguageModel.LanguageModel,
      LanguageModel.make({
        generateText: (options) => {
          seen.push(options)
          return Effect.succeed([
            { type: "text", text: "Looking." },
            { type: "tool-call", id: "c1", name: "run_code", params: { code: "print(1)" } },
            // Params that do not match the tool's JSON Schema are data too.
            { type: "tool-call", id: "c2", name: "final_answer", params: [1, 2] },
            { type: "finish", reason: "tool-calls", usage: { inputTokens: 1, outputTokens: 2, totalTokens: 3 } }
          ] satisfies Array<Response.PartEncoded>)
        },
        streamText: () => Stream.empty
      })
    )
    const parameters = { type: "object", properties: { code: { type: "string" } }, required: ["code"] }
    return Effect.gen(function* () {
      const llm = yield* LlmAdapter
      const response = yield* llm.chat(
        new ChatRequest({
          role: "root",
          messages: [
            new ChatMessage({ role: "user", content: "question" }),
            new ChatMessage({
              role: "assistant",
              content: "",
              toolCalls: [new ToolCall({ id: "c0", name: "run_code", arguments: '{"code":"x = 1"}' })]
            }),
            new ChatMessage({ role: "tool", content: "(no output)", toolCallId: "c0", toolName: "run_code" })
          ],
          tools: [
            new ToolDefinition({ name: "run_code", description: "Run code.", parameters }),
            new ToolDefinition({ name: "final_answer", description: "Answer.", parameters: { type: "object" } })
          ],
          toolChoice: "required"
        })
      )
      assert.strictEqual(response.text, "Looking.")
      assert.strictEqual(response.finishReason, "tool-calls")
      assert.deepStrictEqual(
        (response.toolCalls ?? []).map((call) => ({ ...call })),
        [
          { id: "c1", name: "run_code", arguments: '{"code":"print(1)"}' },
          { id: "c2", name: "final_answer", arguments: "[1,2]" }
        ]
      )
      const options = at(seen, 0)
      assert.deepStrictEqual(
        options.tools.map(
          (tool): ReadonlyArray<unknown> => [
            tool.name,
            Tool.getDescription(tool as never),
            Tool.getJsonSchema(tool as never)
          ]
        ),
        [
          ["run_code", "Run code.", parameters],
          ["final_answer", "Answer.", { type: "object" }]
        ]
      )
      assert.strictEqual(options.toolChoice, "required")
      // The history's tool call and tool result are Prompt parts.
      const assistant = at(options.prompt.content, 1)
      const tool = at(options.prompt.content, 2)
      assert.deepStrictEqual(
        (assistant.content as ReadonlyArray<Prompt.Part>).map((part) => part.type),
        ["tool-call"]
      )
      assert.strictEqual(tool.role, "tool")
      const result = (tool.content as ReadonlyArray<Prompt.ToolResultPart>)[0]
      assert.strictEqual(result?.id, "c0")
      assert.strictEqual(result?.name, "run_code")
      assert.strictEqual(result?.result, "(no output)")
    }).pipe(Effect.provide(EffectAiAdapter.layer({ model: "m" })), Effect.provide(layer))
  })
})
