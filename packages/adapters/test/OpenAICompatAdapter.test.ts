import { FetchHttpClient, HttpClient, HttpClientResponse } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Fiber, Layer, Option, Redacted, TestClock } from "effect"
import * as AttemptObserver from "../src/AttemptObserver.js"
import { ChatMessage, ChatRequest, LlmAdapter } from "../src/LlmAdapter.js"
import * as OpenAICompatAdapter from "../src/OpenAICompatAdapter.js"
import { at, closedPort, drop, hang, json, loopback, text } from "./utils/loopback.js"

const request = (role: "root" | "sub" = "root") =>
  new ChatRequest({
    role,
    messages: [
      new ChatMessage({ role: "system", content: "You are an RLM." }),
      new ChatMessage({ role: "user", content: "What is in P?" })
    ]
  })

// As documented by OpenAI for POST /v1/chat/completions.
const completion = (content: string, usage: boolean) => ({
  id: "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  object: "chat.completion",
  created: 1741569952,
  model: "gpt-4.1-2025-04-14",
  choices: [
    {
      index: 0,
      message: { role: "assistant", content, refusal: null, annotations: [] },
      logprobs: null,
      finish_reason: "stop"
    }
  ],
  ...(usage
    ? {
        usage: {
          prompt_tokens: 19,
          completion_tokens: 10,
          total_tokens: 29,
          prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
          completion_tokens_details: { reasoning_tokens: 0 }
        }
      }
    : {}),
  service_tier: "default"
})

const openAiError = (message: string, type: string, code: string | null) => ({
  error: { message, type, param: null, code }
})

const fast = { retryBaseDelay: Duration.millis(5), maxRetries: 2 } as const

const adapter = (options: OpenAICompatAdapter.Options) =>
  OpenAICompatAdapter.make(options).pipe(Effect.provide(FetchHttpClient.layer))

