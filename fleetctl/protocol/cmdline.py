"""Windows command lines: the one quoting function for every value that must become part of one, and its inverse.

Windows passes a process one string, not an argv. The C runtime and Go (and `CommandLineToArgvW`) cut it into
arguments by the same rules (Microsoft, "Parsing C command-line arguments"):
- arguments are separated by spaces or tabs; a double quote starts or ends a quoted run, in which spaces count;
- `2n` backslashes followed by a quote are `n` backslashes and the quote delimits; `2n+1` backslashes followed by a
  quote are `n` backslashes and a literal quote; backslashes not followed by a quote are literal.
`quote_argument` is the inverse (the algorithm of "Everyone quotes command line arguments the wrong way"): an
argument without space, tab, newline, vertical tab or quote is left as it is; any other, and the empty string, is
wrapped in quotes, with the backslashes before an embedded quote or the closing quote doubled. The node module
(`ConvertTo-FleetCommandLineArgument` in FleetNode.psm1) is the same algorithm, statement for statement, and the
lab reads command lines back with `split_command_line`; tests/protocol/cmdline_vectors.json holds the shared cases.

These rules are only the program's own parsing. cmd.exe is a different parser (`^ & | < > %`), and none of the
command lines fleetctl builds goes through it: the SCM, NSSM and Task Scheduler start the program directly.
What does still apply is `%NAME%` expansion: the SCM expands ImagePath (REG_EXPAND_SZ), NSSM its App* values and
Task Scheduler its action arguments, with no escape (docs/windows.md).
"""

from __future__ import annotations

from collections.abc import Sequence

# Characters that make an argument need quotes: the separators (the C runtime also splits at newline and
# vertical tab when it reads a command line) and the quote itself.
NEEDS_QUOTES = " \t\n\v\""


def quote_argument(argument: str) -> str:
    """`argument` as it must appear in a command line so the program's parser gives it back unchanged."""
    if argument and not any(ch in NEEDS_QUOTES for ch in argument):
        return argument
    out = ['"']
    backslashes = 0
    for ch in argument:
        if ch == "\\":
            backslashes += 1
            continue
        if ch == '"':
            # The backslashes before a quote are doubled, and one more escapes the quote itself.
            out.append("\\" * (2 * backslashes + 1))
        elif backslashes:
            out.append("\\" * backslashes)
        backslashes = 0
        out.append(ch)
    # Backslashes at the end precede the closing quote: doubled, so the quote still closes.
    out.append("\\" * (2 * backslashes))
    out.append('"')
    return "".join(out)


def join_command_line(arguments: Sequence[str]) -> str:
    """A whole command line (or the arguments part of one): each argument quoted, separated by one space."""
    return " ".join(quote_argument(a) for a in arguments)


def split_command_line(line: str, *, program: bool = False) -> list[str]:
    """The arguments a C runtime or Go program reads from `line` (the lab uses this to read a service's command
    line back). With `program`, the first token is a program name: it ends at the first space outside quotes and
    backslashes in it are literal, as `CreateProcess` and the runtime read it."""
    args: list[str] = []
    i, n = 0, len(line)
    if program:
        while i < n and line[i] in " \t":
            i += 1
        if i < n:
            if line[i] == '"':
                end = line.find('"', i + 1)
                end = n if end < 0 else end
                args.append(line[i + 1:end])
                i = end + 1
            else:
                start = i
                while i < n and line[i] not in " \t":
                    i += 1
                args.append(line[start:i])
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return args
        current: list[str] = []
        quoted = False
        while i < n and (quoted or line[i] not in " \t"):
            ch = line[i]
            if ch == "\\":
                start = i
                while i < n and line[i] == "\\":
                    i += 1
                count = i - start
                if i < n and line[i] == '"':
                    current.append("\\" * (count // 2))
                    if count % 2:
                        current.append('"')
                        i += 1
                    # An even count leaves the quote to the branch below, which opens or closes a run.
                else:
                    current.append("\\" * count)
                continue
            if ch == '"':
                if quoted and i + 1 < n and line[i + 1] == '"':
                    # `""` inside quotes is a literal quote (the C runtime since 2008; quote_argument never
                    # writes it, so the older rule's difference never matters for fleetctl's own lines).
                    current.append('"')
                    i += 2
                    continue
                quoted = not quoted
                i += 1
                continue
            current.append(ch)
            i += 1
        args.append("".join(current))
