/**
 * The seed example: a scripted (Fake) root model drives a real Python REPL.
 *
 * The first root reply is bare code that peeks at the context and asks a
 * sub-model for a summary; the second answers with the variable. The Fake
 * adapter answers sub-calls containing "Summarize" with "fake summary".
 *
 * Run: pnpm example   (prints: fake summary)
 */
import { FakeAdapter } from "@rlm-runtime/adapters"
import { Rlm } from "@rlm-runtime/core"
import { PythonSandbox } from "@rlm-runtime/sandbox"
import { Console, Effect, Layer } from "effect"

const model = FakeAdapter.layer({
  script: [
    ["snippet = peek(80)", "summary = llm_query(f'Summarize: {snippet}')", "answer = summary"].join("\n"),
    "FINAL_VAR: answer"
  ],
  rules: [{ match: "Summarize", reply: "fake summary" }]
})

const program = Rlm.run("Summarize the context.", "RLMs treat long prompts as environment state.").pipe(
  Effect.flatMap((result) => Console.log(result.answer)),
  Effect.provide(Layer.merge(model, PythonSandbox.layer()))
)

Effect.runPromise(program).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
