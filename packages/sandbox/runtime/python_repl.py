# The REPL that model code runs in (built once per interpreter by
# python-child.mjs as the module `_rlm_repl`; in the start-up snapshot when
# there is one, so a restored interpreter has it ready). It never holds a
# JavaScript object: the host calls go through a character device (see
# _bridge_call), not a JavaScript function. The contract
# (docs/protocol.md): P/context, peek, tail, lenP, slice, find, chunk,
# FINAL, FINAL_VAR, SHOW_VARS, and a stub per host tool of the session
# (llm_query(_batched), rlm_query(_batched), budget, user tools: install_tools).
#
# Offsets and lengths are Python string indices (code points).
import ast as _ast
import builtins as _builtins
import json as _json
import re as _re
import signal as _signal
import sys as _sys
import traceback as _traceback
import types as _types
import warnings as _warnings

_dumps = _json.dumps
_loads = _json.loads
_parse = _ast.parse
_Expr = _ast.Expr
_Expression = _ast.Expression
_Constant = _ast.Constant
_Module = _ast.Module
_compile = compile
_Exception = Exception
_exec = exec
_eval = eval
_repr = repr
_str = str
_len = len
_int = int
_join = "".join
_isinstance = isinstance
_type = type
_format_exception = _traceback.format_exception
_format_exception_only = _traceback.format_exception_only
_ModuleType = _types.ModuleType
_BaseException = BaseException

RESERVED = (
    "P", "context", "peek", "tail", "lenP", "slice", "find", "chunk",
    "llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched",
    "FINAL", "FINAL_VAR", "SHOW_VARS",
)

_state = {"P": "", "context": "", "final": None, "slots": [], "max_answer": -1, "max_prompt": -1}
_ns = {"__name__": "__main__", "__builtins__": _builtins}


class _Capture:
    """A text stream keeping only the first `limit` characters, counting the rest."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, limit):
        self._parts = []
        self._kept = 0
        self._limit = limit
        self.total = 0

    def write(self, s):
        if not _isinstance(s, _str):
            raise TypeError("write() argument must be str, not " + _type(s).__name__)
        n = _len(s)
        self.total += n
        room = self._limit - self._kept
        if room > 0:
            part = s if n <= room else s[:room]
            self._parts.append(part)
            self._kept += _len(part)
        return n

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def readable(self):
        return False

    def writable(self):
        return True

    def getvalue(self):
        return "".join(self._parts)


# --- host tools: one stub per tool of the session (install_tools), each a
# real function with its parameters and docstring, all calling _call_tool.

_list = list
_tuple = tuple
_dict = dict
_TypeError = TypeError
_ValueError = ValueError
# The arguments are written by hand where they are strings (the common case:
# a prompt), with the C string encoder; other values go through an encoder
# refusing NaN (not JSON). A reply that is one JSON string is read with the C
# string scanner. (The full json encoder and decoder cost tens of µs a call here.)
_encode_json = _json.JSONEncoder(allow_nan=False).encode
_encode_str = _json.encoder.encode_basestring_ascii
_scanstring = _json.decoder.scanstring
_RuntimeError = RuntimeError


def _string_arg(tool, param, value, cap):
    # Refused before it crosses to the host (which checks again): `maxPromptChars`.
    value = _str(value)
    if cap >= 0 and _len(value) > cap:
        raise _ValueError(f"{tool}: the {param} has {_len(value)} characters; the limit is {cap}")
    return value


def _strings_arg(tool, param, value, cap):
    if _isinstance(value, (_str, bytes)):
        raise _TypeError(f"{tool}: expected a list of {param}, got a single string")
    out = [_str(v) for v in value]
    if cap >= 0:
        for i, v in enumerate(out):
            if _len(v) > cap:
                raise _ValueError(f"{tool}: item {i} of {param} has {_len(v)} characters; the limit is {cap}")
    return out


def _call_tool(tool, kinds, values):
    cap = _state["max_prompt"]
    parts = []
    for (param, kind, optional), value in zip(kinds, values):
        if optional and value is None:
            continue
        if kind == "string":
            text = _encode_str(_string_arg(tool, param, value, cap))
        elif kind == "strings":
            text = "[" + ",".join([_encode_str(v) for v in _strings_arg(tool, param, value, cap)]) + "]"
        else:
            try:
                text = _encode_json(value)
            except (_TypeError, _ValueError) as e:
                raise _TypeError(
                    f"{tool}: the arguments must be JSON values (str, int, float, bool, None, list, dict): {e}"
                ) from None
        parts.append(_encode_str(param) + ":" + text)
    reply = _str(_bridge_call(tool, "{" + ",".join(parts) + "}"))
    parts = None
    flag = reply[:1]
    if flag == "1":
        if reply[1:2] == '"':
            value, end = _scanstring(reply, 2)
            if end == _len(reply):
                return value
        return _loads(reply[1:])
    raise _RuntimeError(reply[1:])


def install_tools(specs):
    """Called once from JavaScript (before the context) with the session's tools as JSON."""
    import keyword

    made = {}
    for spec in _loads(_str(specs)):
        name = _str(spec["name"])
        params = [(_str(p["name"]), _str(p["kind"]), p["optional"] is True) for p in spec["parameters"]]
        for n in [name] + [p[0] for p in params]:
            if not n.isidentifier() or keyword.iskeyword(n) or n.startswith("_"):
                raise _ValueError(f"not a tool or parameter name: {n[:100]!r}")
        if name in _HELPERS or name in made:
            raise _ValueError(f"the tool name {name!r} is taken")
        required = [p for p in params if not p[2]]
        optional = [p for p in params if p[2]]
        ordered = required + optional
        signature = ", ".join([p[0] for p in required] + [p[0] + "=None" for p in optional])
        kinds = _repr(_tuple((p[0], p[1], p[2]) for p in ordered))
        values = "".join(p[0] + ", " for p in ordered)
        source = f"def {name}({signature}):\n    return _call_tool({name!r}, {kinds}, ({values}))\n"
        scope = {}
        _exec(_compile(source, "<tool>", "exec"), _GLOBALS, scope)
        f = scope[name]
        f.__doc__ = _str(spec.get("description", ""))
        f.__module__ = "__main__"
        made[name] = f
        _CODES.append((f, f.__code__, f.__defaults__, f.__kwdefaults__))
    _HELPERS.update(made)
    reserved = _tuple(_dict.fromkeys(RESERVED + _tuple(made)))
    _SNAPSHOT["RESERVED"] = reserved
    _GLOBALS["RESERVED"] = reserved
    _restore()


