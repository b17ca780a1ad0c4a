"""The `workbench` subcommands, registered by the packages that own them.

The core does not import its analyses. Each package describes its subcommands as `Command`s
and lists them under the `workbench.commands` entry-point group of `pyproject.toml`:

    [project.entry-points."workbench.commands"]
    induction = "circuits.cli:INDUCTION"

`commands()` reads the group (installing the project makes it), `build_parser` lays the
subcommands out by `Command.order`, and `command_argv` turns options into the argument list
of a subcommand from the same description, so the dashboard names no flag of its own.

>>> import argparse
>>> def args(p): p.add_argument("--model"); p.add_argument("--overwrite", action="store_true")
>>> echo = Command("echo", "print the model", args, lambda a: None)
>>> parser = build_parser([echo])
>>> command_argv("echo", {"model": "runs/demo", "overwrite": True}, parser=parser)
['echo', '--model', 'runs/demo', '--overwrite']
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, NoReturn

GROUP = "workbench.commands"
PROG = "workbench"
DESCRIPTION = ("`workbench` command line. Each subcommand parses arguments into a config and "
               "calls one library function; user errors print one line (`workbench: error: "
               "...`) and exit 2.")


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: `workbench train: error: argument
    --steps: ...; see workbench train --help` (exit status 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        """As argparse's, but arguments no subcommand knows are refused by the deepest
        subcommand named (`workbench info: error: unrecognized arguments: --step 3; see
        workbench info --help`), not by `workbench` itself."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            parser: argparse.ArgumentParser = self
            while True:
                sub = next((a for a in parser._actions
                            if isinstance(a, argparse._SubParsersAction)), None)
                name = None if sub is None else getattr(ns, str(sub.dest), None)
                if sub is None or name not in sub.choices:
                    break
                parser = sub.choices[name]
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns


@dataclass(frozen=True)
class Command:
    """One `workbench` subcommand.

    Attributes:
        name: the subcommand (`workbench NAME`).
        help: its line in `workbench --help`.
        add_arguments: adds its options (and sub-subcommands) to its parser.
        run: does the work for the parsed arguments; user errors are exceptions.
        order: its place in `workbench --help` (ascending).
        on_interrupt: what Ctrl-C leaves behind and how to continue (one sentence).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Any]
    order: int = 100
    on_interrupt: str = "nothing was written; run the command again"


def commands() -> list[Command]:
    """Every registered command, in help order.

    Raises:
        ValueError: an entry is not a `Command`, or two register the same name.
    """
    found: dict[str, Command] = {}
    for ep in entry_points(group=GROUP):
        cmd = ep.load()
        if not isinstance(cmd, Command):
            raise ValueError(f"entry point {ep.name} = {ep.value!r} of {GROUP} is not a "
                             "workbench.cli.registry.Command; point it at one")
        if cmd.name in found:
            raise ValueError(f"two packages register `workbench {cmd.name}`; rename one")
        found[cmd.name] = cmd
    if not found:
        raise ValueError(f"no `workbench` commands are registered ({GROUP} entry points); "
                         "install the project: `pip install -e .` (or `make install`)")
    return sorted(found.values(), key=lambda c: (c.order, c.name))


def build_parser(cmds: Iterable[Command] | None = None) -> argparse.ArgumentParser:
    """The `workbench` parser with a subparser per command (`args.func` runs it)."""
    parser = Parser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd in commands() if cmds is None else cmds:
        p = sub.add_parser(cmd.name, help=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(func=cmd.run, on_interrupt=cmd.on_interrupt)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    raise ValueError(f"`workbench {name}` is not a registered command")


def command_argv(name: str, options: Mapping[str, Any],
                 parser: argparse.ArgumentParser | None = None) -> list[str]:
    """The arguments of `workbench NAME` that set `options` (by destination: `n_seqs`, not
    `--n-seqs`); a true flag is passed bare, a false or None value is left out.

    Raises:
        ValueError: `name` is not a command, or an option is not one of its options.
    """
    sub = _subparser(parser or build_parser(), name)
    by_dest = {a.dest: a for a in sub._actions if a.option_strings}
    argv = [name]
    for dest, value in options.items():
        action = by_dest.get(dest)
        if action is None:
            raise ValueError(f"`workbench {name}` has no option {dest!r}; its options: "
                             f"{sorted(d for d in by_dest if d != 'help')}")
        flag = next((o for o in action.option_strings if o.startswith("--")),
                    action.option_strings[0])
        if value is None or value is False:
            continue
        if value is True and action.nargs == 0:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv
