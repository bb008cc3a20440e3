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
# Programs that run a script given with -c (or --command): the script is parsed like a line.
SHELLS = {"sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "su", "runuser", "script", "flock"}
_SHELL_OPTIONS_WITH_VALUE = {"-o", "+o", "-O", "+O", "--rcfile", "--init-file", "-s", "--shell", "-g", "--group",
                             "-u", "--user", "-w", "--whitelist-environment"}
# Wrappers that run the rest of their words as a command: (options taking a value, options that
# do not, positional arguments before the command). An option in neither set is read both ways.
WRAPPERS: dict[str, tuple[frozenset[str], frozenset[str], int]] = {
    name: (frozenset(with_value.split()), frozenset(flags.split()), positional)
    for name, with_value, flags, positional in [
        ("sudo", "-u --user -g --group -C --close-from -h --host -p --prompt -U --other-user -r --role -t --type "
                 "-T --command-timeout -D --chdir -R --chroot",
         "-A --askpass -b --background -E -e --edit -H --set-home -i --login -K -k --reset-timestamp -n "
         "--non-interactive -P --preserve-groups -S --stdin -s --shell -v --validate", 0),
        ("doas", "-u -C", "-n -s -L", 0),
        ("env", "-u --unset -C --chdir", "-i --ignore-environment -0 --null -v --debug", 0),
        ("nice", "-n --adjustment", "", 0),
        ("nohup", "", "", 0),
        ("timeout", "-s --signal -k --kill-after", "--preserve-status --foreground -v --verbose", 1),
        ("time", "-f --format -o --output", "-p --portability -v --verbose -a --append -q --quiet", 0),
        ("command", "", "-p", 0),
        ("builtin", "", "", 0),
        ("exec", "-a", "-c -l", 0),
        ("xargs", "-n --max-args -I -L --max-lines -P --max-procs -d --delimiter -E -s --max-chars -a --arg-file",
         "-0 --null -r --no-run-if-empty -t --verbose -p --interactive -x --exit -o --open-tty", 0),
        ("stdbuf", "-i --input -o --output -e --error", "", 0),
        ("ionice", "-c --class -n --classdata -p --pid -P --pgid -u --uid", "-t --ignore", 0),
        ("setsid", "", "-c --ctty -f --fork -w --wait", 0),
        ("chronic", "", "-e -v", 0),
        ("chroot", "--userspec --groups", "--skip-chdir", 1),
        ("flock", "-w --timeout -E --conflict-exit-code", "-s --shared -x --exclusive -u --unlock -n --nonblock "
                  "-o --close -F --no-fork --verbose", 1),
        ("unshare", "", "-m -u -i -n -p -U -C -T -f --fork -r --map-root-user", 0),
        ("runuser", "-u --user -g --group -G --supp-group -s --shell -w --whitelist-environment",
         "-l --login -m -p --preserve-environment --pty", 0),
        ("busybox", "", "", 0),
    ]
}
_REMOTE_OR_WATCHED = {"watch"}  # programs that run their arguments joined as a shell line


@dataclass
class ParsedLine:
    commands: list[str] = field(default_factory=list)  # each simple command, words joined by one space
    writes: list[str] = field(default_factory=list)  # files written by redirection
    uncertain: list[str] = field(default_factory=list)  # why the line's effect cannot be known


CACHED_LINE_CHARS = 1024  # lines up to this long are cached (agents repeat them); longer ones are not


def parse_command_line(line: str) -> ParsedLine:
    """The simple commands `line` would run, normalised (quotes removed, single spaces).
    Results may be shared from a cache: never change one."""
    return _parse_cached(line) if len(line) <= CACHED_LINE_CHARS else _parse(line)


def _parse(line: str) -> ParsedLine:
    result = ParsedLine()
    _parse_into(line, result, depth=0)
    return result


_parse_cached = lru_cache(maxsize=4096)(_parse)
clear_parse_cache = _parse_cached.cache_clear


def _parse_into(line: str, result: ParsedLine, depth: int, fast: bool = True) -> None:
    if depth > MAX_DEPTH:
        result.uncertain.append("nested too deeply")
        return
    if not line.strip():
        return
    if "\r" in line:  # typed into a terminal (as Roo Code does), a carriage return runs what is before it
        result.uncertain.append("a carriage return inside the line")
        line = line.replace("\r", "\n")
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
        _pieces(line, result, depth)
        return
    for tree in trees:
        _visit(tree, line, result, depth)


_SEPARATORS = re.compile(r"[;&|\n]+|\$\(\(|\)\)|\[\[|\]\]|[()]")
_LEADING_RESERVED = re.compile(r"^\s*(?:(?:time|coproc|!|if|then|else|elif|while|until|do|case|in|esac|fi|done)\s+)+")


def _pieces(line: str, result: ParsedLine, depth: int) -> None:
    """A line bashlex cannot parse stays uncertain (never allowed), but its recognisable pieces
    are still decided, so an unparseable fragment cannot shield `rm -rf /` from a deny."""
    for piece in _SEPARATORS.split(line):
        piece = _LEADING_RESERVED.sub("", piece).strip()
        if piece and piece != line.strip():
            scratch = ParsedLine()
            _parse_into(piece, scratch, depth + 1)
            result.commands.extend(scratch.commands)
            result.writes.extend(scratch.writes)


def _visit(node: object, source: str, result: ParsedLine, depth: int) -> None:
    kind = getattr(node, "kind", "")
    if kind == "command":
        _command(node, source, result, depth)
        return
    if kind == "redirect":  # on a compound command: `{ ls; } > out`, `(x) 2> err`
        _redirect(node, source, result, depth)
        return
    for child in _children(node):
        _visit(child, source, result, depth)


def _children(node: object) -> list[object]:
    children = list(getattr(node, "parts", None) or [])
    for name in ("list", "command", "redirects"):
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
            expands = True
            if part.kind == "parameter":  # bashlex leaves ${x:-$(cmd)} unparsed: look inside ourselves
                for inner in _HIDDEN_SUBSTITUTION.findall(source[part.pos[0]:part.pos[1]]):
                    _parse_into(inner[0] or inner[1], result, depth + 1)
        else:
            expands = _substitutions(part, source, result, depth) or expands
    return expands


_HIDDEN_SUBSTITUTION = re.compile(r"\$\((.*)\)|`([^`]*)`", re.S)
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
    if expands or unquoted.startswith("~"):  # what a substitution inside runs was visited already
        if re.search(r"\$['\"]", raw):
            result.uncertain.append(f"ANSI-C or locale quoting in {raw[:40]!r}")
        elif not is_name:  # a name that expands is reported by the caller
            result.uncertain.append(f"{raw[:40]!r} is only known when the shell expands it")
        return node.word  # type: ignore[attr-defined]
    if _BRACES.search(unquoted) or (is_name and _GLOB.search(unquoted)):
        result.uncertain.append(f"{raw[:40]!r} is only known when the shell expands it")
    if re.search(r"![^\s=(]", unquoted):  # history expansion, in an interactive terminal
        result.uncertain.append(f"{raw[:40]!r} recalls an earlier command in a terminal")
    return value


# The fast path: characters that mean nothing to the shell outside quotes, and the reserved words
# that start compound commands. Any other syntax goes to bashlex.
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:=,@+-")
_GLOBS = frozenset("*?[]")
_DUPLICATE = re.compile(r"[0-9]+|-")
_RESERVED = frozenset({"if", "then", "else", "elif", "fi", "case", "esac", "for", "select", "while", "until",
                       "do", "done", "in", "function", "time", "coproc", "{", "}", "!", "[[", "]]"})


def _plain_commands(line: str) -> tuple[list[list[str]], list[str]] | None:
    """The raw words of each simple command, and the files redirections write, for a line made
    only of plain words, '...', "..." without expansions, the operators && || ; | and the
    redirections > >> < N>&M. None when the line needs the real parser."""
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
        elif char in _PLAIN or char in _GLOBS:
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
                    if duplicate is None or line[duplicate.end():duplicate.end() + 1] not in ("", " ", ";", "&", "|"):
                        return None  # >&2file writes the file 2file
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
        if name in _RESERVED or "=" in name or _GLOBS.intersection(name):
            return None  # compound commands, assignments and globbed names: the parser decides
    return commands, writes


def _command(node: object, source: str, result: ParsedLine, depth: int) -> None:
    if depth > MAX_DEPTH:
        result.uncertain.append("nested too deeply")
        return
    words: list[str] = []
    assignments: list[str] = []
    stdin_texts: list[str] = []  # here-strings and here-documents given to the command
    name_expands = False
    for part in node.parts:  # type: ignore[attr-defined]
        if part.kind == "word":
            expands = _substitutions(part, source, result, depth)
            has_substitution = any(p.kind in ("commandsubstitution", "processsubstitution") for p in part.parts or [])
            if not words and (expands or has_substitution):
                name_expands = True
            words.append(_word(part, source, result, is_name=not words))
        elif part.kind == "redirect":
            fed = _redirect(part, source, result, depth)
            if fed is not None:
                stdin_texts.append(fed)
        elif part.kind == "assignment":
            _substitutions(part, source, result, depth)
            assignments.append(part.word.split("=", 1)[0])
        else:
            _visit(part, source, result, depth)
    if words and assignments:
        result.uncertain.append(f"{assignments[0]}=... set for the command can change what it does")
    if name_expands:
        result.uncertain.append(f"the command name {words[0]!r} is only known when it runs")
    if words and words[0].rsplit("/", 1)[-1] in SHELLS and stdin_texts:
        for text in stdin_texts:  # bash <<< 'rm -rf /': the shell runs what it is fed
            _parse_into(text, result, depth + 1)
    _simple(words, result, depth, fed=bool(stdin_texts))


_INPUT_ONLY = {"<", "<<", "<<-", "<<<", "<&"}


def _redirect(node: object, source: str, result: ParsedLine, depth: int) -> str | None:
    """Record the file a redirection writes and decide what its target runs; return the text it
    feeds the command (a here-string or here-document), if any."""
    kind = node.type  # type: ignore[attr-defined]
    heredoc = getattr(node, "heredoc", None)
    if heredoc is not None and ("$" in heredoc.value or "`" in heredoc.value):
        result.uncertain.append("a here-document with substitutions, which are only known when it runs")
    target = getattr(node, "output", None)
    if not hasattr(target, "word"):
        return None  # 2>&1: a file descriptor, not a file
    _substitutions(target, source, result, depth)
    text = _word(target, source, result, is_name=False)
    if kind not in _INPUT_ONLY:
        result.writes.append(text)  # > >> >| &> &>> >& <>
    if kind == "<<<":
        return text
    if heredoc is not None:
        return heredoc.value.rsplit("\n", 2)[0] if "\n" in heredoc.value else heredoc.value
    return None


def _simple(words: list[str], result: ParsedLine, depth: int, fed: bool = False) -> None:
    """Record a simple command and everything it runs in turn: shell scripts, eval, wrapped
    commands, find -exec. `fed`: the command's input is a here-string or here-document."""
    if not words:
        return
    path = words[0]
    name = path.rsplit("/", 1)[-1]  # /bin/rm is rm
    rest = words[1:]
    result.commands.append(" ".join([name, *rest]))
    if "/" in path and path.rsplit("/", 1)[0] not in _SYSTEM_DIRECTORIES:
        result.commands.append(" ".join(words))  # ./ls is not ls: decided as the path too
    if name in _GLOBAL_OPTIONS:
        stripped = _after_options(rest, _GLOBAL_OPTIONS[name])
        if stripped != rest:  # git -C dir push --force is git push --force
            result.commands.append(" ".join([name, *stripped]))
    scripts: list[str] = []
    if name in SHELLS:
        scripts = _shell_scripts(rest)
        for script in scripts:
            _parse_into(script, result, depth + 1)
        if not scripts and not fed and name not in WRAPPERS and not any(not w.startswith("-") for w in rest):
            result.uncertain.append(f"{name} runs whatever it reads from its input")
    if name == "eval":
        _parse_into(" ".join(rest[1:] if rest[:1] == ["--"] else rest), result, depth + 1)
    elif name in _REMOTE_OR_WATCHED:
        _parse_into(" ".join(_after_options(rest, {"-n", "--interval", "-q", "--equexit"})), result, depth + 1)
    elif name == "find":
        for command in _find_commands(rest):
            _simple(command, result, depth + 1)
    if name in WRAPPERS and not scripts:  # flock -c SCRIPT runs the script, not a command
        for command in _unwrap(name, rest, result, depth):
            if name == "xargs" and command:
                command = [*command, "{input}"]  # xargs adds arguments read from its input
            _simple(command, result, depth + 1)


_SYSTEM_DIRECTORIES = {"", "/bin", "/usr/bin", "/usr/local/bin", "/sbin", "/usr/sbin"}
# Options before a subcommand (with the ones that take a value), stripped to see the subcommand.
_GLOBAL_OPTIONS = {"git": {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path", "--super-prefix",
                           "--config-env"},
                   "terraform": set()}


def _find_commands(words: list[str]) -> list[list[str]]:
    """What `find ... -exec CMD {} ;` (and -execdir, -ok, -okdir) runs."""
    commands, index = [], 0
    while index < len(words):
        if words[index] in ("-exec", "-execdir", "-ok", "-okdir"):
            end = next((i for i in range(index + 1, len(words)) if words[i] in (";", "+")), len(words))
            commands.append(words[index + 1:end])
            index = end
        index += 1
    return commands


def _shell_scripts(words: list[str]) -> list[str]:
    """The scripts a shell is given with -c (alone or among other flags, like -ec) or
    --command: every plain word after it, since only the first is the script but reading the
    others as scripts too can only make the decision stricter."""
    scripts: list[str] = []
    seen_c = False
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("--command="):
            scripts.append(word.split("=", 1)[1])
        elif word == "--command":
            seen_c = True
        elif word in _SHELL_OPTIONS_WITH_VALUE:
            index += 1
        elif len(word) > 1 and word[0] in "-+" and not word.startswith("--"):
            seen_c = seen_c or "c" in word[1:]
        elif seen_c and word != "--":
            scripts.append(word)
        index += 1
    return scripts


def _after_options(words: list[str], with_value: set[str]) -> list[str]:
    index = 0
    while index < len(words) and words[index].startswith("-"):
        index += 2 if words[index] in with_value else 1
    return words[index:]


def _unwrap(wrapper: str, words: list[str], result: ParsedLine, depth: int) -> list[list[str]]:
    """The command a wrapper runs, after its options, their values and its own arguments. An
    option the wrapper is not known to have is read both ways (with and without a value), so
    neither reading can hide a command."""
    with_value, flags, positional = WRAPPERS[wrapper]
    readings: list[list[str]] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--":
            index += 1
            break
        if wrapper == "env":
            split = _split_string(word, words[index + 1] if index + 1 < len(words) else "")
            if split is not None:  # env -S 'cmd args' runs a command line
                _parse_into(split, result, depth + 1)
                return []
        if word.startswith("-") and len(word) > 1:
            option = word.split("=", 1)[0]
            if "=" in word or option in flags:
                index += 1
            elif option in with_value:
                index += 2
            elif not word.startswith("--") and len(word) > 2:
                index += _cluster_length(word, with_value, flags)  # -iu root, -n5
            else:
                readings.extend(_unwrap(wrapper, words[index + 2:], result, depth))  # as if it took a value
                index += 1
            continue
        if wrapper == "env" and "=" in word:
            result.uncertain.append(f"env sets {word.split('=', 1)[0]}, which can change what the command does")
            index += 1
            continue
        break
    return [words[index + positional:], *readings]


def _cluster_length(word: str, with_value: frozenset[str], flags: frozenset[str]) -> int:
    """How many words a cluster of short options (-iu root, -n5) takes: 2 when its last
    letter takes a value, 1 otherwise (a letter with a value inside takes the rest as it)."""
    letters = word[1:]
    for position, letter in enumerate(letters):
        if f"-{letter}" in with_value:
            return 2 if position == len(letters) - 1 else 1
    return 1


def _split_string(word: str, following: str) -> str | None:
    """The command line of `env -S LINE`, `-vS LINE`, `-SLINE`, `--split-string=LINE` or an
    abbreviation of it (`--sp=LINE`); None if `word` is not that option."""
    if word.startswith("--s") and "--split-string".startswith(word.split("=", 1)[0]):
        return word.split("=", 1)[1] if "=" in word else following
    if word.startswith("-") and not word.startswith("--") and "S" in word:
        rest = word[word.index("S") + 1:]
        return rest or following
    return None