def _answer(value):
    # Refused in the interpreter (the host checks again): `maxAnswerChars`.
    cap = _state["max_answer"]
    if cap >= 0 and _len(value) > cap:
        raise ValueError(f"the final answer has {_len(value)} characters; the limit is {cap}")
    return value


# --- helpers --------------------------------------------------------------


def peek(n=2000):
    """The first n characters of P."""
    return _state["P"][: max(0, int(n))]


def tail(n=2000):
    """The last n characters of P."""
    n = max(0, int(n))
    return _state["P"][-n:] if n > 0 else ""


def lenP():
    """The length of P in characters."""
    return _len(_state["P"])


def slice(start, end=None):  # noqa: A001 - shadows the builtin on purpose
    """P[start:end]."""
    return _state["P"][start:end]


def find(needle, start=0):
    """All offsets i >= start where needle occurs in P (overlapping hits included)."""
    needle = _str(needle)
    if needle == "":
        return []
    text = _state["P"]
    out = []
    i = text.find(needle, max(0, int(start)))
    while i != -1:
        out.append(i)
        i = text.find(needle, i + 1)
    return out


def chunk(size, overlap=0):
    """P cut in order into pieces of `size` characters, each overlapping the previous by `overlap`."""
    size = int(size)
    overlap = int(overlap)
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    if overlap < 0 or overlap >= size:
        raise ValueError("chunk overlap must satisfy 0 <= overlap < size")
    text = _state["P"]
    step = size - overlap
    return [text[i : i + size] for i in range(0, _len(text), step)]


def FINAL(value):
    """Record the final answer."""
    _state["final"] = {"source": "FINAL", "value": _answer(_str(value))}


def FINAL_VAR(name):
    """Record the final answer as the value of the variable called `name`."""
    name = _str(name).strip().strip("'\"")
    if name not in _ns or name in RESERVED and name not in ("P", "context"):
        raise NameError(f"FINAL_VAR: variable '{name}' does not exist")
    _state["final"] = {"source": "FINAL_VAR", "name": name, "value": _answer(_str(_ns[name]))}


class _Shown(dict):
    pass


