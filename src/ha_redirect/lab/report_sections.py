"""Markdown pieces that report.md and gaps.md share.

Pure: lists of lines, joined by the caller with newlines.
"""


def table(head, rows):
    """A Markdown table: `head` a list of column titles, `rows` lists of
    cells (strings)."""
    return (['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
            + ['| ' + ' | '.join(cells) + ' |' for cells in rows])


def environment(facts):
    """The machine and versions the measurements ran on, {name: value}."""
    return (['', '## Environment', '', '| | |', '|---|---|']
            + [f'| {name} | {value} |' for name, value in facts.items()])


def failed_runs(title, failures):
    """One bullet per run that failed: `failures` is [(which run, why)];
    no section at all when none did."""
    if not failures:
        return []
    return (['', f'## {title}', '']
            + [f'- {which}: {why}' for which, why in failures])
