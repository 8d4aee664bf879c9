/**
 * What a Python block prints and echoes, against a reference: the whole block
 * parsed to an AST, its last statement evaluated and echoed when it is an
 * expression (the REPL's rule, and what `exec_block` did before it compiled
 * most of a block straight from source). Two interpreters get the same
 * blocks in the same order: one runs each block as the REPL does, the other
 * runs it through the reference, written here in Python, in its own
 * namespace. Their stdout, stderr, error type and error line must agree.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, FastCheck as fc } from "effect"
import * as PythonSandbox from "../src/PythonSandbox.js"
import * as Sandbox from "../src/Sandbox.js"
import { recordingHost } from "./pythonTestkit.js"

const REFERENCE = `import ast as _a, io as _io, json as _j, sys as _s, traceback as _tb
def _ref(src):
    out, err = _io.StringIO(), _io.StringIO()
    old = _s.stdout, _s.stderr
    _s.stdout, _s.stderr = out, err
    error = ""
    try:
        tree = _a.parse(src, "<repl>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], _a.Expr):
            last = _a.Expression(tree.body.pop().value)
        exec(compile(tree, "<repl>", "exec"), globals())
        if last is not None:
            v = eval(compile(last, "<repl>", "eval"), globals())
            if v is not None and type(v).__name__ != "_Shown":
                out.write(repr(v) + "\\n")
    except BaseException as e:
        if isinstance(e, SyntaxError):
            line = e.lineno
        else:
            frames = [f.lineno for f in _tb.extract_tb(e.__traceback__) if f.filename == "<repl>"]
            line = frames[-1] if frames else None
        error = f"{type(e).__name__} line {line}"
    finally:
        _s.stdout, _s.stderr = old
    print(_j.dumps([out.getvalue(), err.getvalue(), error]))`

/** The REPL's result in the reference's terms: the error's type and the line of its last `<repl>` frame. */
const observed = (result: Sandbox.ExecResult): ReadonlyArray<string> => {
  let error = ""
  if (result.error !== undefined) {
    const text = result.error.trimEnd()
    const type = /^(\w+)(?::|$)/.exec(text.split("\n").at(-1) ?? "")?.[1]
    const lines = [...text.matchAll(/File "<repl>", line (\d+)/g)].map((m) => m[1])
    error = `${type} line ${lines.at(-1) ?? "None"}`
  }
  return [result.stdout, result.stderr, error]
}

/** Lines blocks are made of: statements, fragments of brackets and strings, comments, errors, warnings. */
const LINES = [
  "x = 1",
  "x",
  "x + 1",
  "print(x)",
  "# a note",
  "",
  "   ",
  "y = [",
  "2,",
  "]",
  "print(",
  ")",
  "'s'",
  '"""',
  't = """',
  "if x:",
  "    x",
  "    y = 2",
  "else:",
  "    pass",
  "for i in range(2):",
  "    i",
  "x = 1; x",
  "x;",
  "a, b = 1, 2",
  "a",
  "1/0",
  "zz",
  "def g():",
  "    return 3",
  "g()",
  "(1)",
  "x = (",
  "3)",
  "x = 1 + \\",
  "(lambda: 4)()",
  "x == 1",
  "x += 1",
  "n: int = 5",
  "'\\d'",
  "import re",
  "print(__doc__)",
  '"doc"; q = 1',
  "q",
  "None",
  "x = 2 if x else 3",
  "f'{x}!'",
  "  x",
  "\tx = 4",
  "@staticmethod",
  "class K: pass",
  "K.__name__",
  "[i for i in range(3)]",
  "del x",
  "x = 1\r",
  "from __future__ import annotations",
  "SHOW_VARS()",
  "peek(3)",
  "x = 'a;b'",
  ");x",
  "x = 1\rx",
  '("doc"); q = 1'
]

/** Blocks at the edges of the split, each run once in this order (the state carries from one to the next). */
const EDGES = [
  "x = 1\ny = 2\n1/0",
  "x = 1\nprint(x)\nx + 1\n",
  // The last top-level line starts with a quote: a statement of its own after an assignment.
  "x = 1\n's'",
  'x = 2\n"""a\nb"""',
  // A lone carriage return ends a line.
  "x = 3\rx",
  // After other statements, a string first in the tail is not the module's docstring.
  'x = 4\n("doc"); q = 1',
  "print(globals().get('__doc__'))",
  '"first"\nx = 5',
  "print(globals().get('__doc__'))",
  // A __future__ import after other statements is a syntax error.
  "x = 6\nfrom __future__ import annotations",
  "from __future__ import annotations\nx: int = 7\nx",
  // A warning is reported once, whichever path compiles the block.
  "import re\nm = re.findall('\\d', '12')\nm",
  "import re\nm = re.findall('\\d', '34')\nf(m,\n1)",
  "x = [\n1,\n2\n]\nx",
  "x = 8; x"
]

const block = fc.array(fc.constantFrom(...LINES), { minLength: 1, maxLength: 6 }).map((lines) => lines.join("\n"))

describe("Python blocks: output and echo match the whole-AST reference", () => {
  it.effect(
    "generated blocks, run in order in two interpreters",
    () =>
      Effect.gen(function* () {
        const sandbox = yield* Sandbox.Sandbox
        const open = () => sandbox.open({ context: { text: "ctx" }, host: recordingHost().host })
        const repl = yield* open()
        const reference = yield* open()
        const defined = yield* reference.exec(REFERENCE)
        assert.isUndefined(defined.error)
        const blocks = fc.sample(block, { numRuns: 400, seed: 20261204 })
        for (const code of [...EDGES, ...blocks]) {
          const got = observed(yield* repl.exec(code))
          const want = yield* reference.exec(`_ref(${JSON.stringify(code)})`)
          assert.isUndefined(want.error, want.error)
          assert.deepStrictEqual(got, JSON.parse(want.stdout), `block ${JSON.stringify(code)}`)
        }
      }).pipe(Effect.scoped, Effect.provide(PythonSandbox.layer({ execTimeout: Duration.seconds(10) }))),
    { timeout: 240_000 }
  )
})
