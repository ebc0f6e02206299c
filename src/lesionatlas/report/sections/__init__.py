"""Section builders of the report, one module per part of the paper.

Each module has ``build(run) -> list[Section]``. ``run`` is a finished run (see :class:`RunView`): a
builder asks ``run[stage].status`` / ``.reason`` and ``run.load(stage)`` for the stage's result object,
and shows a ``skipped`` note (``Section.skipped``) when a stage it needs did not run. Builders draw with
:func:`lesionatlas.report.document.new_figure` and write no files.
"""
