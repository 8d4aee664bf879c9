#!/usr/bin/env node
// The `rlm` executable: runs the built CLI (`dist/bin.js`). In the repository it first brings `dist/` up to date
// with the quick build (`scripts/build-js.mjs`) when a source file is newer than its output, so `rlm` works right
// after `pnpm install` and after an edit, at the built CLI's speed. Plain JavaScript: it must run with Node alone.
import { existsSync } from "node:fs"

const dist = new URL("../dist/bin.js", import.meta.url)
const quickBuild = new URL("../../../scripts/build-js.mjs", import.meta.url)

// Only in the repository (its root holds pnpm-workspace.yaml), never in an installed package.
if (existsSync(quickBuild) && existsSync(new URL("../../../pnpm-workspace.yaml", import.meta.url))) {
  const { build } = await import(quickBuild.href)
  try {
    await build()
  } catch (error) {
    console.error(`rlm: could not bring dist/ up to date from the sources (${error?.message ?? error}).`)
    console.error("rlm: run `npx -y pnpm@10.20.0 install` (or `npx -y pnpm@10.20.0 build`) in the repository.")
    process.exit(1)
  }
}

if (!existsSync(dist)) {
  console.error(`rlm: the CLI is not built: ${dist.pathname} is missing.`)
  console.error(
    "rlm: in the repository, run `npx -y pnpm@10.20.0 install` (its prepare step builds it) or `npx -y pnpm@10.20.0 build`."
  )
  process.exit(1)
}

await import(dist.href)
