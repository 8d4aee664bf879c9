import { afterAll } from "@effect/vitest"
import { Effect, Exit, Layer, Scope } from "effect"
import * as PythonSandbox from "../src/PythonSandbox.js"
import * as Sandbox from "../src/Sandbox.js"
import { replContractSuite } from "./ReplContract.js"

// Every contract case opens its own session; a warm pool built once for the
// whole file keeps that from costing a cold start per case.
const scope = Effect.runSync(Scope.make())
const service = Effect.runPromise(PythonSandbox.makePool({ size: 2 }).pipe(Scope.extend(scope)))
afterAll(() => Effect.runPromise(Scope.close(scope, Exit.void)))

replContractSuite(
  "PythonSandbox",
  Layer.effect(
    Sandbox.Sandbox,
    Effect.promise(() => service)
  )
)
