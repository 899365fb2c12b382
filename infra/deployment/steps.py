"""Steps, how the plan shows them, and how `apply` runs them.

A step is one command with a one-line reason. Most steps create something and carry a probe (a
describe or list command): the resource exists when the probe exits 0 and prints something, and then
the step runs its `update` command, or nothing. Commands that are idempotent by nature (`gcloud
functions deploy`, `add-iam-policy-binding`, `services enable`, `url-maps import`, `rsync`) carry no
probe. `${NAME}` in a command is a value an earlier step or probe captured (a project number, a
subscription name); the plan shows it as a shell variable.

Secret values never appear in a command: a step that adds one reads it while applying, from memory
or a file, and passes it on stdin (`--data-file=-`); the plan shows a placeholder in its place.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from deployment.environment import ROOT, Environment

_VAR = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
# A service account is usable in IAM policies up to a minute or so after it is created: a grant to it
# fails meanwhile with one of these errors. A grant is tried again after each delay (75 s in all).
PROPAGATION_DELAYS_S = (5, 10, 20, 40)
_PROPAGATING = re.compile(r"does not exist|not found|NOT_FOUND|INVALID_ARGUMENT|actAs", re.I)
_IAM_BOUND = ("add-iam-policy-binding", "add-invoker-policy-binding")


class DeployError(RuntimeError):
    """A step failed, or cannot run yet (a secret without a value): the message says what to do."""


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str = ""
    stderr: str = ""


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, stdin: bytes | None = None, capture: bool = False) -> Completed: ...


def subprocess_runner(argv: Sequence[str], *, stdin: bytes | None = None, capture: bool = False) -> Completed:
    """Run a command from the repository root; stream its output unless the caller keeps it."""
    pipe = subprocess.PIPE if capture else None
    done = subprocess.run(list(argv), cwd=ROOT, input=stdin, stdout=pipe, stderr=pipe, check=False)
    return Completed(done.returncode, _decode(done.stdout), _decode(done.stderr))


def _decode(output: bytes | None) -> str:
    """What a command printed, as text (None when it was not captured)."""
    return output.decode(errors="replace") if output else ""


@dataclass(frozen=True)
class Probe:
    """Does the resource exist? By default: the command exits 0 and prints something."""

    argv: tuple[str, ...]
    capture: str | None = None  # keep what it printed (an existing resource's id, for the update)
    matches: Callable[[str], bool] | None = None  # a finer test of the output (composite indexes)
    shown_as: str = ""  # how the plan describes a `matches` test, which a shell `if` cannot express
    example: str = "exists"  # what the probe prints when the resource exists (documentation, tests)

    def exists(self, result: Completed) -> bool:
        if result.returncode != 0 or not result.stdout.strip():
            return False
        return self.matches(result.stdout) if self.matches else True


@dataclass
class Context:
    """What `apply` carries from step to step."""

    env: Environment
    runner: Runner
    values: dict[str, str] = field(default_factory=dict)  # ${NAME} -> captured value
    missing_secrets: list[str] = field(default_factory=list)
    sleep: Callable[[float], None] = time.sleep  # between retries (tests pass a recorder)
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class SecretValue:
    """A secret's first value: shown as `placeholder`, produced only while applying."""

    placeholder: str
    produce: Callable[[Context], bytes | None]  # None: not available here
    missing: str = ""  # what the operator does when it is not available (listed at the gate)


@dataclass(frozen=True)
class Step:
    section: str
    why: str
    argv: tuple[str, ...] = ()
    probe: Probe | None = None
    update: tuple[str, ...] | None = None  # runs instead when the probe finds the resource
    capture: str | None = None  # keep stdout as ${capture}
    stdin: SecretValue | None = None
    gate: bool = False  # no command: stop here if a secret still has no value
    group: str = ""  # for --only (e.g. "function:jwks", "lab"); default: the section's name in lower case
    note: str = ""  # an extra comment line (what the operator must know)
    skip: str = ""  # why `apply` leaves this step out (an optional value was not given); the plan still shows it

    @property
    def key(self) -> str:
        return self.group or self.section.lower().replace(" ", "-")