def _user_vars():
    out = []
    for name, value in list(_ns.items()):
        if name in RESERVED or name.startswith("_") or _isinstance(value, _ModuleType):
            continue
        out.append((name, _type(value).__name__))
    return out


def SHOW_VARS():
    """Print and return the user-defined variables with their types."""
    pairs = _user_vars()
    if not pairs:
        print("No user variables.")
    else:
        for name, type_name in pairs:
            print(f"{name}: {type_name}")
    return _Shown(pairs)


_HELPERS = {
    "peek": peek, "tail": tail, "lenP": lenP, "slice": slice, "find": find, "chunk": chunk,
    "FINAL": FINAL, "FINAL_VAR": FINAL_VAR, "SHOW_VARS": SHOW_VARS,
}
_BUILTINS = dict(_builtins.__dict__)
_SYS = {name: getattr(_sys, name) for name in ("stdout", "stderr", "stdin", "setrecursionlimit", "modules")}
_MAX_RECURSION = 1000


import time as _time

_orig_sleep = _time.sleep
_POLL = range(4096)
_monotonic = _time.monotonic


def _sleep(seconds):
    # Pyodide's sleep blocks the thread in one piece, out of reach of the
    # interrupt buffer; sleep in short slices so a time limit can stop it.
    # The interpreter polls for interrupts once per 50 of its checks, which a
    # loop of slices alone would reach only every second or two: the short
    # spin after each slice (~0.1 ms) makes it poll, often enough for the
    # child to read its clock (python-child.mjs, signalBuffer).
    end = _monotonic() + float(seconds)
    while True:
        left = end - _monotonic()
        if left <= 0:
            return
        _orig_sleep(min(left, 0.05))
        for _ in _POLL:
            pass


import os as _os
import posix as _posix


def _no_system(command):
    # Emscripten's system() would ask Node for a child process; the permission
    # model refuses, which kills the interpreter. Fail politely instead.
    raise OSError(38, "os.system is not available in the sandbox")


def _setrecursionlimit(n):
    # A deeper Python stack would overflow the WebAssembly stack and kill the interpreter.
    _SYS["setrecursionlimit"](min(int(n), _MAX_RECURSION))


def _restore():
    # This module's own globals and the helpers' code, in case model code
    # reached them through a helper's __globals__ (it only hurts its own session).
    # Each dict is updated first: then it holds every name of its snapshot,
    # and it has more names exactly when its size is larger. Only then are
    # the extra names looked for (a set difference, in C), which is the
    # costly part, so a block that added none pays for none.
    g = _GLOBALS
    if g is not None:
        g.update(_SNAPSHOT)
        if _len(g) != _len(_SNAPSHOT):
            for key in g.keys() - _SNAPSHOT.keys():
                del g[key]
        for f, code, defaults, kwdefaults in _CODES:
            # (Read, compared, and only written back when replaced: a write costs more.)
            if f.__code__ is not code:
                f.__code__ = code
            if f.__defaults__ is not defaults:
                f.__defaults__ = defaults
            if f.__kwdefaults__ is not kwdefaults:
                f.__kwdefaults__ = kwdefaults
    _ns["__builtins__"] = _builtins
    _ns["P"] = _state["P"]
    _ns["context"] = _state["context"]
    _ns.update(_HELPERS)
    d = _builtins.__dict__
    d.update(_BUILTINS)
    if _len(d) != _len(_BUILTINS):
        for key in d.keys() - _BUILTINS.keys():
            del d[key]
    _sys.stdout = _SYS["stdout"]
    _sys.stderr = _SYS["stderr"]
    _sys.setrecursionlimit = _setrecursionlimit
    _time.sleep = _sleep
    _os.system = _no_system
    _posix.system = _no_system
    meta = _sys.meta_path
    if _type(meta) is not list:
        meta = _sys.meta_path = []
    if not meta or meta[0] is not _Blocker:
        while _Blocker in meta:
            meta.remove(_Blocker)
        meta.insert(0, _Blocker)


def ascii_slot(n):
    """A fresh ASCII str of n characters and the address of its character data.

    Used once, at context load: JavaScript reads the context bytes straight
    into the new string before anything else can see it, and keeps it only if
    they are pure ASCII (otherwise drop_slot forgets it unread).
    """
    s = "\0" * n
    _state["slots"].append(s)
    return id(s) + (_sys.getsizeof(s) - n - 1)


def drop_slot():
    """Forget the last slot unread: its bytes were not ASCII."""
    _state["slots"].pop()


