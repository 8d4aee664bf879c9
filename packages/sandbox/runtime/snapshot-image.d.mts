// Types of snapshot-image.mjs (plain JavaScript run by the sandbox child; typed for tests).
export type Range = [offset: number, length: number]
export type Read = (target: Uint8Array) => void
export interface Scanned {
  readonly prefix: Uint8Array
  readonly image: Uint8Array
  readonly runs: Array<Range>
}
export interface Head {
  readonly prefixLength: number
  readonly imageLength: number
  readonly runs: Array<Range>
  readonly zeros: Array<Range>
  readonly full: Uint8Array
}
export declare const MAGIC: string
export declare const PAGE: number
export declare const scanImage: (full: Uint8Array) => Scanned
export declare const encode: (scanned: Scanned, zeros?: ReadonlyArray<Range>) => Uint8Array
export declare const readHead: (read: Read) => Head
export declare const restoreInto: (head: Head, target: Uint8Array, read: Read) => void
export declare const dirtyOutsideRuns: (
  runs: ReadonlyArray<Range>,
  target: Uint8Array,
  imageLength: number
) => Array<Range>
export declare const withRestoreHook: <A>(
  head: Head,
  onRestore: (target: Uint8Array) => void,
  load: () => Promise<A>
) => Promise<A>
