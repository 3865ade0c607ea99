"""The jinja2 environment of the report templates (harness/report/templates: report.html, compare.html)."""

from __future__ import annotations

import jinja2


def template_env() -> jinja2.Environment:
    """The jinja2 environment of harness/report/templates (report.html, compare.html)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