def load_context(text, docs):
    """Called once from JavaScript. `text` and `docs` are either the Uint8Arrays
    (UTF-8, SharedArrayBuffer-backed) or None when filled through ascii_slot."""
    slots = _state.pop("slots", [])
    _state["slots"] = []
    try:
        if text is None:
            _state["P"] = slots.pop(0)
        else:
            _state["P"] = text.to_bytes().decode("utf-8")
        if docs is None:
            _state["context"] = _state["P"]
        else:
            _state["context"] = [slots.pop(0) if d is None else d.to_bytes().decode("utf-8") for d in docs]
    finally:
        # The arguments are JsProxies of Uint8Arrays: a traceback (a
        # MemoryError) would keep them reachable through this frame.
        text = docs = None
    _restore()


def _format_error(e):
    if _isinstance(e, SyntaxError):
        return "".join(_format_exception_only(_type(e), e))
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<repl>":
        tb = tb.tb_next
    return "".join(_format_exception(_type(e), e, tb))


_DEFAULT_INT = _signal.default_int_handler
_SIG_IGN = _signal.SIG_IGN
_SIGINT = _signal.SIGINT
_set_signal = _signal.signal


def _uninterruptible():
    try:
        _set_signal(_SIGINT, _SIG_IGN)
    except _BaseException:  # noqa: BLE001 - an interrupt landing right here
        _set_signal(_SIGINT, _SIG_IGN)


# A line that can begin the block's last top-level statement: it starts in
# column 0 with neither a comment, a closing bracket nor a quote.
_LAST_START = _re.compile(r"[^\s#)\]}'\"]").match
# While the split is tried, a warning is an error: the whole-AST path then reports it, once.
_LOUD = ("error", None, Warning, None, 0)
# `name = ...` or `a, b = ...`: an assignment, never an expression to echo.
_ASSIGNS = _re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[ \t]*,[ \t]*[A-Za-z_][A-Za-z0-9_]*)*[ \t]*=(?!=)").match


def _compiled(code):
    """The block as code objects: the statements to exec in order, and the
    trailing expression (if the last top-level statement is one) to eval and
    echo.

    Parsing the whole block to an AST, only to find that last statement,
    costs about as much as compiling it. So the lines before the last
    top-level line are compiled straight from source, and only that line (to
    the end) is parsed. The split is taken only when both halves compile on
    their own and without a warning: then the boundary is a real one between
    statements (a line inside a string or brackets leaves one half
    unfinished). A block the split does not fit (a syntax error or warning,
    `__future__`, a last line that starts inside a string) takes the
    whole-AST path, which reports its errors and warnings once. Lines keep
    their numbers: the tail is compiled after as many empty lines as the
    head has.
    """
    # (A lone carriage return is a newline to Python, not to the split.)
    if "__future__" not in code and "\r" not in code:
        lines = code.split("\n")
        i = _len(lines) - 1
        quoted = False
        while i >= 0 and _LAST_START(lines[i]) is None:
            # A line in column 0 that starts with a quote may be a statement of its own.
            quoted = quoted or lines[i][:1] in ("'", '"')
            i -= 1
        if i >= 0:
            split = _split(lines, i, quoted)
            if split is not None:
                return split
    return _tree_parts(_parse(code, "<repl>", "exec"))


def _tree_parts(tree):
    """A parsed block (or tail) as code objects: its statements, and its trailing expression to echo."""
    body = tree.body
    last = None
    if body and _isinstance(body[-1], _Expr):
        last = _compile(_Expression(body.pop().value), "<repl>", "eval")
    return ([_compile(tree, "<repl>", "exec")] if body else []), last


def _split(lines, i, quoted):
    """_compiled's split at line i, or None where it does not fit."""
    filters = None
    try:
        filters = _warnings.filters
        filters.insert(0, _LOUD)
        _warnings._filters_mutated()
        head = [_compile("\n".join(lines[:i]), "<repl>", "exec")] if i > 0 else []
        tail = "\n" * i + "\n".join(lines[i:])
        # One statement, an assignment: nothing to parse.
        if not quoted and ";" not in tail and _ASSIGNS(lines[i]) is not None:
            return head + [_compile(tail, "<repl>", "exec")], None
        tree = _parse(tail, "<repl>", "exec")
        body = tree.body
        # (After a head, a string first in the tail is no docstring: the whole-AST path keeps it so.)
        if head and body and _isinstance(body[0], _Expr) and _isinstance(body[0].value, _Constant):
            return None
        parts, last = _tree_parts(tree)
        return head + parts, last
    except _Exception:
        return None
    finally:
        try:
            if filters and filters[0] is _LOUD:
                del filters[0]
            _warnings._filters_mutated()
        except _Exception:
            pass


