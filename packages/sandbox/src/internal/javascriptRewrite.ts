/**
 * Notebook semantics for QuickJS global code: top-level `let`/`const` become
 * `var` and top-level `class X {}` becomes `var X = class X {};`, so that
 * re-running a cell that declares `const x` does not fail with "redeclaration
 * of 'x'", and every user variable lives on the global object (where
 * `listVars`/`getVar` find it).
 *
 * A small scanner (strings, template literals, comments, regex literals,
 * bracket depth) finds the declarations at depth 0; when it is unsure the
 * caller retries with the original code (a SyntaxError means nothing ran).
 */

const KEYWORDS_BEFORE_EXPRESSION = new Set([
  "return",
  "typeof",
  "instanceof",
  "in",
  "of",
  "new",
  "delete",
  "void",
  "throw",
  "case",
  "do",
  "else",
  "yield",
  "await"
])

const isIdentStart = (c: string) => /[A-Za-z_$\u0080-\uffff]/.test(c)
const isIdentPart = (c: string) => /[\w$\u0080-\uffff]/.test(c)

interface Edit {
  readonly at: number
  readonly remove: number
  readonly insert: string
}

/** @internal */
export const rewriteTopLevel = (code: string): string => {
  const edits: Array<Edit> = []
  // Stack of open brackets; "`" marks a template literal's `${` expression.
  const stack: Array<string> = []
  // Pending class declarations: the depth at which their body opens.
  const pendingClass: Array<{ bodyOpened: boolean; depth: number }> = []
  let prev = "" // previous significant token
  let prevIsWordEnding = false // previous token ends an expression (ident, number, ), ], })
  let newlineSincePrev = true
  let i = 0
  const n = code.length

  const scanTemplate = (): boolean => {
    // At code[i] just after "`" or after the "}" closing a `${`; returns true when
    // a `${` opened (push), false when the template ended.
    while (i < n) {
      const c = code.charAt(i)
      if (c === "\\") {
        i += 2
        continue
      }
      if (c === "`") {
        i++
        return false
      }
      if (c === "$" && code.charAt(i + 1) === "{") {
        i += 2
        stack.push("`")
        return true
      }
      i++
    }
    return false
  }

  while (i < n) {
    const c = code.charAt(i)
    if (c === "\n") {
      newlineSincePrev = true
      i++
      continue
    }
    if (c === " " || c === "\t" || c === "\r") {
      i++
      continue
    }
    if (c === "/" && code.charAt(i + 1) === "/") {
      while (i < n && code[i] !== "\n") i++
      continue
    }
    if (c === "/" && code.charAt(i + 1) === "*") {
      const end = code.indexOf("*/", i + 2)
      const comment = code.slice(i, end === -1 ? n : end)
      if (comment.includes("\n")) newlineSincePrev = true
      i = end === -1 ? n : end + 2
      continue
    }
    const token = (t: string, endsExpression: boolean) => {
      prev = t
      prevIsWordEnding = endsExpression
      newlineSincePrev = false
    }
    if (c === '"' || c === "'") {
      i++
      while (i < n && code[i] !== c && code[i] !== "\n") i += code[i] === "\\" ? 2 : 1
      i++
      token("str", true)
      continue
    }
    if (c === "`") {
      i++
      scanTemplate()
      token("tpl", true)
      continue
    }
    if (c === "/") {
      const regexAllowed = !prevIsWordEnding
      if (regexAllowed) {
        i++
        let inClass = false
        while (i < n && code[i] !== "\n") {
          const d = code.charAt(i)
          if (d === "\\") {
            i += 2
            continue
          }
          if (d === "[") inClass = true
          else if (d === "]") inClass = false
          else if (d === "/" && !inClass) break
          i++
        }
        i++
        while (i < n && isIdentPart(code.charAt(i))) i++
        token("re", true)
        continue
      }
      i++
      token("/", false)
      continue
    }
    if (c === "(" || c === "[" || c === "{") {
      stack.push(c)
      const pc = pendingClass[pendingClass.length - 1]
      if (c === "{" && pc && !pc.bodyOpened && stack.length === pc.depth + 1) pc.bodyOpened = true
      i++
      token(c, false)
      continue
    }
    if (c === ")" || c === "]" || c === "}") {
      const open = stack.pop()
      i++
      if (open === "`" && c === "}") {
        // back inside the template literal
        if (!scanTemplate()) token("tpl", true)
        continue
      }
      const pc = pendingClass[pendingClass.length - 1]
      if (c === "}" && pc && pc.bodyOpened && stack.length === pc.depth) {
        pendingClass.pop()
        edits.push({ at: i, remove: 0, insert: ";" })
        token(";", false)
        continue
      }
      token(c, true)
      continue
    }
    if (isIdentStart(c)) {
      const start = i
      while (i < n && isIdentPart(code.charAt(i))) i++
      const word = code.slice(start, i)
      const atTop = stack.length === 0
      const statementStart =
        prev === "" ||
        prev === ";" ||
        prev === "}" ||
        prev === "{" ||
        (newlineSincePrev && prevIsWordEnding && prev !== ".")
      if (atTop && statementStart && (word === "let" || word === "const")) {
        const next = code.slice(i).match(/^\s*([\w$[{\u0080-\uffff])/)
        if (next) {
          edits.push({ at: start, remove: word.length, insert: word === "let" ? "var" : "var  " })
          token("var", false)
          continue
        }
      }
      if (atTop && statementStart && word === "class") {
        const m = code.slice(i).match(/^\s+([A-Za-z_$][\w$]*)/)
        if (m) {
          edits.push({ at: start, remove: 0, insert: `var ${m[1]} = ` })
          pendingClass.push({ bodyOpened: false, depth: 0 })
          token("class", false)
          continue
        }
      }
      const endsExpression = !KEYWORDS_BEFORE_EXPRESSION.has(word)
      token(prev === "." ? "prop" : word, endsExpression)
      continue
    }
    if (/[0-9]/.test(c)) {
      while (i < n && /[\w.]/.test(code.charAt(i))) i++
      token("num", true)
      continue
    }
    // punctuators
    if (c === ".") {
      i++
      token(".", false)
      continue
    }
    i++
    token(c === ";" ? ";" : c, false)
  }
  if (edits.length === 0 || stack.length !== 0 || pendingClass.length !== 0) return code
  let out = ""
  let last = 0
  for (const edit of edits.sort((a, b) => a.at - b.at)) {
    out += code.slice(last, edit.at) + edit.insert
    last = edit.at + edit.remove
  }
  return out + code.slice(last)
}
