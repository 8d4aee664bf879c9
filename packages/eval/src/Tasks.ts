/**
 * The task families by kind, and the generation of one task.
 *
 * @since 0.1.0
 */

import type { EvalTask, Family, GenerateOptions, Kind } from "./Task.js"
import * as CodeQa from "./tasks/CodeQa.js"
import * as Multidoc from "./tasks/Multidoc.js"
import * as Oolong from "./tasks/Oolong.js"
import * as Pairs from "./tasks/Pairs.js"
import * as Sniah from "./tasks/Sniah.js"

/**
 * Every family, by kind.
 *
 * @since 0.1.0
 * @category Constants
 */
export const families: Readonly<Record<Kind, Family>> = {
  sniah: Sniah.family,
  oolong: Oolong.family,
  pairs: Pairs.family,
  multidoc: Multidoc.family,
  codeqa: CodeQa.family
}

/**
 * Generate one task.
 *
 * @since 0.1.0
 * @category Generators
 */
export const generate = (kind: Kind, options: GenerateOptions): EvalTask => families[kind].generate(options)

/**
 * Score an answer with its task's scorer.
 *
 * @since 0.1.0
 * @category Scorers
 */
export const score = (task: EvalTask, answer: string): number => families[task.kind].score(task, answer)
