export declare const CUT_MODULES: ReadonlyArray<string>
export declare const CUT_IF_LOADED: ReadonlyArray<string>
export declare const CUT_MESSAGE: string
export declare function cutNodeNetwork(
  require: (name: string) => unknown,
  syncBuiltinESMExports: () => void,
  handles: ReadonlyArray<unknown>
): void