describe("OpenAICompatAdapter over loopback HTTP", () => {
  it.scopedLive("sends the documented request with a key and reads text and usage", () =>
    Effect.gen(function* () {
      const server = yield* loopback([json(200, completion("It holds a report.", true))])
      const llm = yield* adapter({
        model: "gpt-4.1",
        baseUrl: `${server.baseUrl}/v1/`,
        apiKey: Redacted.make("sk-test-123"),
        temperature: 0.2,
        maxTokens: 256,
        extraBody: { seed: 7 },
        extraHeaders: { "X-Title": "rlm-runtime" }
      })
      const response = yield* llm.chat(request())
      assert.strictEqual(response.text, "It holds a report.")
      assert.strictEqual(response.model, "gpt-4.1-2025-04-14", "the model the server reports")
      assert.strictEqual(llm.model("root"), "gpt-4.1")
      assert.deepStrictEqual(
        { ...response.usage },
        { inputTokens: 19, outputTokens: 10, totalTokens: 29, cachedInputTokens: 0, reasoningTokens: 0 }
      )
      assert.strictEqual(response.finishReason, "stop")
      assert.strictEqual(server.requests.length, 1)
      const seen = at(server.requests, 0)
      assert.strictEqual(seen.method, "POST")
      assert.strictEqual(seen.path, "/v1/chat/completions")
      assert.strictEqual(seen.headers.authorization, "Bearer sk-test-123")
      assert.strictEqual(seen.headers["content-type"], "application/json")
      assert.strictEqual(seen.headers["x-title"], "rlm-runtime")
      assert.deepStrictEqual(seen.json, {
        model: "gpt-4.1",
        messages: [
          { role: "system", content: "You are an RLM." },
          { role: "user", content: "What is in P?" }
        ],
        temperature: 0.2,
        max_tokens: 256,
        seed: 7
      })
    })
  )

  it.scopedLive("sends no Authorization header at all without a key; a reply without usage is unknown", () =>
    Effect.gen(function* () {
      const server = yield* loopback([json(200, completion("ok", false))])
      const llm = yield* adapter({ model: "llama-3.1-8b", baseUrl: `${server.baseUrl}/v1` })
      const response = yield* llm.chat(request())
      assert.strictEqual(response.text, "ok")
      assert.isUndefined(response.usage.inputTokens)
      assert.isUndefined(response.usage.outputTokens)
      assert.isUndefined(response.usage.totalTokens)
      assert.isFalse("authorization" in at(server.requests, 0).headers)
      assert.deepStrictEqual(at(server.requests, 0).json, {
        model: "llama-3.1-8b",
        messages: [
          { role: "system", content: "You are an RLM." },
          { role: "user", content: "What is in P?" }
        ]
      })
    })
  )

  it.scopedLive("max_completion_tokens when asked for", () =>
    Effect.gen(function* () {
      const server = yield* loopback([json(200, completion("ok", true))])
      const llm = yield* adapter({
        model: "o4-mini",
        baseUrl: server.baseUrl,
        maxTokens: 100,
        maxTokensField: "max_completion_tokens"
      })
      yield* llm.chat(request())
      const body = at(server.requests, 0).json as Record<string, unknown>
      assert.strictEqual(body.max_completion_tokens, 100)
      assert.isFalse("max_tokens" in body)
    })
  )

  it.scopedLive("429 with Retry-After waits that long, then succeeds", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(429, openAiError("Rate limit reached for gpt-4.1", "requests", "rate_limit_exceeded"), {
          "retry-after": "1"
        }),
        json(200, completion("after the wait", true))
      ])
      const llm = yield* adapter({ model: "gpt-4.1", baseUrl: server.baseUrl, ...fast })
      const started = Date.now()
      const response = yield* llm.chat(request())
      const elapsed = Date.now() - started
      assert.strictEqual(response.text, "after the wait")
      assert.strictEqual(server.requests.length, 2)
      assert.isAtLeast(elapsed, 950)
    })
  )

  it.scopedLive("each retried attempt is told to the caller's AttemptObserver, with the usage its body reported", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(429, openAiError("Rate limit reached for gpt-4.1", "requests", "rate_limit_exceeded"), {
          "retry-after": "0"
        }),
        // A server that failed half-way and still says what it spent.
        json(503, completion("cut", true)),
        json(200, completion("third time", true))
      ])
      const llm = yield* adapter({ model: "gpt-4.1", baseUrl: server.baseUrl, ...fast })
      const seen: Array<AttemptObserver.AttemptFailed> = []
      const response = yield* llm
        .chat(request())
        .pipe(AttemptObserver.observe((attempt) => Effect.sync(() => seen.push(attempt))))
      assert.strictEqual(response.text, "third time")
      assert.deepStrictEqual(
        seen.map((a) => [a.attempt, a.reason, a.status]),
        [
          [1, "RateLimited", 429],
          [2, "ServerError", 503]
        ]
      )
      assert.strictEqual(seen[0]?.delayMs, 0, "Retry-After: 0")
      assert.isUndefined(seen[0]?.usage)
      assert.deepStrictEqual(
        { ...seen[1]?.usage },
        { inputTokens: 19, outputTokens: 10, totalTokens: 29, cachedInputTokens: 0, reasoningTokens: 0 }
      )
      assert.include(seen[0]?.message ?? "", "Rate limit reached")
      // Without an observer, nothing changes.
      const quiet = yield* loopback([
        json(500, openAiError("oops", "server_error", null)),
        json(200, completion("ok", true))
      ])
      const plain = yield* adapter({ model: "gpt-4.1", baseUrl: quiet.baseUrl, ...fast })
      assert.strictEqual((yield* plain.chat(request())).text, "ok")
    })
  )

  it.scopedLive("500 then success is retried", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(500, openAiError("The server had an error while processing your request.", "server_error", null)),
        json(200, completion("second time lucky", true))
      ])
      const llm = yield* adapter({ model: "gpt-4.1", baseUrl: server.baseUrl, ...fast })
      assert.strictEqual((yield* llm.chat(request())).text, "second time lucky")
      assert.strictEqual(server.requests.length, 2)
    })
  )

  it.scopedLive("5xx on every attempt gives up after maxRetries", () =>
    Effect.gen(function* () {
      const server = yield* loopback([text(502, "Bad Gateway")])
      const llm = yield* adapter({ model: "gpt-4.1", baseUrl: server.baseUrl, ...fast })
      const error = yield* Effect.flip(llm.chat(request()))
      assert.strictEqual(error.reason, "ServerError")
      assert.strictEqual(error.status, 502)
      assert.include(error.message, "Bad Gateway")
      assert.include(error.message, "3 attempts; giving up")
      assert.strictEqual(server.requests.length, 3)
    })
  )

  it.scopedLive("401 is not retried and says to set the key, quoting the server", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(
          401,
          openAiError(
            "Incorrect API key provided: sk-wrong. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key"
          )
        )
      ])
      const llm = yield* adapter({
        model: "gpt-4.1",
        baseUrl: server.baseUrl,
        apiKey: Redacted.make("sk-secret-value"),
        ...fast
      })
      const error = yield* Effect.flip(llm.chat(request()))
      assert.strictEqual(error._tag, "LlmError")
      assert.strictEqual(error.reason, "Unauthorized")
      assert.strictEqual(error.status, 401)
      assert.isFalse(error.retryable)
      assert.include(error.message, "LLM_API_KEY or OPENAI_API_KEY")
      assert.include(error.message, "Incorrect API key provided")
      assert.include(error.message, "invalid_api_key")
      assert.notInclude(error.message, "sk-secret-value")
      assert.strictEqual(server.requests.length, 1)
    })
  )

  it.scopedLive("a server that echoes the rejected key does not get it into the error", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(401, openAiError("Invalid key sk-live-abcdef123456 for this project", "invalid_request_error", null))
      ])
      const llm = yield* adapter({
        model: "m",
        baseUrl: server.baseUrl,
        apiKey: Redacted.make("sk-live-abcdef123456"),
        ...fast
      })
      const error = yield* Effect.flip(llm.chat(request()))
      assert.notInclude(error.message, "sk-live-abcdef123456")
      assert.include(error.message, "Invalid key <redacted> for this project")
    })
  )

  it.scopedLive("401 without a key says no key was sent", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(401, openAiError("Missing bearer authentication", "invalid_request_error", null))
      ])
      const llm = yield* adapter({ model: "gpt-4.1", baseUrl: server.baseUrl, ...fast })
      const error = yield* Effect.flip(llm.chat(request()))
      assert.strictEqual(error.reason, "Unauthorized")
      assert.include(error.message, "no API key was sent")
    })
  )

  it.scopedLive("404 for an unknown model is ModelNotFound, not retried", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(
          404,
          openAiError(
            "The model `gpt-9` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found"
          )
        )
      ])
      const llm = yield* adapter({ model: "gpt-9", baseUrl: server.baseUrl, ...fast })
      const error = yield* Effect.flip(llm.chat(request()))
      assert.strictEqual(error.reason, "ModelNotFound")
      assert.strictEqual(error.status, 404)
      assert.include(error.message, 'Model "gpt-9"')
      assert.include(error.message, "does not exist")
      assert.strictEqual(server.requests.length, 1)
    })
  )

  it.scopedLive("404 at a wrong path is NotFound with advice about the base URL", () =>
    Effect.gen(function* () {
      const server = yield* loopback([text(404, "Cannot POST /chat/completions")])
      const llm = yield* adapter({ model: "m", baseUrl: server.baseUrl, ...fast })
      const error = yield* Effect.flip(llm.chat(request()))
      assert.strictEqual(error.reason, "NotFound")
      assert.include(error.message, "LLM_BASE_URL or OPENAI_BASE_URL")
      assert.include(error.message, "ends in /v1")
      assert.include(error.message, "Cannot POST")
    })
  )

  it.scopedLive("400 context length is ContextTooLong", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(
          400,
          openAiError(
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 200000 tokens.",
            "invalid_request_error",
            "context_length_exceeded"
          )
        )
      ])
      const llm = yield* adapter({ model: "gpt-4.1", baseUrl: server.baseUrl, ...fast })
      const error = yield* Effect.flip(llm.chat(request()))
      assert.strictEqual(error.reason, "ContextTooLong")
      assert.include(error.message, "maximum context length is 128000")
      assert.strictEqual(server.requests.length, 1)
    })
  )

  it.scopedLive("429 for exhausted quota is not retried", () =>
    Effect.gen(function* () {
      const server = yield* loopback([
        json(429, openAiError("You exceeded your current quota.", "insufficient_quota", "insufficient_quota"))
      ])
      const llm = yield* adapter({ model: "gpt-4.1", baseUrl: server.baseUrl, ...fast })
      const error = yield* Effect.flip(llm.chat(request()))
      assert.strictEqual(error.reason, "RateLimited")
      assert.isFalse(error.retryable)
      assert.include(error.message, "billing")
      assert.strictEqual(server.requests.length, 1)
    })
  )

  it.scopedLive("malformed JSON is MalformedResponse", () =>
    Effect.gen(function* () {
      const server = yield* loopback([json(200, '{"choices": [')])
      const llm = yield* adapter({ model: "m", baseUrl: server.baseUrl, ...fast })
      const error = yield* Effect.flip(llm.chat(request()))
      assert.strictEqual(error.reason, "MalformedResponse")
      assert.include(error.message, "not JSON")
      assert.include(error.message, '{"choices": [')
      assert.strictEqual(server.requests.length, 1)
    })
  )

  it.scopedLive("an empty choice list is MalformedResponse", () =>
    Effect.gen(function* () {
      const server = yield* loopback([json(200, { ...completion("x", true), choices: [] })])
      const llm = yield* adapter({ model: "m", baseUrl: server.baseUrl, ...fast })
      const error = yield* Effect.flip(llm.chat(request()))
      assert.strictEqual(error.reason, "MalformedResponse")
      assert.include(error.message, '"choices" list is empty')
    })
  )

  it.scopedLive("a server that never answers times out, retried a bounded number of times", () =>
    Effect.gen(function* () {
      const server = yield* loopback([hang])
      const llm = yield* adapter({
        model: "m",
        baseUrl: server.baseUrl,
        timeout: Duration.millis(200),
        maxRetries: 1,
        retryBaseDelay: Duration.millis(5)
      })
      const started = Date.now()
      const error = yield* Effect.flip(llm.chat(request()))
      const elapsed = Date.now() - started
      assert.strictEqual(error.reason, "Timeout")
      assert.include(error.message, "did not answer within 200 ms")
      assert.include(error.message, "2 attempts; giving up")
      assert.strictEqual(server.requests.length, 2)
      assert.isAtLeast(elapsed, 400)
      assert.isBelow(elapsed, 5_000)
    })
  )

  it.scopedLive("interrupting a call in flight aborts its HTTP request", () =>
    Effect.gen(function* () {
      const server = yield* loopback([hang])
      const llm = yield* adapter({ model: "m", baseUrl: server.baseUrl })
      const fiber = yield* Effect.fork(llm.chat(request()))
      yield* Effect.sleep(Duration.millis(20)).pipe(Effect.repeat({ until: () => server.requests.length === 1 }))
      assert.isFalse(at(server.requests, 0).closed.value)
      yield* Fiber.interrupt(fiber)
      yield* Effect.sleep(Duration.millis(10)).pipe(
        Effect.repeat({ until: () => at(server.requests, 0).closed.value }),
        Effect.timeoutFail({ duration: Duration.seconds(5), onTimeout: () => new Error("connection still open") })
      )
      assert.isTrue(at(server.requests, 0).closed.value)
    })
  )

  it.scopedLive("a dropped connection is retried, then succeeds", () =>
    Effect.gen(function* () {
      const server = yield* loopback([drop, json(200, completion("reconnected", true))])
      const llm = yield* adapter({ model: "m", baseUrl: server.baseUrl, ...fast })
      assert.strictEqual((yield* llm.chat(request())).text, "reconnected")
      assert.strictEqual(server.requests.length, 2)
    })
  )

  it.scopedLive("a connection dropped on every attempt is a Transport error", () =>
    Effect.gen(function* () {
      const server = yield* loopback([drop])
      const llm = yield* adapter({ model: "m", baseUrl: server.baseUrl, ...fast })
      const error = yield* Effect.flip(llm.chat(request()))
      assert.strictEqual(error.reason, "Transport")
      assert.strictEqual(server.requests.length, 3)
    })
  )

  it.scopedLive("a refused connection fails at once and points at the base URL", () =>
    Effect.gen(function* () {
      const port = yield* closedPort
      const llm = yield* adapter({ model: "m", baseUrl: `http://127.0.0.1:${port}/v1`, ...fast })
      const error = yield* Effect.flip(llm.chat(request()))
      assert.strictEqual(error.reason, "Transport")
      assert.isFalse(error.retryable)
      assert.include(error.message, "Is the server running")
      assert.include(error.message, "ECONNREFUSED")
    })
  )

  it.scopedLive("root and sub models are separate adapters routed by role", () =>
    Effect.gen(function* () {
      const server = yield* loopback([json(200, completion("ok", true))])
      const llm = yield* OpenAICompatAdapter.makeByRole({
        model: "big",
        baseUrl: server.baseUrl,
        temperature: 0,
        sub: { model: "small" }
      }).pipe(Effect.provide(FetchHttpClient.layer))
      assert.strictEqual(llm.model("root"), "big")
      assert.strictEqual(llm.model("sub"), "small")
      yield* llm.chat(request("root"))
      yield* llm.chat(request("sub"))
      const models = server.requests.map((r) => (r.json as { model: string; temperature: number }).model)
      assert.deepStrictEqual(models, ["big", "small"])
      assert.strictEqual((at(server.requests, 1).json as { temperature: number }).temperature, 0)
    })
  )
})