# --- showing the plan ----------------------------------------------------------------------------


def quote(arg: str) -> str:
    """Shell quoting that keeps ${NAME} expandable."""
    if _VAR.search(arg):
        return '"' + re.sub(r'(["\\`])', r"\\\1", arg) + '"'
    if "'" in arg and not re.search(r'["$`\\!]', arg):
        return f'"{arg}"'  # a CSP or a CEL expression reads better than '"'"' escapes
    return shlex.quote(arg)


def command_line(argv: Sequence[str]) -> str:
    return " ".join(quote(a) for a in argv)


def _probe_condition(probe: Probe) -> str:
    return f'[ -z "$({command_line(probe.argv)} 2>/dev/null)" ]'


def _body(step: Step) -> str:
    line = command_line(step.argv)
    if step.stdin:
        line = f"{step.stdin.placeholder} | {line}"
    if step.capture:
        line = f"{step.capture}=$({line})"
    return line


def render_step(step: Step) -> list[str]:
    lines = [f"# {step.why}"]
    if step.note:
        lines += [f"# {part}" for part in step.note.splitlines()]
    if step.skip:
        lines.append(f"# skipped when applying: {step.skip}")
    if step.gate:
        lines.append("# (a check, no command: `make deploy` stops here and lists each secret without a value)")
        return lines
    if step.probe is None:
        return lines + [_body(step)]
    if step.probe.matches:
        lines.append(f"# skipped when {step.probe.shown_as}:")
        lines.append(f"#   {command_line(step.probe.argv)}")
        return lines + [_body(step)]
    if step.probe.capture:
        lines.append(f"{step.probe.capture}=$({command_line(step.probe.argv)} 2>/dev/null || true)")
        condition = f'[ -z "${{{step.probe.capture}}}" ]'
    else:
        condition = _probe_condition(step.probe)
    lines += [f"if {condition}; then", f"  {_body(step)}"]
    if step.update:
        lines += ["else", f"  {command_line(step.update)}"]
    return lines + ["fi"]


def render_plan(steps: Sequence[Step], header: Iterable[str]) -> str:
    out = [f"# {line}" if line else "#" for line in header]
    section = None
    for n, step in enumerate(steps, 1):
        if step.section != section:
            section = step.section
            out += ["", f"## {section}"]
        out.append("")
        rendered = render_step(step)
        rendered[0] = f"# {n}. {rendered[0][2:]}"
        out += rendered
    return "\n".join(out) + "\n"


def render_script(steps: Sequence[Step], header: Iterable[str]) -> str:
    """A bash script of the selected steps (Cloud Build's deploy steps run these). Steps that need
    Python while applying (secret values, finer probes, the secrets gate) are refused."""
    captured: set[str] = set()
    for step in steps:
        if step.stdin or step.gate or step.skip or (step.probe and step.probe.matches):
            raise DeployError(f"not scriptable (run `make deploy`): {step.why}")
        used = {
            v
            for arg in (*step.argv, *(step.probe.argv if step.probe else ()), *(step.update or ()))
            for v in _VAR.findall(arg)
        }
        captured |= {name for name in (step.capture, step.probe.capture if step.probe else None) if name is not None}
        if used - captured:
            raise DeployError(f"{step.why} needs ${{{sorted(used - captured)[0]}}}, which no selected step captures")
    return "#!/usr/bin/env bash\nset -euo pipefail\n" + render_plan(steps, header)


# --- applying ------------------------------------------------------------------------------------


def substitute(argv: Sequence[str], values: dict[str, str]) -> list[str]:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise DeployError(f"${{{name}}} is used before any step captured it")
        return values[name]

    return [_VAR.sub(one, arg) for arg in argv]


