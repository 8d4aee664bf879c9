// The on-disk form of the Python sandbox's start-up snapshot (plain
// JavaScript, not compiled by tsc; loaded by python-child.mjs and by tests).
//
// Pyodide's own snapshot is a small prefix (magic, build id, JSON metadata)
// followed by a full image of the WebAssembly memory, about half of which is
// zero pages. Touching fresh memory is the dominant cost of a restore (every
// first write to a page is a page fault), so the image is stored sparse and
// restored by reading its non-zero pages straight into the interpreter's
// memory: no intermediate buffer, and zero pages are never touched.
//
// Layout (all integers u32 little-endian):
//   0   "RLMSNAP1"
//   8   prefixLength   bytes of Pyodide's prefix (its header and metadata)
//   12  imageLength    bytes of the memory image that follows the prefix
//   16  runCount       non-zero page runs
//   20  zeroCount      ranges that must be cleared before the runs are read
//   24  runCount  x (offset, length)   image offsets, ascending, disjoint
//       zeroCount x (offset, length)
//       prefixLength bytes
//       the bytes of every run, in order
//
// The zero ranges are pages that are zero in the image but were found written
// in a freshly instantiated interpreter when the snapshot was built (the
// WebAssembly data segments, the runtime's start-up writes). They are normally
// empty: pages outside every run are otherwise left as the instance has them,
// which is zero.

export const MAGIC = "RLMSNAP1"
export const PAGE = 4096
const HEADER = 24

/** Split Pyodide's snapshot `full` into its prefix and the runs of non-zero pages of its image. */
export const scanImage = (full) => {
  if (!(full instanceof Uint8Array) || full.length < 16) throw new Error("not a Pyodide snapshot")
  const prefixLength = new DataView(full.buffer, full.byteOffset, full.byteLength).getUint32(4, true)
  if (prefixLength < 16 || prefixLength > full.length) throw new Error("not a Pyodide snapshot")
  const image = full.subarray(prefixLength)
  const words =
    image.byteOffset % 4 === 0 ? new Uint32Array(image.buffer, image.byteOffset, image.length >>> 2) : undefined
  const runs = []
  for (let page = 0; page < image.length; page += PAGE) {
    const end = Math.min(page + PAGE, image.length)
    if (isZero(image, words, page, end)) continue
    const last = runs[runs.length - 1]
    if (last !== undefined && last[0] + last[1] === page) last[1] = end - last[0]
    else runs.push([page, end - page])
  }
  return { prefix: full.subarray(0, prefixLength), image, runs }
}

const isZero = (bytes, words, start, end) => {
  if (words !== undefined && start % 4 === 0 && end % 4 === 0) {
    for (let i = start >>> 2; i < end >>> 2; i++) if (words[i] !== 0) return false
    return true
  }
  for (let i = start; i < end; i++) if (bytes[i] !== 0) return false
  return true
}

/** Encode a scanned snapshot (see `scanImage`) with the given zero ranges. */
export const encode = ({ prefix, image, runs }, zeros = []) => {
  let data = 0
  for (const [, length] of runs) data += length
  const tables = (runs.length + zeros.length) * 8
  const out = new Uint8Array(HEADER + tables + prefix.length + data)
  const view = new DataView(out.buffer)
  for (let i = 0; i < MAGIC.length; i++) out[i] = MAGIC.charCodeAt(i)
  view.setUint32(8, prefix.length, true)
  view.setUint32(12, image.length, true)
  view.setUint32(16, runs.length, true)
  view.setUint32(20, zeros.length, true)
  let at = HEADER
  for (const [offset, length] of [...runs, ...zeros]) {
    view.setUint32(at, offset, true)
    view.setUint32(at + 4, length, true)
    at += 8
  }
  out.set(prefix, at)
  at += prefix.length
  for (const [offset, length] of runs) {
    out.set(image.subarray(offset, offset + length), at)
    at += length
  }
  return out
}

/**
 * Read the header, tables and prefix of an encoded snapshot from `read`
 * (a function filling the Uint8Array it is given, sequentially). The run
 * bytes are left unread: `restoreInto` reads them.
 */