// -----------------------------------------------------------------------------
// Fake HttpClient + TestClock: retry schedules, timeouts, configuration
// -----------------------------------------------------------------------------

interface Seen {
  readonly url: string
  readonly headers: Record<string, string>
}

/** An HttpClient answering from a list of (status, body, headers), recording requests. */
const fakeClient = (
  replies: ReadonlyArray<{ status: number; body?: unknown; headers?: Record<string, string> } | "never">
) => {
  const seen: Array<Seen> = []
  const client = HttpClient.make((req) => {
    const reply = at(replies, Math.min(seen.length, replies.length - 1))
    seen.push({ url: req.url, headers: { ...req.headers } })
    if (reply === "never") return Effect.never
    return Effect.succeed(
      HttpClientResponse.fromWeb(
        req,
        new Response(
          typeof reply.body === "string" ? reply.body : JSON.stringify(reply.body ?? completion("ok", true)),
          {
            status: reply.status,
            headers: { "content-type": "application/json", ...reply.headers }
          }
        )
      )
    )
  })
  return { seen, layer: Layer.succeed(HttpClient.HttpClient, client) }
}

const count = (seen: ReadonlyArray<Seen>) => Effect.sync(() => seen.length)

describe("OpenAICompatAdapter retry schedule (TestClock)", () => {
  it.effect("Retry-After in seconds is honoured exactly", () =>
    Effect.gen(function* () {
      const fake = fakeClient([
        { status: 429, body: openAiError("slow down", "requests", null), headers: { "retry-after": "5" } },
        { status: 200 }
      ])
      const llm = yield* OpenAICompatAdapter.make({ model: "m" }).pipe(Effect.provide(fake.layer))
      const fiber = yield* Effect.fork(llm.chat(request()))
      yield* TestClock.adjust(Duration.millis(4_999))
      assert.strictEqual(yield* count(fake.seen), 1)
      yield* TestClock.adjust(Duration.millis(1))
      const response = yield* Fiber.join(fiber)
      assert.strictEqual(response.text, "ok")
      assert.strictEqual(yield* count(fake.seen), 2)
    })
  )

  it.effect("Retry-After as an HTTP date is honoured", () =>
    Effect.gen(function* () {
      // TestClock starts at the epoch, so this date is 3 s from "now".
      const fake = fakeClient([
        { status: 503, body: "overloaded", headers: { "retry-after": "Thu, 01 Jan 1970 00:00:03 GMT" } },
        { status: 200 }
      ])
      const llm = yield* OpenAICompatAdapter.make({ model: "m" }).pipe(Effect.provide(fake.layer))
      const fiber = yield* Effect.fork(llm.chat(request()))
      yield* TestClock.adjust(Duration.millis(2_999))
      assert.strictEqual(yield* count(fake.seen), 1)
      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual((yield* Fiber.join(fiber)).text, "ok")
    })
  )

  it.effect("a Retry-After beyond maxRetryAfter fails at once", () =>
    Effect.gen(function* () {
      const fake = fakeClient([
        { status: 429, body: openAiError("slow down", "requests", null), headers: { "retry-after": "3600" } }
      ])
      const llm = yield* OpenAICompatAdapter.make({ model: "m" }).pipe(Effect.provide(fake.layer))
      const error = yield* Effect.flip(llm.chat(request()))
      assert.strictEqual(error.reason, "RateLimited")
      assert.include(error.message, "asked to wait 3600 s")
      assert.strictEqual(fake.seen.length, 1)
    })
  )

  it.effect("exponential backoff with jitter: retry n waits in [base·2^n / 2, base·2^n)", () =>
    Effect.gen(function* () {
      const fake = fakeClient([{ status: 500, body: "boom" }])
      const llm = yield* OpenAICompatAdapter.make({
        model: "m",
        maxRetries: 3,
        retryBaseDelay: Duration.seconds(1)
      }).pipe(Effect.provide(fake.layer))
      const fiber = yield* Effect.fork(Effect.flip(llm.chat(request())))
      // Step the clock 25 ms at a time and note when each attempt arrives.
      yield* TestClock.adjust(Duration.zero)
      assert.strictEqual(fake.seen.length, 1)
      const arrivals: Array<number> = []
      let now = 0
      while (fake.seen.length < 4 && now < 20_000) {
        const before = fake.seen.length
        yield* TestClock.adjust(Duration.millis(25))
        now += 25
        if (fake.seen.length > before) arrivals.push(now)
      }
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(fake.seen.length, 4)
      const gaps = arrivals.map((t, i) => t - (i === 0 ? 0 : at(arrivals, i - 1)))
      const bounds: Array<[number, number]> = [
        [500, 1000],
        [1000, 2000],
        [2000, 4000]
      ]
      gaps.forEach((gap, i) => {
        const [low, high] = at(bounds, i)
        assert.isAtLeast(gap, low - 25, `retry ${i + 1} after ${gap} ms`)
        assert.isAtMost(gap, high + 25, `retry ${i + 1} after ${gap} ms`)
      })
      assert.strictEqual(error.reason, "ServerError")
      assert.include(error.message, "4 attempts; giving up")
    })
  )

  it.effect("backoff is capped by retryMaxDelay", () =>
    Effect.gen(function* () {
      const fake = fakeClient([{ status: 503, body: "busy" }, { status: 503, body: "busy" }, { status: 200 }])
      const llm = yield* OpenAICompatAdapter.make({
        model: "m",
        maxRetries: 5,
        retryBaseDelay: Duration.seconds(10),
        retryMaxDelay: Duration.seconds(1)
      }).pipe(Effect.provide(fake.layer))
      const fiber = yield* Effect.fork(llm.chat(request()))
      yield* TestClock.adjust(Duration.millis(1_000))
      assert.strictEqual(fake.seen.length, 2)
      yield* TestClock.adjust(Duration.millis(1_000))
      assert.strictEqual(fake.seen.length, 3)
      assert.strictEqual((yield* Fiber.join(fiber)).text, "ok")
    })
  )

  it.effect("a request that never answers times out after the configured timeout", () =>
    Effect.gen(function* () {
      const fake = fakeClient(["never"])
      const llm = yield* OpenAICompatAdapter.make({ model: "m", timeout: Duration.seconds(30), maxRetries: 0 }).pipe(
        Effect.provide(fake.layer)
      )
      const fiber = yield* Effect.fork(Effect.flip(llm.chat(request())))
      yield* TestClock.adjust(Duration.seconds(29))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.seconds(1))
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error.reason, "Timeout")
      assert.isTrue(error.retryable)
    })
  )

  it.effect("400/401/403/404 are never retried", () =>
    Effect.gen(function* () {
      for (const status of [400, 401, 403, 404]) {
        const fake = fakeClient([{ status, body: openAiError("nope", "invalid_request_error", null) }, { status: 200 }])
        const llm = yield* OpenAICompatAdapter.make({ model: "m" }).pipe(Effect.provide(fake.layer))
        const error = yield* Effect.flip(llm.chat(request()))
        assert.strictEqual(error.status, status)
        assert.isFalse(error.retryable)
        assert.strictEqual(fake.seen.length, 1, `status ${status} was retried`)
      }
    })
  )
})

