"""`builder recipe check` and `builder recipe add-version`: recipes against upstream's releases."""

from __future__ import annotations

import argparse
import sys

from rich.markup import escape
from rich.table import Table

from builder.cli.display import Output
from builder.errors import UsageError
from builder.upkeep.check import ReleaseCheck, RuleCheck
from builder.upkeep.freshness import RecipeCheck, add_version, check_recipe
from builder.workspace import Workspace


def cmd_recipe(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    if args.recipe_command == "check":
        return recipe_check(args, ws, out)
    return recipe_add_version(args, ws, out)


def recipe_check(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    if (args.source or args.pkg_version) and not args.recipe:
        raise UsageError("--source and --version need a recipe name")
    names = [args.recipe] if args.recipe else list(ws.recipes.available())
    checks = [check_recipe(ws, name, version=args.pkg_version, source=args.source, pre=args.pre) for name in names]
    unknown = [f"{c.recipe} {r.version}" for c in checks for r in c.releases]
    errors = [f"{c.recipe}: {c.error}" for c in checks if c.error]

    def render() -> None:
        out.console.print(_table(checks))
        for check in checks:
            for release in check.releases:
                _details(out, check.recipe, release)
        for line in errors:
            out.line(f"error: {line}")
        if unknown:
            out.line(f"releases the recipes do not know: {', '.join(unknown)}")
        elif not errors:
            out.line("every recipe knows its project's newest release")
    out.emit({"recipes": [c.to_json() for c in checks], "unknown_releases": unknown, "errors": errors}, render)
    if errors or (args.fail_on_new and unknown):
        if unknown and out.as_json:
            print(f"releases the recipes do not know: {', '.join(unknown)}", file=sys.stderr)
        return 1
    return 0


def _table(checks: list[RecipeCheck]) -> Table:
    table = Table("recipe", "knows", "new release", "verdict", "build requirements")
    for check in checks:
        if not check.releases:
            why = check.error or check.skipped or f"up to date with {check.project} on the index"
            table.add_row(check.recipe, check.newest_known, "-", escape(why), "")
        for release in check.releases:
            table.add_row(check.recipe, check.newest_known, release.version, escape(release.verdict()),
                          escape(release.requirements.describe() if release.requirements else ""))
    return table


def _rule_line(rule: RuleCheck) -> str:
    state = {True: "applies", False: "does not apply", None: "no patches"}[rule.applies]
    range_text = rule.range or "every version"
    change = f" -> {rule.widened}" if rule.widened else (" (admits it)" if rule.holds else " (left as it is)")
    others = f"; also {rule.other_conditions}" if rule.other_conditions else ""
    return f"{rule.kind} {rule.name}: {state}; {range_text}{change}{others}"


def _details(out: Output, recipe: str, release: ReleaseCheck) -> None:
    """Below the table: the source and its sha256, each rule, the failing hunks."""
    out.line(f"{recipe} {release.version}: {release.verdict()}")
    if release.source is not None:
        sha = release.source.spec.sha256 or "-"
        out.line(f"  source {release.source.path}; its sha256 {sha} is {release.source.sha256_from}")
    for rule in release.rules:
        out.line(f"  {_rule_line(rule)}")
        if rule.widen_error:
            out.line(f"    {rule.widen_error}")
        for dry in rule.dry_runs:
            if dry.applies:
                continue
            if not dry.hunks:
                out.line(f"    {dry.file}: {dry.failure}")
            for hunk in dry.hunks:
                out.line(f"    {hunk.describe()}:")
                out.line("\n".join(f"      {line}" for line in hunk.text.splitlines()))


def recipe_add_version(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    added = add_version(ws, args.recipe, args.version, source=args.source, output=args.output,
                        make_default=args.default)

    def render() -> None:
        check = added.check
        out.line(f"wrote {added.recipe} {added.version} into {added.path}"
                 + (" (now the default version)" if added.default else ""))
        for note in added.notes:
            out.line(f"  {note}")
        if check.carried:
            out.line("  carried from " + check.newest_known + ": "
                     + ", ".join(f"{k} = {v}" for k, v in check.carried.items()))
        if check.requirements is not None:
            out.line(f"  build requirements: {check.requirements.describe()}")
        _details(out, added.recipe, check)
        if check.failing:
            out.line(f"  {len(check.failing)} rule(s) left as they were: write the patch for {added.version} "
                     "and add it to the recipe")
    out.emit(added.to_json(), render)
    return 0