export const readHead = (read) => {
  const head = new Uint8Array(HEADER)
  read(head)
  for (let i = 0; i < MAGIC.length; i++) {
    if (head[i] !== MAGIC.charCodeAt(i)) throw new Error("not an rlm-runtime snapshot file")
  }
  const view = new DataView(head.buffer)
  const prefixLength = view.getUint32(8, true)
  const imageLength = view.getUint32(12, true)
  const runCount = view.getUint32(16, true)
  const zeroCount = view.getUint32(20, true)
  const maxRanges = Math.ceil(imageLength / PAGE)
  if (prefixLength < 16 || prefixLength > 1 << 20 || runCount > maxRanges || zeroCount > maxRanges) {
    throw new Error("corrupt snapshot header")
  }
  const table = new Uint8Array((runCount + zeroCount) * 8)
  read(table)
  const tv = new DataView(table.buffer)
  const ranges = (first, count) => {
    const out = []
    let end = 0
    for (let i = 0; i < count; i++) {
      const offset = tv.getUint32((first + i) * 8, true)
      const length = tv.getUint32((first + i) * 8 + 4, true)
      if (offset < end || length === 0 || offset + length > imageLength) throw new Error("corrupt snapshot table")
      end = offset + length
      out.push([offset, length])
    }
    return out
  }
  const runs = ranges(0, runCount)
  const zeros = ranges(runCount, zeroCount)
  // Pyodide is handed a buffer of the full snapshot size holding only the
  // prefix: fresh and untouched, so its image part costs no memory.
  const full = new Uint8Array(prefixLength + imageLength)
  read(full.subarray(0, prefixLength))
  return { prefixLength, imageLength, runs, zeros, full }
}

/** Write the image into `target` (which the instance has written only where `zeros` says). */
export const restoreInto = (head, target, read) => {
  if (target.length < head.imageLength) throw new Error("the interpreter memory is smaller than the snapshot")
  for (const [offset, length] of head.zeros) target.fill(0, offset, offset + length)
  for (const [offset, length] of head.runs) read(target.subarray(offset, offset + length))
}

/**
 * Pages of `target` outside every run that are not zero: the zero ranges a
 * restore must clear. Reads (and so touches) those pages: for building only.
 */
export const dirtyOutsideRuns = (runs, target, imageLength) => {
  const words =
    target.byteOffset % 4 === 0 ? new Uint32Array(target.buffer, target.byteOffset, imageLength >>> 2) : undefined
  const zeros = []
  let next = 0
  const check = (start, end) => {
    for (let page = start; page < end; page += PAGE) {
      const stop = Math.min(page + PAGE, end)
      if (isZero(target, words, page, stop)) continue
      const last = zeros[zeros.length - 1]
      if (last !== undefined && last[0] + last[1] === page) last[1] = stop - last[0]
      else zeros.push([page, stop - page])
    }
  }
  for (const [offset, length] of runs) {
    check(next, offset)
    next = offset + length
  }
  check(next, imageLength)
  return zeros
}

/**
 * Run `load` (which calls Pyodide's `loadPyodide` with `_loadSnapshot: head.full`)
 * with Pyodide's one copy of the image into its memory (`HEAP8.set(image)`)
 * replaced by `onRestore(target)`, where `target` is the interpreter memory the
 * image belongs in. Fails if Pyodide never made that copy (another Pyodide
 * build restoring some other way), so a caller never runs an interpreter whose
 * memory was not restored.
 */
export const withRestoreHook = async (head, onRestore, load) => {
  const proto = Int8Array.prototype
  const inherited = Object.getPrototypeOf(proto).set
  let applied = false
  Object.defineProperty(proto, "set", {
    configurable: true,
    writable: true,
    value: function set(source, offset = 0) {
      if (source?.buffer !== head.full.buffer) return inherited.call(this, source, offset)
      delete proto.set
      applied = true
      if (source.byteOffset !== head.prefixLength || source.length !== head.imageLength) {
        throw new Error("unexpected snapshot layout")
      }
      onRestore(new Uint8Array(this.buffer, this.byteOffset + offset, this.length - offset))
    }
  })
  try {
    const result = await load()
    if (!applied) throw new Error("this Pyodide build did not restore the snapshot image")
    return result
  } finally {
    delete proto.set
  }
}
