"""Command lines as the simple commands they would run. A line is parsed with bashlex, never
prefix-matched: chains, pipes, subshells, command and process substitution, `bash -c`/`eval`
strings, wrappers (`sudo`, `env`, `timeout`, `xargs`, ...) and quoting tricks (`\\rm`, `r''m`)
all yield the commands underneath. What cannot be known (a line that does not parse, a command
name that is an expansion) is flagged `uncertain`, so the engine never allows it. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import bashlex

MAX_DEPTH = 8  # nested `bash -c` / eval / substitutions before we stop trusting the parse
SHELLS = {"sh", "bash", "zsh", "dash", "ksh"}
# Wrappers that run the rest of their words as a command, with how to skip their own options.
WRAPPERS = {"sudo", "doas", "env", "nice", "nohup", "timeout", "time", "command", "exec", "xargs", "stdbuf",
            "ionice", "setsid", "chronic", "watch"}
_WRAPPER_ARGS = {"timeout": 1, "sudo": 0, "nice": 0}  # positional arguments before the command
_OPTIONS_WITH_VALUE = {"sudo": {"-u", "-g", "-C", "-h", "-p", "-U"}, "nice": {"-n"}, "timeout": {"-s", "-k"},
                       "xargs": {"-n", "-I", "-L", "-P", "-d", "-E", "-s", "-a"}, "env": {"-u", "-C"},
                       "ionice": {"-c", "-n", "-p"}, "watch": {"-n", "-d"}, "stdbuf": {"-i", "-o", "-e"}}


@dataclass
class ParsedLine:
    commands: list[str] = field(default_factory=list)  # each simple command, words joined by one space
    writes: list[str] = field(default_factory=list)  # files written by redirection
    uncertain: list[str] = field(default_factory=list)  # why the line's effect cannot be known


@lru_cache(maxsize=4096)
def parse_command_line(line: str) -> ParsedLine:
    """The simple commands `line` would run, normalised (quotes removed, single spaces).
    Agents run the same lines again and again, so results are cached: never change one."""
    result = ParsedLine()
    _parse_into(line, result, depth=0)
    return result


def _parse_into(line: str, result: ParsedLine, depth: int, fast: bool = True) -> None:
    if depth > MAX_DEPTH:
        result.uncertain.append("nested too deeply")
        return
    if not line.strip():
        return
    plain = _plain_commands(line) if fast else None
    if plain is not None:  # no shell syntax beyond words, quotes, && || ; | and simple redirections
        commands, writes = plain
        result.writes.extend(_quote_removal(text)[0] for text in writes)  # type: ignore[index]
        for words in commands:
            _simple([_quote_removal(word)[0] for word in words], result, depth)  # type: ignore[index]
        return
    try:
        trees = bashlex.parse(line)
    except Exception as error:  # any parser failure, including constructs bashlex lacks: fail closed
        result.uncertain.append(f"cannot parse: {type(error).__name__}")
        return
    for tree in trees:
        _visit(tree, line, result, depth)


def _visit(node: object, source: str, result: ParsedLine, depth: int) -> None:
    kind = getattr(node, "kind", "")
    if kind == "command":
        _command(node, source, result, depth)
        return
    for child in _children(node):
        _visit(child, source, result, depth)


def _children(node: object) -> list[object]:
    children = list(getattr(node, "parts", None) or [])
    for name in ("list", "command"):
        value = getattr(node, name, None)
        if isinstance(value, list):
            children.extend(value)
        elif value is not None and hasattr(value, "kind"):
            children.append(value)
    return children


def _substitutions(node: object, source: str, result: ParsedLine, depth: int) -> bool:
    """Visit command/process substitutions inside a word; True if it holds a parameter expansion."""
    expands = False
    for part in getattr(node, "parts", None) or []:
        if part.kind in ("commandsubstitution", "processsubstitution"):
            _visit(part.command, source, result, depth + 1)
        elif part.kind in ("parameter", "tilde"):
            expands = expands or part.kind == "parameter"
        else:
            expands = _substitutions(part, source, result, depth) or expands
    return expands


# Unquoted brace expansion ({rm,-rf,/} runs rm -rf /) and globs in a command name are only
# known when the shell expands them.
_BRACES = re.compile(r"\{[^{}]*(,|\.\.)[^{}]*\}")
_GLOB = re.compile(r"[*?\[]")


def _quote_removal(raw: str) -> tuple[str, str, bool] | None:
    """POSIX quote removal of one word: (value, its unquoted characters, whether it expands
    `$`/backticks), or None if a quote is left open."""
    value: list[str] = []
    unquoted: list[str] = []
    expands = False
    index, quote = 0, ""
    while index < len(raw):
        char = raw[index]
        if quote == "'":
            if char == "'":
                quote = ""
            else:
                value.append(char)
        elif char == "\\" and index + 1 < len(raw):
            following = raw[index + 1]
            if quote == '"' and following not in '$`"\\\n':
                value.append(char)  # inside double quotes, other backslashes are literal
            else:
                if following != "\n":  # backslash-newline joins lines
                    value.append(following)
                index += 1
        elif char == quote:  # the closing double quote
            quote = ""
        elif char in "'\"" and not quote:
            quote = char
        else:
            expands = expands or char in "$`"
            value.append(char)
            if not quote:
                unquoted.append(char)
        index += 1
    return None if quote else ("".join(value), "".join(unquoted), expands)


def _word(node: object, source: str, result: ParsedLine, is_name: bool) -> str:
    """A word after quote removal, done on its source text: bashlex's own removal goes wrong on
    adjacent quoted pieces ('a '"'"'b'), which would let nested `bash -c` scripts hide words."""
    raw = source[node.pos[0]:node.pos[1]]  # type: ignore[attr-defined]
    removed = _quote_removal(raw)
    if removed is None:
        result.uncertain.append(f"quoting that cannot be followed in {raw[:40]!r}")
        return node.word  # type: ignore[attr-defined]
    value, unquoted, expands = removed
    if expands:  # parameter or command substitution: visited elsewhere; keep the text as written
        if re.search(r"\$['\"]", raw):
            result.uncertain.append(f"ANSI-C or locale quoting in {raw[:40]!r}")
        return node.word  # type: ignore[attr-defined]
    if _BRACES.search(unquoted) or (is_name and _GLOB.search(unquoted)):
        result.uncertain.append(f"{raw[:40]!r} is only known when the shell expands it")
    return value


# The fast path: characters that mean nothing to the shell outside quotes, simple parameters
# ($NAME, ${NAME}) as arguments, and the reserved words that start compound commands. Any other
# syntax goes to bashlex.
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:=,@+-")
_GLOBS = frozenset("*?[]")
_PARAMETER = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})")
_DUPLICATE = re.compile(r"[0-9]+|-")
_RESERVED = frozenset({"if", "then", "else", "elif", "fi", "case", "esac", "for", "select", "while", "until",
                       "do", "done", "in", "function", "time", "coproc", "{", "}", "!", "[[", "]]"})


def _plain_commands(line: str) -> tuple[list[list[str]], list[str]] | None:
    """The raw words of each simple command, and the files redirections write, for a line made
    only of plain words, '...', "..." without expansions, $NAME arguments, the operators
    && || ; | and the redirections > >> < N>&M. None when the line needs the real parser."""
    commands: list[list[str]] = []
    writes: list[str] = []
    words: list[str] = []
    word: list[str] = []
    redirect = ""  # ">" or "<" waiting for its target
    quote = ""
    index, end = 0, len(line)
    while index < end:
        char = line[index]
        if quote:
            if quote == '"' and char in '$`\\!':
                return None
            if char == quote:
                quote = ""
            word.append(char)
            index += 1
            continue
        if char in "'\"":
            quote = char
        elif char in _PLAIN or char in _GLOBS or char == "$" or char == "{" or char == "}":
            pass
        elif char in " &|;<>":
            if word:
                text = "".join(word)
                word = []
                if char in "<>" and text.isdigit():
                    pass  # the file descriptor of `2>file`
                elif redirect:
                    if redirect == ">":
                        writes.append(text)
                    redirect = ""
                else:
                    words.append(text)
            if char == " ":
                index += 1
                continue
            if redirect:
                return None  # an operator where a redirection's target should be
            two = line[index:index + 2]
            if char in "<>":
                if two in (">&", "<&"):
                    duplicate = _DUPLICATE.match(line, index + 2)  # 2>&1: no file involved
                    if duplicate is None:
                        return None
                    index = duplicate.end()
                    continue
                if two in ("<<", "<>", ">|", "<("):
                    return None
                redirect = "<" if char == "<" else ">"
                index += 2 if two == ">>" else 1
                continue
            if two in ("&&", "||"):
                operator = two
            elif char == "&" or two == "|&" or two == ";;":
                return None  # background jobs and the like
            else:
                operator = char
            if not words:
                return None  # an operator with no command before it: let the parser judge
            commands.append(words)
            words = []
            index += len(operator)
            continue
        else:
            return None
        word.append(char)
        index += 1
    if quote:
        return None
    if word:
        if redirect:
            if redirect == ">":
                writes.append("".join(word))
            redirect = ""
        else:
            words.append("".join(word))
    if redirect or not words:
        return None
    commands.append(words)
    for command in commands:
        name = command[0]
        if name in _RESERVED or "=" in name or "$" in name or _GLOBS.intersection(name):
            return None  # compound commands, assignments, expanded or globbed names: the parser decides
        for text in command:
            if ("$" in text or "{" in text or "}" in text) and not _only_parameters(text):
                return None
    for text in writes:
        if "$" in text or "{" in text or "}" in text:
            return None
    return commands, writes


def _only_parameters(text: str) -> bool:
    """A word whose only shell syntax is $NAME / ${NAME}: kept as written, like bashlex does."""
    if "'" in text or '"' in text:
        return False
    rest = _PARAMETER.sub("", text)
    return "$" not in rest and "{" not in rest and "}" not in rest


def _command(node: object, source: str, result: ParsedLine, depth: int) -> None:
    if depth > MAX_DEPTH:
        result.uncertain.append("nested too deeply")
        return
    words: list[str] = []
    name_expands = False
    for part in node.parts:  # type: ignore[attr-defined]
        if part.kind == "word":
            expands = _substitutions(part, source, result, depth)
            has_substitution = any(p.kind in ("commandsubstitution", "processsubstitution") for p in part.parts or [])
            if not words and (expands or has_substitution):
                name_expands = True
            words.append(_word(part, source, result, is_name=not words))
        elif part.kind == "redirect":
            target = getattr(part, "output", None)
            if hasattr(target, "word"):
                _substitutions(target, source, result, depth)
                if part.type in (">", ">>", ">|", "&>", ">&"):  # `2>&1` has a number, not a word, as target
                    result.writes.append(_word(target, source, result, is_name=False))
        elif part.kind == "assignment":
            _substitutions(part, source, result, depth)
        else:
            _visit(part, source, result, depth)
    if name_expands:
        result.uncertain.append(f"the command name {words[0]!r} is only known when it runs")
    _simple(words, result, depth)


def _simple(words: list[str], result: ParsedLine, depth: int) -> None:
    if not words:
        return
    name = words[0].rsplit("/", 1)[-1]  # /bin/rm is rm
    rest = words[1:]
    if name in SHELLS and "-c" in rest:
        script_at = rest.index("-c") + 1
        if script_at < len(rest):
            result.commands.append(" ".join([name, *rest]))
            _parse_into(rest[script_at], result, depth + 1)
        return
    if name == "eval":
        result.commands.append(" ".join(words))
        _parse_into(" ".join(rest), result, depth + 1)
        return
    if name in WRAPPERS:
        result.commands.append(" ".join([name, *rest]))
        _simple(_unwrap(name, rest), result, depth + 1)
        return
    result.commands.append(" ".join([name, *rest]))


def _unwrap(wrapper: str, words: list[str]) -> list[str]:
    """The command a wrapper runs: skip its options, their values and its own arguments."""
    with_value = _OPTIONS_WITH_VALUE.get(wrapper, set())
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--":
            index += 1
            break
        if word.startswith("-"):
            index += 2 if word in with_value else 1
            continue
        if wrapper == "env" and "=" in word:
            index += 1
            continue
        break
    return words[index + _WRAPPER_ARGS.get(wrapper, 0):]
