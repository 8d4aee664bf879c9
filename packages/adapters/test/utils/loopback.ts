import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Effect } from "effect"

/** A request as the loopback server received it. */
export interface Recorded {
  readonly method: string
  readonly path: string
  readonly headers: Http.IncomingHttpHeaders
  readonly body: string
  readonly json: unknown
  /** Set once the client's connection for this request has closed. */
  readonly closed: { value: boolean }
}

/** Answer one request; do nothing to never answer. */
export type Handler = (request: Recorded, response: Http.ServerResponse) => void

export const json =
  (status: number, body: unknown, headers: Record<string, string> = {}): Handler =>
  (_, response) => {
    response.writeHead(status, { "content-type": "application/json", ...headers })
    response.end(typeof body === "string" ? body : JSON.stringify(body))
  }

export const text =
  (status: number, body: string, headers: Record<string, string> = {}): Handler =>
  (_, response) => {
    response.writeHead(status, { "content-type": "text/plain", ...headers })
    response.end(body)
  }

/** Never answers (the scope's release closes the socket). */
export const hang: Handler = () => {}

/** Drops the connection without an HTTP response. */
export const drop: Handler = (_, response) => {
  response.socket?.destroy()
}

/**
 * A scoped HTTP server on 127.0.0.1 that answers the i-th request with
 * `handlers[i]` (the last handler repeats) and records every request.
 */
export const loopback = (handlers: ReadonlyArray<Handler>) =>
  Effect.acquireRelease(
    Effect.async<{ readonly baseUrl: string; readonly port: number; readonly requests: Array<Recorded> }>((resume) => {
      const requests: Array<Recorded> = []
      const server = Http.createServer((req, res) => {
        const chunks: Array<Buffer> = []
        req.on("data", (chunk: Buffer) => chunks.push(chunk))
        req.on("end", () => {
          const body = Buffer.concat(chunks).toString("utf8")
          let parsed: unknown
          try {
            parsed = JSON.parse(body)
          } catch {
            parsed = undefined
          }
          const closed = { value: false }
          res.on("close", () => {
            closed.value = true
          })
          const recorded: Recorded = {
            method: req.method ?? "",
            path: req.url ?? "",
            headers: req.headers,
            body,
            json: parsed,
            closed
          }
          const handler = handlers[Math.min(requests.length, handlers.length - 1)]
          requests.push(recorded)
          handler?.(recorded, res)
        })
      })
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as AddressInfo).port
        resume(Effect.succeed({ baseUrl: `http://127.0.0.1:${port}`, port, requests, server }))
      })
    }),
    (s) =>
      Effect.async<void>((resume) => {
        const server = (s as unknown as { server: Http.Server }).server
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  )

/** A port nothing listens on (a server was bound to it and closed). */
export const closedPort = Effect.async<number>((resume) => {
  const server = Http.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** `xs[i]`, failing the test when it is missing. */
export const at = <A>(xs: ReadonlyArray<A>, i: number): A => {
  const x = xs[i]
  if (x === undefined) throw new Error(`expected an element at index ${i} (length ${xs.length})`)
  return x
}