def exec_block(code, limit, max_answer=-1, max_prompt=-1):
    # The caps of this session (-1: none), kept for the helpers to check.
    _state["max_answer"] = int(max_answer)
    _state["max_prompt"] = int(max_prompt)
    out = _Capture(int(limit))
    err = _Capture(int(limit))
    _state["final"] = None
    error = None
    _sys.stdout = out
    _sys.stderr = err
    try:
        # Each block starts interruptible (the time limit), whatever an earlier
        # block did with SIGINT; the REPL's own work after it is not (below).
        _set_signal(_SIGINT, _DEFAULT_INT)
        body, last = _compiled(_str(code))
        for part in body:
            _exec(part, _ns)
        if last is not None:
            value = _eval(last, _ns)
            if value is not None and not _isinstance(value, _Shown):
                out.write(_repr(value) + "\n")
    except _BaseException as e:  # noqa: BLE001 - everything model code raises is output
        _uninterruptible()
        try:
            error = _format_error(e)
        except _BaseException:  # noqa: BLE001
            error = _type(e).__name__ + ": " + _str(e)
        e = None
    finally:
        # The interpreter keeps re-sending SIGINT while a timed-out request goes
        # on: once model code is done, one landing in the REPL's own epilogue
        # would turn its bookkeeping into a KeyboardInterrupt.
        _uninterruptible()
        _sys.stdout = _SYS["stdout"]
        _sys.stderr = _SYS["stderr"]
        _restore()
    # Model code could reach the capture objects (sys.stdout during the block)
    # and the state: cut again here with this call's own arguments, so that a
    # raised limit or a bypassed FINAL check never builds a huge message. (The
    # host cuts and checks once more, whatever arrives.)
    lim = int(limit)
    cap = int(max_answer)
    result = {
        "stdout": _captured(out, lim),
        "stderr": _captured(err, lim),
        "stdoutTotal": _written(out),
        "stderrTotal": _written(err),
    }
    final = _state["final"]
    _state["final"] = None
    if final is not None:
        value = final.get("value") if _isinstance(final, dict) else None
        if cap >= 0 and _isinstance(value, _str) and _len(value) > cap:
            error = (error or "") + f"ValueError: the final answer has {_len(value)} characters; the limit is {cap}\n"
        else:
            result["final"] = final
    if error is not None:
        result["error"] = error
    return _dumps(result)


def _captured(stream, limit):
    try:
        text = _join(stream._parts)
    except _BaseException:  # noqa: BLE001 - model code replaced the parts
        return ""
    return text[:limit]


def _written(stream):
    total = stream.total
    return total if _type(total) is _int and total >= 0 else 0


def install_bridge(path):
    """Called once from JavaScript with the path of the bridge device (python-child.mjs)."""
    if _SNAPSHOT["_bridge_path"] is not None:
        raise RuntimeError("the bridge is already installed")
    _SNAPSHOT["_bridge_path"] = _str(path)
    # Pyodide sets variables of its own while it starts or restores.
    _clean_environment()
    _restore()


def get_var(name, max_chars=-1):
    name = _str(name)
    if name not in _ns or name in RESERVED or name.startswith("__"):
        return "null"
    try:
        # A value's own __str__ runs under the time limit, interruptible like a block.
        _set_signal(_SIGINT, _DEFAULT_INT)
        text = _str(_ns[name])
    except _BaseException as e:  # noqa: BLE001
        _uninterruptible()
        return _dumps(f"<unprintable {_type(_ns[name]).__name__}: {e}>"[:1000])
    _uninterruptible()
    if max_chars >= 0 and _len(text) > max_chars:
        # Never sent: the host asked for at most `max_chars` (its `maxAnswerChars`).
        raise ValueError(f"the variable '{name[:100]}' has {_len(text)} characters; the limit is {max_chars}")
    return _dumps(text)


