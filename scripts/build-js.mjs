#!/usr/bin/env node
/**
 * The quick build: every `packages/<name>/src/**.ts` whose `dist/**.js` is
 * missing or older is transpiled to it, one file at a time, with
 * TypeScript's `transpileModule` (no type check, no declarations). It runs
 * as the root `prepare` script, so `dist/` exists (and the `rlm` bin works)
 * right after `pnpm install`, in a second or two instead of a full `tsc -b`;
 * the CLI's launcher (`packages/cli/bin/rlm.mjs`) runs it again when a source
 * file changed. `tsc -b` (`pnpm build`, `pnpm typecheck`) still does the real
 * build, type check and declarations; it overwrites these files with the
 * same code.
 *
 * The sources use `verbatimModuleSyntax`, so a file transpiled alone is the
 * file `tsc` emits.
 *
 * Plain JavaScript: it must run with nothing but Node.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs"
import { dirname, join, relative } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")

const mtime = (path) => {
  try {
    return statSync(path).mtimeMs
  } catch {
    return -1
  }
}

const walk = (dir) =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return walk(path)
    return entry.isFile() && entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts") ? [path] : []
  })

/** Every source file whose output is missing or older, as `{ src, out }`. */
export const stale = () => {
  const packages = join(root, "packages")
  return readdirSync(packages, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && mtime(join(packages, entry.name, "src")) !== -1)
    .flatMap((entry) => {
      const src = join(packages, entry.name, "src")
      const dist = join(packages, entry.name, "dist")
      return walk(src).map((file) => ({ src: file, out: join(dist, relative(src, file)).replace(/\.ts$/, ".js") }))
    })
    .filter(({ out, src }) => mtime(out) < mtime(src))
}

/** Transpile the stale files; returns how many were written. */
export const build = async () => {
  const files = stale()
  if (files.length === 0) return 0
  const { default: ts } = await import("typescript")
  const compilerOptions = {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    verbatimModuleSyntax: true,
    sourceMap: false
  }
  for (const { out, src } of files) {
    const { outputText } = ts.transpileModule(readFileSync(src, "utf8"), { compilerOptions, fileName: src })
    mkdirSync(dirname(out), { recursive: true })
    // Written aside and renamed: a CLI starting meanwhile (another `rlm`) never imports half a file.
    const aside = `${out}.${process.pid}.tmp`
    writeFileSync(aside, outputText)
    renameSync(aside, out)
  }
  return files.length
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const start = performance.now()
  try {
    const count = await build()
    console.error(`build-js: ${count} file(s) transpiled to dist/ in ${Math.round(performance.now() - start)} ms`)
  } catch (error) {
    // An install without dev dependencies (`pnpm install --prod`) has no TypeScript: do not fail the install.
    if (error?.code !== "ERR_MODULE_NOT_FOUND") throw error
    console.error(`build-js: skipped, TypeScript is not installed (${error.message}); run \`pnpm build\` later.`)
  }
}