describe("OpenAICompatAdapter configuration", () => {
  const run = (env: Record<string, string>, options: Partial<OpenAICompatAdapter.Options> = {}) =>
    Effect.gen(function* () {
      const fake = fakeClient([{ status: 200 }])
      const llm = yield* LlmAdapter.pipe(
        Effect.provide(OpenAICompatAdapter.layerConfig({ model: "m", ...options })),
        Effect.provide(fake.layer),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
      )
      yield* llm.chat(request())
      return at(fake.seen, 0)
    })

  it.effect("LLM_* beats OPENAI_*", () =>
    Effect.gen(function* () {
      const seen = yield* run({
        LLM_API_KEY: "llm-key",
        OPENAI_API_KEY: "openai-key",
        LLM_BASE_URL: "http://llm.local/v1",
        OPENAI_BASE_URL: "http://openai.local/v1"
      })
      assert.strictEqual(seen.url, "http://llm.local/v1/chat/completions")
      assert.strictEqual(seen.headers.authorization, "Bearer llm-key")
    })
  )

  it.effect("OPENAI_* is used when LLM_* is missing or empty", () =>
    Effect.gen(function* () {
      const seen = yield* run({
        LLM_API_KEY: "",
        OPENAI_API_KEY: "openai-key",
        OPENAI_BASE_URL: "http://openai.local/v1"
      })
      assert.strictEqual(seen.url, "http://openai.local/v1/chat/completions")
      assert.strictEqual(seen.headers.authorization, "Bearer openai-key")
    })
  )

  it.effect("no key → no Authorization header; default base URL is OpenAI's", () =>
    Effect.gen(function* () {
      const seen = yield* run({})
      assert.strictEqual(seen.url, "https://api.openai.com/v1/chat/completions")
      assert.isFalse("authorization" in seen.headers)
    })
  )

  it.effect("a baseUrl option wins over the environment", () =>
    Effect.gen(function* () {
      const seen = yield* run({ LLM_BASE_URL: "http://llm.local/v1" }, { baseUrl: "http://flag.local/v1" })
      assert.strictEqual(seen.url, "http://flag.local/v1/chat/completions")
    })
  )

  it.effect("config exposes the key only as Redacted", () =>
    Effect.gen(function* () {
      const config = yield* OpenAICompatAdapter.config.pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["OPENAI_API_KEY", "sk-hidden"]])))
      )
      assert.isTrue(Option.isSome(config.apiKey))
      const key = Option.getOrThrow(config.apiKey)
      assert.notInclude(String(key), "sk-hidden")
      assert.notInclude(JSON.stringify(config), "sk-hidden")
      assert.strictEqual(Redacted.value(key), "sk-hidden")
    })
  )
})