# Blocks run once by a pooled interpreter before it is ready (python-child.mjs,
# the warm-up): the paths of a session's first blocks (assignment, output, an
# expression's value, a loop, a comprehension, a traceback, the helpers).
_WARM_BLOCKS = (
    "x = 1",
    "x = 1\nprint(x)",
    "x + 1",
    "s = 'abc' * 3\nfor i in range(10):\n    x += i\nlen(s)",
    "y = [i * 2 for i in range(20)]\nd = {'a': 1, 'b': y}\nd['a']",
    "peek(10), lenP(), find('a')[:1]",
    "1 / 0",
    "x = 1",
)


def warm_up_blocks():
    """The warm-up blocks, as JSON (for python-child.mjs)."""
    return _dumps(_WARM_BLOCKS)


def forget_warm_up():
    """Called once from JavaScript after the warm-up blocks: forget them.

    Every name they bound is deleted from the REPL's namespace (the helpers
    are put back by _restore), and nothing they did is kept: P and context
    empty again (the session loads its own), no final answer, the caps unset.
    """
    for key in _ns.keys() - _NS_AT_START:
        del _ns[key]
    _state["P"] = ""
    _state["context"] = ""
    _state["slots"] = []
    _state["final"] = None
    _state["max_answer"] = -1
    _state["max_prompt"] = -1
    _restore()


def list_vars():
    return _dumps([{"name": n, "type": t} for n, t in _user_vars()])


# --- The bridge to the host: a character device of the in-memory file system
# (python-child.mjs registers it), not a JavaScript function, so that Python
# never holds a JsProxy (from any JsProxy, Pyodide's FFI leads to the realm's
# constructors: `.constructor`, `new`, the errors it raises). One write per
# call: a flag (b"8": UTF-8, b"6": UTF-16-LE, for strings with lone
# surrogates), the kind, a newline, the payload. Then the reply: 16 bytes of
# header (the same flag and the body's length in 15 decimal digits), and the
# body, a "1" (ok) or "0" (error) and the text. The device validates like the
# host does; anything malformed answers "0...". The os functions are the ones
# of start-up (model code may rebind posix.open and friends: only its own
# calls then fail).
_bridge_path = None
_os_open = _posix.open
_os_read = _posix.read
_os_write = _posix.write
_os_close = _posix.close
_O_RDWR = _posix.O_RDWR
_UnicodeEncodeError = UnicodeEncodeError
_int = int
_bytes = bytes


def _encode(text):
    try:
        return b"8", text.encode("utf-8")
    except _UnicodeEncodeError:
        return b"6", text.encode("utf-16-le", "surrogatepass")


def _bridge_call(name=None, payload=None):
    if _type(name) is not _str or _type(payload) is not _str or _bridge_path is None:
        return "0invalid host call"
    flag, body = _encode(payload)
    request = b"".join((flag, name.encode("utf-8", "replace"), b"\n", body))
    body = None
    fd = _os_open(_bridge_path, _O_RDWR)
    try:
        if _os_write(fd, request) != _len(request):
            return "0the host call failed"
        request = None
        head = _os_read(fd, 16)
        if _len(head) != 16 or head[:1] not in (b"8", b"6"):
            return "0the host call failed"
        n = _int(head[1:])
        parts = []
        while n > 0:
            part = _os_read(fd, n)
            if not part:
                return "0the host call failed"
            parts.append(part)
            n -= _len(part)
        reply = parts[0] if _len(parts) == 1 else b"".join(parts)
        parts = None
        if head[:1] == b"8":
            return reply.decode("utf-8")
        return reply.decode("utf-16-le", "surrogatepass")
    finally:
        _os_close(fd)


# --- The in-interpreter wall (second layer under the OS wall). No module that
# reads or writes raw memory (ctypes, CPython's test modules) can be imported,
# and no function that creates a JavaScript value (pyodide.ffi.to_js,
# create_proxy, ...) is left: with either, Python could reach Pyodide's API
# object and, from there, the child's JavaScript realm.
_BLOCKED = frozenset((
    "ctypes", "_ctypes", "_testcapi", "_testinternalcapi", "_testlimitedcapi", "_testbuffer",
    "_testclinic", "_testclinic_limited", "_testmultiphase", "_testsinglephase", "_testimportmultiple",
    "_testexternalinspection", "_xxtestfuzz", "_remote_debugging", "js", "pyodide_js", "_pyodide_core",
))
_ModuleNotFoundError = ModuleNotFoundError


def _unavailable(name):
    if name.split(".", 1)[0] in ("js", "pyodide_js"):
        # Never there (unregistered at start-up): what Python says of any missing module.
        return _ModuleNotFoundError(f"No module named '{name}'", name=name)
    return _ModuleNotFoundError(f"module '{name}' is not available in the sandbox", name=name)