def apply(steps: Sequence[Step], ctx: Context, log: Callable[[str], None] = print) -> None:
    """Run the steps in order; stop at the first failure with the step, its reason and its command."""
    for n, step in enumerate(steps, 1):
        log(f"[{n}/{len(steps)}] {step.why}")
        if step.skip:
            log(f"  skipped: {step.skip}")
        elif step.gate:
            _check_secrets(ctx)
        elif not _found_by_probe(n, step, ctx, log):
            _run_step(n, step, ctx, log)


def _check_secrets(ctx: Context) -> None:
    """The gate: stop while any secret still has no value."""
    if ctx.missing_secrets:
        raise DeployError(
            "these secrets have no value yet; add each, then run `make deploy` again:\n"
            + "\n".join(f"  - {line}" for line in ctx.missing_secrets)
        )


def _found_by_probe(n: int, step: Step, ctx: Context, log: Callable[[str], None]) -> bool:
    """Probe for the step's resource; when it exists, run the update (if any) instead. True: the step is done."""
    if step.probe is None:
        return False
    found = ctx.runner(substitute(step.probe.argv, ctx.values), capture=True)
    if not step.probe.exists(found):
        return False
    if step.probe.capture:
        ctx.values[step.probe.capture] = found.stdout.strip().splitlines()[0]
    if step.update is None:
        log("  exists")
    else:
        _run(n, step, substitute(step.update, ctx.values), ctx)
    return True


def _run_step(n: int, step: Step, ctx: Context, log: Callable[[str], None]) -> None:
    """Run the step's own command (with its secret on stdin), keeping what it prints when it captures."""
    stdin = None
    if step.stdin is not None:
        stdin = step.stdin.produce(ctx)
        if stdin is None:
            ctx.missing_secrets.append(step.stdin.missing)
            log("  no value available here: listed at the secrets check")
            return
    result = _run(n, step, substitute(step.argv, ctx.values), ctx, stdin=stdin, capture=bool(step.capture))
    if step.capture:
        value = result.stdout.strip()
        if not value:
            raise DeployError(f"step {n} ({step.why}) printed nothing to keep as ${{{step.capture}}}")
        ctx.values[step.capture] = value.splitlines()[0]


def races_iam(argv: Sequence[str]) -> bool:
    """An IAM grant (quick, idempotent, and often to an account created moments before)."""
    return any(word in argv for word in _IAM_BOUND)


def _run(
    n: int, step: Step, argv: list[str], ctx: Context, *, stdin: bytes | None = None, capture: bool = False
) -> Completed:
    retry = races_iam(argv) and stdin is None
    # a grant's output is kept, to tell propagation from a real failure (it is only the new policy)
    result = ctx.runner(argv, stdin=stdin, capture=capture or retry)
    for delay in PROPAGATION_DELAYS_S if retry else ():
        if result.returncode == 0 or not _PROPAGATING.search(result.stderr):
            break
        ctx.log(
            f"  not yet: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'failed'}; "
            f"again in {delay} s (new service accounts take up to a minute to reach IAM)"
        )
        ctx.sleep(delay)
        result = ctx.runner(argv, stdin=stdin, capture=True)
    if result.returncode != 0:
        detail = f"\n{result.stderr.strip()}" if result.stderr.strip() else ""
        raise DeployError(f"step {n} failed ({step.why})\n$ {command_line(argv)}{detail}")
    return result


def select(steps: Sequence[Step], groups: Sequence[str]) -> list[Step]:
    """The steps of the named groups (`function:NAME`, `functions` for all of them, `lab`, ...)."""
    wanted = set(groups)
    chosen = [s for s in steps if s.key in wanted or ("functions" in wanted and s.key.startswith("function:"))]
    known = {s.key for s in steps} | {"functions"}
    unknown = wanted - known
    if unknown:
        raise DeployError(f"unknown group(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return chosen


def gcloud(project: str | None, *args: str) -> tuple[str, ...]:
    """A gcloud command; every project-scoped one names its project (never the active config's)."""
    return ("gcloud", *args, *((f"--project={project}",) if project else ()))


def relative(path: Path) -> str:
    """Paths in commands are relative to the repository root (where `make` runs them)."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)