class _Blocker:
    """First on sys.meta_path (put back after every block): refuses _BLOCKED."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        name = _str(name)
        if name in _BLOCKED or name.split(".", 1)[0] in _BLOCKED:
            raise _unavailable(name)
        return None


# Every builtin module this interpreter may ever import, created now (in the
# start-up snapshot when there is one): `_imp.create_builtin` is replaced
# after start-up by a lookup in this table, so the C function that could
# create `_ctypes` or `_testcapi` is gone.
_BUILTIN_MODULES = {}
for _name in _sys.builtin_module_names:
    if _name not in _BLOCKED:
        _BUILTIN_MODULES[_name] = _sys.modules.get(_name) or __import__(_name)
del _name


def _create_builtin(spec):
    name = _str(getattr(spec, "name", ""))
    module = _BUILTIN_MODULES.get(name)
    if module is None:
        raise _unavailable(name)
    return module


def _create_dynamic(spec, file=None):
    raise _unavailable(_str(getattr(spec, "name", "")))


def _no_js(*args, **kwargs):
    raise RuntimeError("JavaScript values cannot be created in the sandbox")


def harden():
    """Called once from JavaScript after start-up (after every snapshot restore)."""
    import _imp
    import gc

    _imp.create_builtin = _create_builtin
    _imp.create_dynamic = _create_dynamic
    _imp.exec_dynamic = _create_dynamic
    _sys.modules.pop("ctypes", None)
    _sys.modules.pop("_ctypes", None)
    # Pyodide's FFI: every function of _pyodide_core that makes a JavaScript
    # value, wherever a module (or the module's cached init copy) holds it.
    core = _sys.modules.get("_pyodide_core")
    if core is not None:
        bad = [
            v for k, v in list(core.__dict__.items())
            if _type(v) is _types.BuiltinFunctionType and k not in ("trigger_fatal_error", "can_run_sync")
        ]
        ids = {id(v) for v in bad}
        for holder in gc.get_referrers(*bad):
            if _type(holder) is dict:
                for key, value in list(holder.items()):
                    if id(value) in ids:
                        holder[key] = _no_js
            elif _type(holder) is _types.CellType and id(holder.cell_contents) in ids:
                holder.cell_contents = _no_js
        bad = None
    # JavaScript objects Python could still find: the module objects of `js`
    # and `pyodide_js` (unregistered, but the import hook's JsLoaders keep
    # them), webloop's scheduleCallback in its module, anything the import
    # hook's finder still maps. The bridge is no JavaScript function
    # (_bridge_call), so none stays: PythonWall.test.ts walks everything
    # reachable from the gc and finds no JsProxy. (Only these holders: a walk
    # of all the gc's objects here would cost 60-130 ms of every start.)
    proxy = getattr(_sys.modules.get("pyodide.ffi"), "JsProxy", None)
    if proxy is not None:
        holders = [getattr(m, "__dict__", None) for m in list(_sys.modules.values())]
        hook = _sys.modules.get("_pyodide._importhook")
        loader = getattr(hook, "JsLoader", None)
        if loader is not None:
            holders += [getattr(o, "__dict__", None) for o in gc.get_referrers(loader) if _type(o) is loader]
        holders.append(getattr(getattr(hook, "jsfinder", None), "jsproxies", None))
        for d in holders:
            if _type(d) is not dict:
                continue
            for key, value in list(d.items()):
                if _isinstance(value, proxy):
                    d[key] = _no_js
        holders = d = value = None
    _restore()


def _clean_environment():
    import os

    for key in list(os.environ):
        if key not in ("HOME", "PATH", "PWD", "LANG", "USER", "LOGNAME"):
            del os.environ[key]
    _sys.argv = [""]
    _sys.executable = ""


_clean_environment()
_GLOBALS = None
_restore()
_NS_AT_START = frozenset(_ns)
_GLOBALS = globals()
_SNAPSHOT = dict(_GLOBALS)
_CODES = [
    (f, f.__code__, f.__defaults__, f.__kwdefaults__)
    for f in list(_SNAPSHOT.values())
    if _isinstance(f, _types.FunctionType)
]
_SNAPSHOT.update(_SNAPSHOT=_SNAPSHOT, _CODES=_CODES, _GLOBALS=_GLOBALS)
